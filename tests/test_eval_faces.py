"""`lordfx eval-faces`: landmark/descriptor metric helpers on known answers, pair sampling,
nearest-landmark matching, and the command end to end on a tiny CelebA-layout run (dlib is
an optional extra: the tests that need it are skipped without it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lordfx_trainer.evaluation.face_metrics import (
    FaceBox,
    interocular,
    landmark_distance,
    nearest_by_landmarks,
    other_of_same_class,
    sample_face_pairs,
    share_under,
    stats,
)
from PIL import Image
from typer.testing import CliRunner

from lordfx.cli import build_app
from lordfx.errors import LordfxError

TINY = Path(__file__).with_name("tiny.toml")


def _landmarks(seed: int = 0, eye_gap: float = 10.0) -> np.ndarray:
    """68 random points with the outer eye corners (36, 45) ``eye_gap`` apart."""
    lm = np.random.default_rng(seed).uniform(0, 50, size=(68, 2))
    lm[36], lm[45] = [20.0, 20.0], [20.0 + eye_gap, 20.0]
    return lm


# -- metric helpers ----------------------------------------------------------------------------
def test_landmark_distance_is_zero_for_identical_and_shift_over_interocular():
    ref = _landmarks()
    assert interocular(ref) == pytest.approx(10.0)
    assert landmark_distance(ref, ref) == 0.0
    assert landmark_distance(ref + [3.0, 4.0], ref) == pytest.approx(5.0 / 10.0)
    # normalised by the *reference's* inter-ocular distance, and scale-free
    assert landmark_distance(ref * 3 + [9.0, 12.0], ref * 3) == pytest.approx(0.5)
    batch = np.stack([ref, ref + [0.0, 2.0]])
    assert np.allclose(landmark_distance(batch, ref[None]), [0.0, 0.2])


def test_share_under_threshold_counts_strictly_below_and_drops_nan():
    share = share_under(np.array([0.1, 0.59, 0.6, 0.7, np.nan]), 0.6)
    assert share == {"share": 0.5, "count": 2, "n": 4}
    assert share_under(np.array([]))["share"] is None
    assert stats(np.array([1.0, 3.0, np.nan])) == {"mean": 2.0, "std": 1.0, "n": 2}
    assert stats(np.array([]))["n"] == 0


def test_nearest_landmarks_picks_the_closest_allowed_image():
    base = _landmarks(1)
    pool = np.stack([base + [8.0, 0.0], base + [1.0, 0.0], base + [0.2, 0.0], base + [4.0, 0.0]])
    allowed = np.array([[True, True, False, True], [False, False, False, False]])
    index, nme = nearest_by_landmarks(np.stack([base, base]), pool, allowed)
    assert index[0] == 1 and nme[0] == pytest.approx(0.1)  # 2 is nearer but not allowed
    assert index[1] == -1 and np.isnan(nme[1])


def test_pairs_are_seeded_and_of_different_identities():
    ids = np.repeat(np.arange(5), [1, 3, 2, 4, 2])
    face, ref = sample_face_pairs(ids, 200, seed=3)
    again, _ = sample_face_pairs(ids, 200, seed=3)
    assert len(face) == 200 and np.array_equal(face, again)
    assert np.all(ids[face] != ids[ref])
    other = other_of_same_class(ids, face, seed=0)
    alone = ids[face] == 0  # identity 0 has one image: no other image of the person
    assert np.all(other[alone] == -1)
    assert np.all(ids[other[~alone]] == ids[face[~alone]]) and np.all(other[~alone] != face[~alone])
    with pytest.raises(LordfxError, match="two identities"):
        sample_face_pairs(np.zeros(4, np.int64), 3, seed=0)


def test_face_box_pixels():
    assert FaceBox(0.5, 0.5, 0.4).pixels(150) == (45, 45, 105, 105)


def test_lordfx_and_eval_faces_modules_do_not_import_dlib():
    code = (
        "import sys, lordfx.api, lordfx_trainer.cli.plugin, lordfx_trainer.evaluation.faces; "
        "assert 'dlib' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- dlib --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dlib_faces():
    pytest.importorskip("dlib")
    from lordfx_trainer.evaluation.face_metrics import DlibFaces

    try:
        return DlibFaces()
    except LordfxError as exc:
        pytest.skip(str(exc))


def test_dlib_landmarks_and_descriptors_on_the_fixed_box(dlib_faces):
    images = np.random.default_rng(0).integers(0, 256, size=(2, 16, 16, 3), dtype=np.uint8)
    images[1] = images[0]
    lm, desc = dlib_faces.analyse(images)
    assert lm.shape == (2, 68, 2) and desc.shape == (2, 128)
    assert np.allclose(lm[0], lm[1]) and np.allclose(desc[0], desc[1])
    assert np.all((lm > -0.5) & (lm < 1.5))  # in units of the image side
    only, none = dlib_faces.analyse(images[:1], descriptors=False)
    assert only.shape == (1, 68, 2) and none is None
    from lordfx_trainer.evaluation.face_metrics import DlibFaces

    landmarks_only = DlibFaces(descriptors=False)  # no descriptor network loaded
    assert landmarks_only.encoder is None
    assert np.allclose(landmarks_only.analyse(images[:1], descriptors=False)[0], only)
    with pytest.raises(ValueError, match="descriptors=False"):
        landmarks_only.analyse(images[:1])


# -- the command on a tiny CelebA-layout run -----------------------------------------------------
def _tiny_celeba(root: Path, num_ids: int = 7, per_id: int = 3) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for ident in range(num_ids):
        tint = rng.integers(40, 216, size=3)
        for k in range(per_id):
            image = np.clip(tint + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
            name = f"{ident:03d}_{k}.png"
            Image.fromarray(image).save(root / name)
            lines.append(f"{name} {100 + ident}")
    (root / "identities.txt").write_text("\n".join(lines) + "\n")
    (root / "skip.txt").write_text("006_2.png\n")
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, dlib_faces) -> Path:
    from lordfx_trainer.train import resolve_config, start_run

    root = tmp_path_factory.mktemp("faces")
    data = root / "data"
    data.mkdir()
    _tiny_celeba(data)
    overrides = {
        "dataset": "celeba",
        "image_size": 16,  # LPIPS (alex needs >= 32 px) is checked on its own below
        "num_heldout_classes": 4,
        "data_exclude": "skip.txt",
        "latent_epochs": 1,
        "amortized_epochs": 1,
    }
    start_run(resolve_config(str(TINY), overrides), root / "run", data)
    return root / "run"


def test_eval_faces_writes_json_with_all_keys(tiny_run, monkeypatch, tmp_path):
    from dataclasses import replace

    from lordfx_trainer.evaluation import faces
    from lordfx_trainer.evaluation.leakage import probe

    def quick_probe(codes, labels, method, settings):  # 300 MLP steps are slow on a busy CPU
        return probe(codes, labels, method, replace(settings, mlp_steps=30))

    monkeypatch.setattr(faces, "probe", quick_probe)
    app = build_app()
    out = tmp_path / "report"
    args = ["eval-faces", str(tiny_run), "--pairs", "5", "--seed", "1", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not (tiny_run / "eval_faces.json").exists()  # --out: the run directory is only read
    assert "### eval-faces" in result.stdout and "| pose NME output↔REF |" in result.stdout
    data = json.loads((out / "eval_faces.json").read_text())
    keys = {"format", "command", "settings", "bundle", "face_models", "face_box", "heldout"}
    keys |= {"leakage", "reconstruction", "identity", "pose", "protocol", "figures"}
    assert keys <= set(data) and data["command"][-2:] == ["--out", str(out)]
    assert data["run"] == str(tiny_run) and data["command"][1] == "eval-faces"
    names = data["heldout"]["class_names"]
    num_images = 12 - ("106" in names)  # 106 lost one image to the exclude list
    assert len(names) == 4 and data["heldout"]["num_images"] == num_images
    assert data["bundle"]["files_sha256"]["model.safetensors"]
    assert "68" in data["face_models"]["landmarks"] and "fixed" in data["face_box"]["note"]
    probes = data["leakage"]["class_from_content"]
    assert {"accuracy", "chance"} <= set(probes["mlp"]) and set(probes) == {"logistic", "mlp"}
    identity = data["identity"]
    assert identity["num_pairs"] == 5 and identity["output_vs_face"]["distance"]["n"] == 5
    for key in ("output_vs_ref", "reference_face_vs_ref", "reference_face_vs_face_other"):
        assert {"distance", "same_person"} <= set(identity[key])
    assert identity["reference_face_vs_ref"]["distance"]["mean"] > 0
    assert set(data["pose"]) >= {"output_vs_ref", "face_vs_ref", "output_vs_face"}
    protocol = data["protocol"]
    assert protocol["num"] == num_images  # every held-out identity has >= 2 images here
    assert protocol["output_vs_b"]["l1"]["n"] == num_images and "baseline_a_vs_b" in protocol
    assert "lpips_alex" not in data["reconstruction"]  # 16 px: too small for AlexNet
    figures = set(data["figures"])
    assert figures == {"swap_grid", "identity_pairs", "protocol_examples", "landmarks"}
    for path in data["figures"].values():
        assert (out / path).stat().st_size > 0


def test_image_scores_lpips_and_l1():
    import torch
    from lordfx_trainer import weights
    from lordfx_trainer.evaluation.faces import _image_scores
    from lordfx_trainer.lpips_metric import make_lpips

    try:
        weights.provision("alexnet", download=False)
    except LordfxError as exc:
        pytest.skip(f"alexnet weights not provisioned (run `lordfx weights`): {exc}")
    torch.manual_seed(0)
    a = torch.rand(3, 3, 32, 32)
    same = _image_scores(a, a, make_lpips("alex"), batch_size=2)
    assert same["l1"] == {"mean": 0.0, "std": 0.0, "n": 3}
    assert same["lpips_alex"]["n"] == 3 and abs(same["lpips_alex"]["mean"]) < 1e-6
    other = _image_scores(torch.rand(3, 3, 32, 32), a, None, batch_size=2)
    assert "lpips_alex" not in other and other["l1"]["mean"] > 0.2


def test_eval_faces_errors_are_one_line(tmp_path, dlib_faces):
    app = build_app()
    result = CliRunner().invoke(app, ["eval-faces", str(tmp_path)])
    assert result.exit_code == 1 and "not a lordfx run directory" in result.stderr
    bad = CliRunner().invoke(app, ["eval-faces", str(tmp_path), "--pairs", "0"])
    assert bad.exit_code == 2 and "--pairs" in bad.stderr
