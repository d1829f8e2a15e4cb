"""The bundled faces and expressions models, run end to end on the repository's own example
photos (examples/, public domain): detect → align → encode → generate → paste back.

These use the trained fp16 weights that ship inside the plugins, so they check what a user
gets: the output has the photo's size, pixels far from the face are byte-identical, and the
face region is changed by an amount the model decides (different targets, different edits).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lordfx_expressions import EXPRESSIONS
from lordfx_expressions import MODEL_DIR as EXPR_MODEL
from lordfx_faces import MODEL_DIR as FACES_MODEL
from lordfx_faces.align import CELEBA_FRAMING, crop_params
from lordfx_shoes import MODEL_DIR as SHOES_MODEL
from PIL import Image
from typer.testing import CliRunner

import lordfx
from lordfx.cli import build_app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ASTRONAUT, HOPPER = EXAMPLES / "astronaut.jpg", EXAMPLES / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    with Image.open(ASTRONAUT) as im:
        return im.convert("RGB")


@pytest.fixture(scope="module")
def hopper() -> Image.Image:
    with Image.open(HOPPER) as im:
        return im.convert("RGB")


def _far_mask(photo: Image.Image, editor, framing) -> np.ndarray:
    """Shape: → (H, W) bool, pixels outside the face crop's square enlarged by 10 %."""
    _, ctx = editor.pre.to_model(photo)
    cx, cy, side = crop_params(ctx.face, framing)
    ys, xs = np.mgrid[0 : photo.height, 0 : photo.width] + 0.5
    return np.maximum(np.abs(xs - cx), np.abs(ys - cy)) > 0.55 * side


def _face_change(before: Image.Image, after: Image.Image, far: np.ndarray) -> float:
    """Mean absolute per-pixel change (0–255) inside the face region."""
    a = np.asarray(before, dtype=np.float32)
    b = np.asarray(after, dtype=np.float32)
    return float(np.abs(a - b)[~far].mean())


@pytest.mark.parametrize(
    "model_dir", [FACES_MODEL, EXPR_MODEL, SHOES_MODEL], ids=["faces", "expressions", "shoes"]
)
def test_shipped_bundle_is_fp16_with_provenance(model_dir):
    info = json.loads((model_dir / "config.json").read_text())
    assert info["dtype"] == "float16"
    assert info["shipped_from"]["files"]  # sha256 of the run's fp32 files
    assert info["training"]["config"]["latent_epochs"] > 0
    size = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    # Keeps each plugin's wheel well under PyPI's default 100 MB file limit (the 128² expressions
    # model is 46 MB: its MODEL_CARD.md).
    assert size < 64 * 2**20


def test_expression_edit_on_a_real_photo(astronaut):
    editor = lordfx.load("expressions")
    assert editor.bundle.class_names == list(EXPRESSIONS)
    far = _far_mask(astronaut, editor, editor.pre.framing)  # the bundle's own (posed, colour)
    outs = {name: editor.set_expression(astronaut, name) for name in ("happy", "surprise")}
    for out in outs.values():
        assert out.size == astronaut.size and out.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(out)[far], np.asarray(astronaut)[far])
        assert _face_change(astronaut, out, far) > 0.5
    # The target's class code decides the edit: two targets give two different faces.
    assert _face_change(outs["happy"], outs["surprise"], far) > 0.5
    same = editor.set_expression(astronaut, "happy", strength=0.0)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(astronaut))


def test_swap_pose_on_real_photos(astronaut, hopper):
    editor = lordfx.load("faces")
    far = _far_mask(astronaut, editor, CELEBA_FRAMING)
    out = editor.swap_pose(astronaut, hopper)
    assert out.size == astronaut.size and out.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out)[far], np.asarray(astronaut)[far])
    assert _face_change(astronaut, out, far) > 2.0
    # The reference's content code decides the result: the other way round differs too.
    back = editor.swap_pose(hopper, astronaut)
    assert back.size == hopper.size


def test_cli_swap_pose_and_expression_write_full_size_outputs(tmp_path, astronaut):
    before = ASTRONAUT.read_bytes()
    runner = CliRunner()
    out1, out2 = tmp_path / "swap.png", tmp_path / "happy.png"
    r1 = runner.invoke(build_app(), ["swap-pose", str(ASTRONAUT), str(HOPPER), "-o", str(out1)])
    assert r1.exit_code == 0, r1.output
    r2 = runner.invoke(
        build_app(), ["expression", str(ASTRONAUT), "--to", "happy", "-o", str(out2)]
    )
    assert r2.exit_code == 0, r2.output
    for path in (out1, out2):
        with Image.open(path) as im:
            assert im.size == astronaut.size
    assert ASTRONAUT.read_bytes() == before


def _hand_drawn_shoe(width: int, height: int, thickness: int) -> np.ndarray:
    """A side view of a low shoe drawn with OpenCV lines, dark on an off-white page."""
    import cv2

    page = np.full((height, width, 3), 240, np.uint8)
    sx, sy = width / 400, height / 260
    outline = np.array(
        [[30, 200], [40, 215], [360, 215], [375, 195], [360, 90], [330, 70], [250, 80],
         [200, 120], [120, 130], [45, 150], [30, 185]],
        np.float64,
    )  # fmt: skip
    pts = (outline * [sx, sy]).round().astype(np.int32)
    cv2.polylines(page, [pts], True, (25, 25, 25), thickness, cv2.LINE_AA)
    cv2.line(page, pts[10], (int(370 * sx), int(182 * sy)), (25, 25, 25), thickness)  # the sole
    return page


def test_shipped_shoes_model_draws_a_hand_drawn_sketch(tmp_path):
    editor = lordfx.load("shoes")
    styles = editor.styles
    assert len(styles) == sum(n.startswith("style-") for n in editor.bundle.class_names)
    sketch = tmp_path / "sketch.png"
    Image.fromarray(_hand_drawn_shoe(500, 300, 6)).save(sketch)
    result = CliRunner().invoke(
        build_app(),
        ["shoes", "from-edges", str(sketch), "--cluster", "0", "-o", str(tmp_path / "s.png")],
    )
    assert result.exit_code == 0, result.output
    shoe = np.asarray(Image.open(tmp_path / "s.png").convert("RGB"), dtype=np.float32)
    assert shoe.shape == (300, 500, 3)  # the input's size
    dark = shoe.mean(2) < 200  # the shoe's pixels (the background is near white)
    assert 0.1 < dark.mean() < 0.9  # neither blank nor filled
    # Cluster 0's mean colour is a dark shoe leather: the drawn shoe is within reach of it.
    want = np.array(styles[0]["mean_rgb"], np.float32)
    assert np.abs(shoe[dark].mean(0) - want).max() < 60
    # Another cluster gives another colour: the class code decides the style.
    light = max(range(len(styles)), key=lambda k: sum(styles[k]["mean_rgb"]))
    other = np.asarray(editor.from_edges(sketch, cluster=light).convert("RGB"), np.float32)
    assert other[dark].mean() > shoe[dark].mean() + 40
