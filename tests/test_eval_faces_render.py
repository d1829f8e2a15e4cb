"""`lordfx eval-faces --render`: swap-pose per render mode on held-out crops, end to end on a
tiny CelebA-layout run (dlib is an optional extra: skipped without it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lordfx.cli import build_app
from lordfx.errors import LordfxError, UsageError

TINY = Path(__file__).with_name("tiny.toml")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    pytest.importorskip("dlib")
    from lordfx_trainer.evaluation.face_metrics import DlibFaces
    from lordfx_trainer.train import resolve_config, start_run

    try:
        DlibFaces()
    except LordfxError as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("faces_render")
    data = root / "data"
    data.mkdir()
    rng, lines = np.random.default_rng(0), []
    for ident in range(6):
        tint = rng.integers(40, 216, size=3)
        for k in range(3):
            image = np.clip(tint + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(data / f"{ident}_{k}.png")
            lines.append(f"{ident}_{k}.png {100 + ident}")
    (data / "identities.txt").write_text("\n".join(lines) + "\n")
    overrides = {
        "dataset": "celeba",
        "image_size": 16,
        "num_heldout_classes": 3,
        "latent_epochs": 1,
        "amortized_epochs": 1,
    }
    start_run(resolve_config(str(TINY), overrides), root / "run", data)
    return root / "run"


def test_renderer_pastes_each_mode_into_the_native_crop(tiny_run):
    from lordfx_faces.paste import CELEBA_ELLIPSE, crop_mask
    from lordfx_trainer.evaluation.face_render import Renderer, load_heldout

    held = load_heldout(tiny_run, None, native=32)
    assert held.native.shape[1:] == (32, 32, 3) and held.small.shape[1:] == (16, 16, 3)
    renderer = Renderer(held)
    grid = np.arange(32, dtype=np.float32)
    outside = crop_mask(grid[None, :], grid[:, None], 32, 0.25, CELEBA_ELLIPSE) == 0
    for mode in ("warp", "generate"):
        out = renderer.swap(0, 4, mode)
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8
        np.testing.assert_array_equal(out[outside], held.native[0][outside])
    # warp from a crop to itself: r = g, the crop comes back unchanged
    np.testing.assert_array_equal(renderer.swap(0, 0, "warp"), held.native[0])


@pytest.mark.slow  # dlib on ~40 images twice, a tiny training run shared with the others
def test_eval_faces_render_writes_both_modes(tiny_run, tmp_path):
    out = tmp_path / "report"
    args = ["eval-faces", str(tiny_run), "--render", "warp,generate", "--pairs", "4"]
    args += ["--no-lpips", "--out", str(out)]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    assert "| warp |" in result.stdout and "| generate |" in result.stdout
    data = json.loads((out / "eval_faces_render.json").read_text())
    assert data["command"][:4] == ["lordfx", "eval-faces", str(tiny_run), "--render"]
    assert data["heldout"]["num_classes"] == 3 and data["reference"]["num_pairs"] == 4
    assert set(data["modes"]) == {"warp", "generate"}
    for m in data["modes"].values():
        assert m["identity_output_vs_face"]["distance"]["n"] == 4
        assert {"share", "count", "n"} <= set(m["identity_output_vs_ref"]["same_person"])
        assert m["pose_output_vs_ref"]["n"] == 4 and m["seconds_per_edit"] > 0
        assert m["sharpness_output_over_face"]["mean"] > 0
        assert m["protocol"]["num"] == 9 and "lpips_alex_output_vs_b" not in m["protocol"]


@pytest.mark.slow
def test_eval_faces_render_on_a_bundle_and_its_errors(tiny_run, tmp_path):
    from lordfx_trainer.evaluation.face_render import RenderEvalSettings, evaluate_render_modes

    settings = RenderEvalSettings(modes=("warp",), pairs=2, lpips=False, native=32)
    data = Path(json.loads((tiny_run / "config.json").read_text())["run"]["data_path"])
    result = evaluate_render_modes(tiny_run / "bundle", data, settings, out_dir=tmp_path)
    assert list(result["modes"]) == ["warp"] and result["source"]["native"] == 32
    with pytest.raises(UsageError, match="--out"):
        evaluate_render_modes(tiny_run / "bundle", data, settings)
    with pytest.raises(UsageError, match="valid: warp, generate"):
        RenderEvalSettings(modes=("paint",))
