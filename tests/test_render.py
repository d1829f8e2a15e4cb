"""lordfx.render: the edit r → g rendered on a full-resolution crop (motion + residual)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from lordfx.errors import UsageError
from lordfx.render import (
    RenderSettings,
    check_render,
    estimate_motion,
    render_photo,
    render_warp,
    resize_flow,
    warp,
)

S, N = 64, 256  # model side, full-resolution crop side (4×)


def _pattern(n: int, shift: float = 0.0) -> np.ndarray:
    """Shape: → (n, n, 3) float in [0, 1], a smooth texture moved right by ``shift`` px."""
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32) / n
    xs = xs - shift / n
    v = 0.5 + 0.2 * np.sin(2 * np.pi * 3 * xs) * np.cos(2 * np.pi * 2 * ys)
    v += 0.2 * np.cos(2 * np.pi * 5 * xs + 1) * np.sin(2 * np.pi * 4 * ys + 0.5)
    return np.repeat(v[:, :, None], 3, axis=2)


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """A detailed full-resolution crop (blurred noise: every pixel differs)."""
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur((rng.random((N, N, 3)) * 255).astype(np.uint8), (0, 0), 1.5)


def test_zero_flow_returns_the_input_exactly(crop):
    flow = np.zeros((N, N, 2), np.float32)
    np.testing.assert_array_equal(warp(crop, flow), crop)
    as_float = crop.astype(np.float32)
    np.testing.assert_array_equal(warp(as_float, flow), as_float)


def test_identical_recon_and_edit_leave_the_crop_unchanged(crop):
    r = _pattern(S)
    assert not estimate_motion(r, r).any()
    np.testing.assert_array_equal(render_warp(crop, r, r.copy()), crop)


def test_strength_zero_is_the_crop_byte_for_byte(crop):
    out = render_warp(crop, _pattern(S), _pattern(S, 3.0), strength=0.0)
    np.testing.assert_array_equal(out, crop)
    assert out is not crop


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_a_translation_moves_the_full_resolution_crop_by_the_scaled_amount(crop, strength):
    # g is r moved 3 model px right; on a 4× crop that is 12 px, scaled by strength.
    out = render_warp(crop, _pattern(S), _pattern(S, 3.0), strength=strength)
    a = crop[64:192, 64:192, 0].astype(np.float32)
    b = out[64:192, 64:192, 0].astype(np.float32)
    (dx, dy), response = cv2.phaseCorrelate(a, b)
    assert abs(dx - 12.0 * strength) < 0.5 and abs(dy) < 0.5
    assert response > 0.8  # moved, not repainted: the crop's own detail is still there


def test_motion_is_confined_to_the_mask(crop):
    mask = np.zeros((S, S), np.float32)
    mask[16:48, 16:48] = 1.0
    out = render_warp(crop, _pattern(S), _pattern(S, 3.0), mask=mask)
    outside = np.ones((N, N), bool)
    outside[56:200, 56:200] = False  # the mask's footprint (4×) plus bilinear spread
    np.testing.assert_array_equal(out[outside], crop[outside])
    assert np.abs(out[80:176, 80:176].astype(int) - crop[80:176, 80:176]).mean() > 5


def test_residual_is_only_low_frequency():
    # A flat reconstruction (nothing to track) and an edit that adds a smooth brightening
    # plus a model-pixel checkerboard: only the smooth part reaches the photo.
    r = np.full((S, S, 3), 0.5, np.float32)
    checker = (np.indices((S, S)).sum(0) % 2).astype(np.float32)[:, :, None] * 2 - 1
    g = r + 0.1 + 0.1 * checker
    flat = np.full((N, N, 3), 100, np.uint8)
    out = render_warp(flat, r, g).astype(np.float32)
    centre = out[32:-32, 32:-32]
    assert abs(centre.mean() - (100 + 0.1 * 255)) < 1.0  # the low frequency, all of it
    assert centre.std() < 0.1 * 0.1 * 255  # < 10 % of the checkerboard's amplitude


def test_grey_model_residual_keeps_an_rgb_crops_chroma():
    r = np.full((S, S, 1), 0.5, np.float32)
    crop = np.zeros((N, N, 3), np.uint8)
    crop[..., 0], crop[..., 1], crop[..., 2] = 60, 120, 180
    out = render_warp(crop, r, r + 0.1).astype(int)
    diff = out - crop
    assert diff[N // 2, N // 2, 0] > 20
    np.testing.assert_array_equal(diff[..., 0], diff[..., 1])
    np.testing.assert_array_equal(diff[..., 1], diff[..., 2])


def test_resize_flow_scales_the_vectors():
    flow = np.full((16, 16, 2), 1.0, np.float32)
    up = resize_flow(flow, (64, 32))
    assert up.shape == (32, 64, 2)
    np.testing.assert_allclose(up[..., 0], 4.0)
    np.testing.assert_allclose(up[..., 1], 2.0)


def test_bad_arguments_are_named():
    with pytest.raises(UsageError, match="valid: warp, generate"):
        check_render("paint")
    with pytest.raises(UsageError, match="strength"):
        render_warp(np.zeros((8, 8, 3), np.uint8), _pattern(S), _pattern(S), strength=1.5)
    with pytest.raises(ValueError, match="uint8"):
        render_warp(np.zeros((8, 8, 3), np.float32), _pattern(S), _pattern(S))
    with pytest.raises(ValueError, match="flow_size"):
        RenderSettings(flow_size=4)


def test_render_photo_without_photo_crop_methods_uses_the_centre_square():
    # A third-party preprocessor with only to_model/from_model: the photo's centre square
    # at full resolution comes back, moved by the model's motion.
    rng = np.random.default_rng(1)
    arr = cv2.GaussianBlur((rng.random((N, N + 40, 3)) * 255).astype(np.uint8), (0, 0), 1.5)
    photo = Image.fromarray(arr)
    r = torch.from_numpy(_pattern(S).transpose(2, 0, 1).copy())
    g = torch.from_numpy(_pattern(S, 3.0).transpose(2, 0, 1).copy())
    out = render_photo(object(), None, photo, r, g)
    assert out.size == (N, N)
    square = arr[:, 20 : 20 + N]
    (dx, _), _ = cv2.phaseCorrelate(
        square[64:192, 64:192, 0].astype(np.float32),
        np.asarray(out)[64:192, 64:192, 0].astype(np.float32),
    )
    assert abs(dx - 12.0) < 0.5


# -- the whole path with the shipped faces model on the example photos (public domain) --------
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def example_photos() -> tuple[Image.Image, Image.Image]:
    with (
        Image.open(EXAMPLES / "astronaut.jpg") as a,
        Image.open(EXAMPLES / "grace_hopper.jpg") as h,
    ):
        return a.convert("RGB"), h.convert("RGB")


def _laplacian_variance(image: Image.Image, box: tuple[int, int, int, int]) -> float:
    """High-frequency energy: variance of the Laplacian of the luma inside ``box``."""
    x, y, w, h = box
    grey = np.asarray(image.convert("L"), dtype=np.float64)[y : y + h, x : x + w]
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def test_swap_pose_warp_is_sharp_and_keeps_the_photo_elsewhere(example_photos):
    from lordfx_faces.align import crop_params

    import lordfx

    astronaut, hopper = example_photos
    editor = lordfx.load("faces")
    _, ctx = editor.pre.to_model(astronaut)
    cx, cy, side = crop_params(ctx.face)
    ys, xs = np.mgrid[0 : astronaut.height, 0 : astronaut.width] + 0.5
    far = np.maximum(np.abs(xs - cx), np.abs(ys - cy)) > 0.55 * side
    before = np.asarray(astronaut)
    outs = {m: editor.swap_pose(astronaut, hopper, render=m) for m in ("warp", "generate")}
    box = (ctx.face.x, ctx.face.y, ctx.face.w, ctx.face.h)
    for out in outs.values():
        after = np.asarray(out)
        assert out.size == astronaut.size and out.mode == "RGB"
        np.testing.assert_array_equal(after[far], before[far])
        assert np.abs(after.astype(int) - before)[~far].mean() > 0.5  # the face changed
    sharp = {m: _laplacian_variance(out, box) for m, out in outs.items()}
    # Warp moves the photo's own face (its detail stays); generate pastes a 48² face.
    assert sharp["warp"] > 4 * sharp["generate"]
    assert sharp["warp"] > 0.6 * _laplacian_variance(astronaut, box)  # measured 0.79
    assert editor.swap_pose(astronaut, hopper) == outs["warp"]  # the default


def test_cli_render_option(tmp_path):
    from typer.testing import CliRunner

    from lordfx.cli import build_app

    runner = CliRunner()
    face, ref = EXAMPLES / "astronaut.jpg", EXAMPLES / "grace_hopper.jpg"
    bad = runner.invoke(build_app(), ["swap-pose", str(face), str(ref), "--render", "paint"])
    assert bad.exit_code != 0 and "valid: warp, generate" in bad.output
    out = tmp_path / "gen.png"
    args = ["swap-pose", str(face), str(ref), "--render", "generate", "-o", str(out)]
    ok = runner.invoke(build_app(), args)
    assert ok.exit_code == 0, ok.output
    assert Image.open(out).size == Image.open(face).size
    bad = runner.invoke(build_app(), ["expression", str(face), "--to", "happy", "--render", "x"])
    assert bad.exit_code != 0 and "valid: warp, generate" in bad.output


def test_colour_model_on_a_grey_crop_adds_the_residuals_luma():
    r = np.full((S, S, 3), 0.5, np.float32)
    g = r + np.array([0.2, 0.0, 0.0], np.float32)  # redder: luma + 0.299 · 0.2
    crop = np.full((N, N, 1), 100, np.uint8)
    out = render_warp(crop, r, g)
    assert out.shape == (N, N, 1)
    assert abs(int(out[N // 2, N // 2, 0]) - round(100 + 0.299 * 0.2 * 255)) <= 1


class _Square:
    """A preprocessor whose photo crop is the photo itself (photo_crop protocol)."""

    def photo_crop(self, context, photo):  # noqa: ANN001, ANN201
        return np.asarray(photo), "handle"

    def render_mask(self):  # noqa: ANN201
        return None

    def paste_photo_crop(self, edited, crop, handle, photo):  # noqa: ANN001, ANN201
        assert handle == "handle" and crop.shape == edited.shape
        return Image.fromarray(edited)


def test_render_photo_uses_the_preprocessors_photo_crop(crop):
    r = torch.from_numpy(_pattern(S).transpose(2, 0, 1).copy())
    g = torch.from_numpy(_pattern(S, 3.0).transpose(2, 0, 1).copy())
    out = render_photo(_Square(), None, Image.fromarray(crop), r, g, strength=0.5)
    (dx, _), _ = cv2.phaseCorrelate(
        crop[64:192, 64:192, 0].astype(np.float32),
        np.asarray(out)[64:192, 64:192, 0].astype(np.float32),
    )
    assert abs(dx - 6.0) < 0.5


def test_swap_pose_warp_on_a_grey_and_a_tilted_photo(example_photos):
    import lordfx

    astronaut, hopper = example_photos
    editor = lordfx.load("faces")
    grey = astronaut.convert("L")
    out = editor.swap_pose(grey, hopper)
    assert out.mode == "L" and out.size == grey.size
    np.testing.assert_array_equal(np.asarray(out)[:, :100], np.asarray(grey)[:, :100])
    tilted = astronaut.rotate(12, resample=Image.Resampling.BICUBIC)
    _, ctx = editor.pre.to_model(tilted)
    assert abs(ctx.face.roll_degrees) >= 2  # the rolled path: crop and paste rotate
    out = editor.swap_pose(tilted, hopper)
    after, before = np.asarray(out).astype(int), np.asarray(tilted).astype(int)
    assert out.size == tilted.size
    np.testing.assert_array_equal(after[:, :100], before[:, :100])
    assert np.abs(after - before)[60:260, 150:300].mean() > 0.5


def _shift_x(a: np.ndarray, b: np.ndarray) -> float:
    (dx, _), _ = cv2.phaseCorrelate(a[64:192, 64:192, 0].astype(np.float32),
                                    b[64:192, 64:192, 0].astype(np.float32))  # fmt: skip
    return dx


@pytest.mark.parametrize(("anchor", "expected"), [(0.0, 20.0), (1.0, 12.0)])
def test_photo_anchor_measures_the_motion_from_the_photo_itself(anchor, expected):
    # The photo shows the pattern in place, the reconstruction r misplaces it 2 model px to
    # the left, the edit g moves it 3 px right. From r the motion is 5 model px (20 crop px),
    # from the photo 3 (12 crop px): the anchor's weight picks which one the photo gets.
    photo = (_pattern(N) * 255).round().astype(np.uint8)
    r, g = _pattern(S, -2.0), _pattern(S, 3.0)
    out = render_warp(photo, r, g, settings=RenderSettings(photo_anchor=anchor))
    assert abs(_shift_x(photo, out) - expected) < 1.5
    between = render_warp(photo, r, g, settings=RenderSettings(photo_anchor=0.5))
    assert 12.0 + 1.0 < _shift_x(photo, between) < 20.0 - 1.0


def test_photo_at_model_size_matches_the_models_channels():
    from lordfx.render import photo_at_model_size

    rgb = np.zeros((N, N, 3), np.uint8)
    rgb[..., 0] = 255
    grey = photo_at_model_size(rgb, S, 1)
    assert grey.shape == (S, S, 1) and abs(float(grey[S // 2, S // 2, 0]) - 0.299) < 1e-3
    col = photo_at_model_size(np.full((N, N, 1), 51, np.uint8), S, 3)
    assert col.shape == (S, S, 3) and np.allclose(col, 0.2, atol=1e-3)
    with pytest.raises(ValueError, match="photo_anchor"):
        RenderSettings(photo_anchor=1.5)


def test_only_content_swaps_anchor_by_default_and_an_identical_edit_is_the_photo():
    from lordfx.render import DEFAULT_SETTINGS, SWAP_SETTINGS

    assert DEFAULT_SETTINGS.photo_anchor == 0.0  # class edits scale it (test below)
    assert 0.0 < SWAP_SETTINGS.photo_anchor < 1.0
    # anchored, an identical r and g still leave the crop untouched (swap-pose FACE = REF)
    photo = (_pattern(N) * 255).round().astype(np.uint8)
    r = _pattern(S, -2.0)
    np.testing.assert_array_equal(render_warp(photo, r, r.copy(), settings=SWAP_SETTINGS), photo)


def test_class_edits_scale_the_anchor_with_their_strength():
    from lordfx.render import SWAP_SETTINGS, class_edit_settings

    assert class_edit_settings(0.0).photo_anchor == 0.0
    assert class_edit_settings(1.0) == SWAP_SETTINGS
    # a faint edit (g = r + 0.5 % of the way) barely touches the photo when the anchor scales
    # with it; a fixed anchor would pull the photo 40 % of the way to r at any strength
    photo = (_pattern(N) * 255).round().astype(np.uint8)
    r = _pattern(S, -2.0)
    g = 0.995 * r + 0.005 * _pattern(S, 3.0)
    faint = render_warp(photo, r, g, settings=class_edit_settings(0.005)).astype(int) - photo
    fixed = render_warp(photo, r, g, settings=class_edit_settings(1.0)).astype(int) - photo
    assert np.abs(faint).mean() < 0.5 < np.abs(fixed).mean()
