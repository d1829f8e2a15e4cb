"""Expressions preprocessing and editing on a real photo with a tiny random-weight bundle.

The photo is matplotlib's bundled ``grace_hopper.jpg`` (a public-domain US Navy portrait;
skipped when matplotlib is absent); nothing is read from ../shared. Random weights make the
edits meaningless pictures, but every geometric and colour contract is checkable.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lordfx_expressions import EXPRESSIONS
from lordfx_expressions.preprocess import (
    FER_FRAMING,
    ExpressionPreprocessor,
    add_luma_change,
    make_preprocessor,
)
from lordfx_faces.align import crop_params
from lordfx_faces.preprocess import FacePreprocessor, NoFaceError
from PIL import Image
from typer.testing import CliRunner

import lordfx
from lordfx.bundle import save_bundle
from lordfx.cli import build_app
from lordfx.errors import UsageError
from lordfx.host import get_host
from lordfx.nets import AmortizedModel, ModelConfig

SIZE = 32  # the CPU bundle's size; the Domain's default is 48, the bundle must win


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """288 × 338 RGB, one frontal face (smaller than the original: faster detection)."""
    cbook = pytest.importorskip("matplotlib.cbook")
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return im.convert("RGB").resize((288, 338), Image.Resampling.LANCZOS)


@pytest.fixture(scope="module")
def photo_path(photo, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "hopper.jpg"
    photo.save(path, quality=95)
    return path


def _tiny_bundle(path: Path, size: int, channels: int, class_names: tuple[str, ...]) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=size, channels=channels, content_dim=8, class_dim=8, width=0.125)
    codes = 3 * torch.randn(len(class_names), cfg.class_dim)  # far from the encoder's codes
    info = {"domain": "test", "class_names": list(class_names)}
    return save_bundle(path, AmortizedModel(cfg), info, codes)


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> Path:
    return _tiny_bundle(tmp_path_factory.mktemp("expr") / "bundle", SIZE, 1, EXPRESSIONS)


@pytest.fixture
def editor(bundle_dir, monkeypatch):
    """``lordfx.load("expressions")`` with the tiny bundle in place of the shipped one."""
    _use_bundle(monkeypatch, "expressions", bundle_dir)
    return lordfx.load("expressions")


def _use_bundle(monkeypatch, domain: str, bundle: Path) -> None:
    host = get_host()
    monkeypatch.setitem(
        host.domains, domain, dataclasses.replace(host.domains[domain], bundle=bundle)
    )


def _far_from_face(photo: Image.Image, editor) -> np.ndarray:
    """Shape: → (H, W) bool, pixels outside the crop square enlarged by 10 %."""
    _, ctx = editor.pre.to_model(photo)
    cx, cy, side = crop_params(ctx.face, FER_FRAMING)
    ys, xs = np.mgrid[0 : photo.height, 0 : photo.width] + 0.5
    return np.maximum(np.abs(xs - cx), np.abs(ys - cy)) > 0.55 * side


def _ycbcr(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("YCbCr"), dtype=np.int16)


def test_editor_uses_the_bundle_size_and_grey_input(editor, photo):
    assert isinstance(editor.pre, ExpressionPreprocessor) and editor.pre.image_size == SIZE
    x, ctx = editor.pre.to_model(photo)
    assert x.shape == (1, SIZE, SIZE) and x.dtype == torch.float32 and 0 <= x.min() < x.max() <= 1
    assert ctx.crop.shape == (SIZE, SIZE, 3) and ctx.num_faces == 1
    # The FER framing makes the crop (almost) the Haar box itself (turned by the roll, if any):
    # the box centre lands on the crop centre and its width on the crop's side.
    f = ctx.face
    centre = ctx.M[:, :2] @ np.array([f.x + f.w / 2, f.y + f.h / 2]) + ctx.M[:, 2]
    np.testing.assert_allclose(centre, [SIZE / 2, SIZE / 2], atol=0.02 * SIZE + 0.5)
    scale = np.sqrt(abs(np.linalg.det(ctx.M[:, :2])))
    assert scale * f.w == pytest.approx(SIZE, abs=0.02 * SIZE + 0.5)


def test_tight_crops_are_detected_with_a_margin(photo):
    """A FER-like 48² crop of the face: too tight for plain Haar detection; found through
    the upscaled, padded search with (about) the whole crop as its box."""
    pre = make_preprocessor(SIZE)
    cx, cy, side = crop_params(pre.detect(photo)[0], FER_FRAMING)
    square = (
        round(cx - side / 2),
        round(cy - side / 2),
        round(cx + side / 2),
        round(cy + side / 2),
    )
    tight = photo.crop(square).resize((48, 48), Image.Resampling.LANCZOS)
    assert FacePreprocessor(SIZE).detect(tight) == []
    face = pre.detect(tight)[0]
    assert 0.85 <= 48 / face.w <= 1.15  # measured 1.0
    x, ctx = pre.to_model(tight)
    assert pre.from_model(x, ctx, tight).size == (48, 48)


def test_colour_edit_changes_only_the_face_luma(editor, photo):
    # render="generate" pastes the grey model's luma (render="warp" moves the photo's own
    # colour pixels, so chroma moves with them; tests/test_render.py).
    out = editor.set_expression(photo, "happy", render="generate")
    assert out.size == photo.size and out.mode == "RGB"
    before, after = np.asarray(photo), np.asarray(out)
    far = _far_from_face(photo, editor)
    np.testing.assert_array_equal(after[far], before[far])
    changed = (after != before).any(-1)
    assert changed[~far].mean() > 0.3  # the face region was edited
    y0, y1 = _ycbcr(photo), _ycbcr(out)
    assert np.abs(y1[..., 0] - y0[..., 0])[changed].mean() > 3
    # Chroma kept inside the face too: only YCbCr rounding (±1) differs where nothing clipped.
    clipped = ((after == 0) | (after == 255)).any(-1)
    dc = np.abs(y1[..., 1:] - y0[..., 1:])[changed & ~clipped]
    assert dc.mean() < 0.6 and np.percentile(dc, 99) <= 2


def test_grey_photos_stay_grey(editor, photo, tmp_path):
    grey = photo.convert("L")
    out = editor.set_expression(grey, "sad")
    assert out.mode == "L" and out.size == grey.size
    assert not np.array_equal(np.asarray(out), np.asarray(grey))
    path = tmp_path / "grey.png"
    grey.save(path)
    rgb = np.asarray(editor.set_expression(path, "sad"))  # files are read as RGB
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    np.testing.assert_array_equal(rgb[..., 0], np.asarray(out))


def test_luma_change_keeps_unchanged_pixels_byte_identical():
    rgb = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    luma = np.full((4, 5), 100, np.uint8)
    new = luma.copy()
    new[1, 2] = 110
    out = add_luma_change(rgb, luma, new)
    expected = rgb.copy()
    expected[1, 2] = np.clip(rgb[1, 2].astype(int) + 10, 0, 255)
    np.testing.assert_array_equal(out, expected)


def test_strength_zero_is_the_reconstruction(editor, photo):
    # Residual edit (default): strength 0 adds a zero change, so the photo comes back as is.
    zero = np.asarray(editor.set_expression(photo, "fear", strength=0.0), dtype=np.int16)
    np.testing.assert_array_equal(zero, np.asarray(photo))
    full = np.asarray(editor.set_expression(photo, "fear", strength=1.0), dtype=np.int16)
    assert np.abs(full - zero).mean() > 0.5
    # --replace: the generated face itself is pasted; strength 0 = the model's reconstruction.
    x, ctx = editor.pre.to_model(photo)
    with torch.no_grad():
        recon = editor.pre.from_model(editor.model(x[None])[0], ctx, photo)
    replaced = editor.set_expression(photo, "fear", strength=0.0, residual=False)
    assert np.abs(np.asarray(replaced, dtype=np.int16) - np.asarray(recon)).max() <= 1


def test_residual_edit_adds_the_model_change_at_full_resolution(editor, photo):
    # An upright crop (the Haar eye line reads this face's roll below 2°: no rotation), so the
    # model's pixel grid and the photo's stay parallel for the comparison below.
    pre = editor.pre.with_align("haar")
    x, ctx = pre.to_model(photo)
    assert ctx.face.roll_degrees == 0.0
    with torch.no_grad():
        own = editor.model.encode_class(x[None])
        content = editor.model.encode_content(x[None])
        base = editor.model.decode(content, own)[0]
        target = editor.model.decode(content, editor.class_code("happy")[None])[0]
    out = np.asarray(pre.from_model_delta(target, base, ctx, photo), dtype=np.int16)
    luma_change = _ycbcr(Image.fromarray(out.astype(np.uint8)))[..., 0] - _ycbcr(photo)[..., 0]
    # The face centre moves by the model's mean change there (up to resampling/rounding).
    mid = pre.image_size // 2
    expected = float((target - base)[0, mid - 2 : mid + 2, mid - 2 : mid + 2].mean()) * 255
    fx, fy, fw, fh = ctx.face.x, ctx.face.y, ctx.face.w, ctx.face.h
    centre = luma_change[fy + fh // 2 - 3 : fy + fh // 2 + 3, fx + fw // 2 - 3 : fx + fw // 2 + 3]
    assert abs(float(centre.mean()) - expected) < 3 + 0.2 * abs(expected)


def test_unknown_expression_lists_the_valid_names(editor, photo):
    with pytest.raises(UsageError, match="unknown expression 'grumpy'; valid: angry, disgust,"):
        editor.set_expression(photo, "grumpy")


def test_no_face_in_a_pil_image(editor):
    blank = Image.new("RGB", (120, 90), (128, 128, 128))
    with pytest.raises(NoFaceError, match="^image: no face found"):
        editor.set_expression(blank, "happy")


def test_swap_pose_on_faces_with_pil_images(photo, tmp_path, monkeypatch):
    _use_bundle(monkeypatch, "faces", _tiny_bundle(tmp_path / "faces", 16, 3, ("a", "b")))
    ref = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    editor = lordfx.load("faces")
    before = np.asarray(photo)
    # A random 16² model barely moves its output, so the warp may leave the photo as is;
    # generate pastes its pixels. Both keep the size and the pixels away from the face.
    for render in ("warp", "generate"):
        out = editor.swap_pose(photo, ref, render=render)
        assert out.size == photo.size and out.mode == "RGB"
        after = np.asarray(out)
        np.testing.assert_array_equal(after[:, :50], before[:, :50])  # left of the face mask
    assert (after != before).any()


# -- CLI ---------------------------------------------------------------------------------------
runner = CliRunner()


def test_cli_list_names_and_faces(photo_path):
    result = runner.invoke(build_app(), ["expression", "--list"])
    assert result.exit_code == 0 and result.stdout.split() == list(EXPRESSIONS)
    result = runner.invoke(build_app(), ["expression", str(photo_path), "--list-faces"])
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 1 and rows[0]["index"] == 0 and rows[0]["default"]


def test_cli_edits_a_photo_and_names_a_file_without_a_face(
    bundle_dir, photo_path, tmp_path, monkeypatch
):
    _use_bundle(monkeypatch, "expressions", bundle_dir)
    app = build_app()
    out = tmp_path / "happy.png"
    result = runner.invoke(app, ["expression", str(photo_path), "--to", "happy", "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    assert Image.open(out).size == (288, 338)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (120, 90), (128, 128, 128)).save(blank)
    result = runner.invoke(app, ["expression", str(blank), "--to", "happy", "-o", str(out)])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"lordfx: error: {blank}: no face found")
    assert len(result.stderr.strip().splitlines()) == 1
