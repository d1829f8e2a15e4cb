"""Faces preprocessing: detection, celeba_faces framing, roll, paste-back, preprocessor.

Geometry is tested on synthetic images (always run); tests that need real photos read them
from ../shared/data and skip when it is absent. Licensed data is never copied into the repo.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from lordfx_faces import preprocess as face_pre
from lordfx_faces.align import align_face, crop_params
from lordfx_faces.detect import FaceBox, detect_faces, roll_from_eyes
from lordfx_faces.paste import crop_mask, paste_back
from lordfx_faces.preprocess import FacePreprocessor, NoFaceError, make_preprocessor
from PIL import Image

from lordfx.imageio import read_image

EYES = ((230, 195), (270, 195))  # eye centres of the synthetic face (pixel indices)
BOX = FaceBox(200, 150, 100, 100)  # a face box around the synthetic face
# A photo whose Haar box is stable under the samples' JPEG re-encoding (measured: mean
# |Δ| = 1.51 against its celeba_faces crop), and one with two detected faces.
STABLE_PHOTO = "7244/145917.jpg"
TWO_FACE_PHOTO = "7430/201501.jpg"


def synthetic_photo(h: int = 480, w: int = 640) -> np.ndarray:
    """A smooth, textured RGB scene with a face-like blob (eyes, mouth) at BOX."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([60 + 100 * xx / w, 80 + 90 * yy / h, 120 + 40 * np.sin(xx / 37)], -1)
    img += cv2.GaussianBlur(rng.normal(0, 25, (h, w, 3)).astype(np.float32), (0, 0), 2.0)
    cv2.ellipse(img, (250, 210), (48, 62), 0, 0, 360, (200, 160, 140), -1)
    for e in EYES:
        cv2.circle(img, e, 7, (30, 30, 40), -1)
    cv2.ellipse(img, (250, 240), (18, 6), 0, 0, 360, (150, 60, 60), -1)
    return np.clip(cv2.GaussianBlur(img, (0, 0), 1.0), 0, 255).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(255**2 / np.mean((a.astype(np.float64) - b) ** 2))


def mask_in_photo(m: np.ndarray, shape: tuple[int, ...], size: int) -> np.ndarray:
    """The paste mask α evaluated at every photo pixel."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
    v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
    return crop_mask(u, v, size)


def recipe_crop(image: np.ndarray, box: FaceBox, size: int) -> np.ndarray:
    """The celeba_faces recipe verbatim (shared/data/README.md, steps 6–8)."""
    s = math.floor(2.0 * box.w + 0.5)
    x0 = math.floor(box.x + box.w / 2 - s / 2 + 0.5)
    y0 = math.floor(box.y + box.h / 2 + 0.1 * box.h - s / 2 + 0.5)
    h, w = image.shape[:2]
    pad = max(0, -x0, -y0, x0 + s - w, y0 + s - h)
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    square = padded[y0 + pad : y0 + pad + s, x0 + pad : x0 + pad + s]
    return cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA)


# -- geometry (synthetic) ----------------------------------------------------------------------
@pytest.mark.parametrize("box", [BOX, FaceBox(3, 300, 90, 95), FaceBox(561, 0, 77, 77)])
def test_upright_alignment_is_the_celeba_recipe_exactly(box):
    img = synthetic_photo()
    crop, m, m_inv = align_face(img, box, 128)
    np.testing.assert_array_equal(crop, recipe_crop(img, box, 128))
    np.testing.assert_allclose(m @ np.append(m_inv[:, 2], 1.0), [0, 0], atol=1e-9)
    cx, cy, side = crop_params(box)
    assert side == round(2 * box.w) and cx - side / 2 == int(cx - side / 2)


@pytest.mark.parametrize(
    ("box", "size", "min_psnr"),
    [
        (dataclasses.replace(BOX, roll_degrees=12.0), 128, 38.0),  # measured 41.9 dB
        (FaceBox(200, 150, 64, 64, -8.0), 128, 45.0),  # scale 1: measured 52.6 dB
        (dataclasses.replace(BOX, roll_degrees=12.0), 64, 30.0),  # ×3 down: measured 33.3 dB
    ],
)
@pytest.mark.parametrize("color_match", [False, True])
def test_align_then_paste_unchanged_crop_reproduces_the_photo(box, size, min_psnr, color_match):
    img = synthetic_photo()
    crop, m, m_inv = align_face(img, box, size)
    out = paste_back(img, crop, m_inv, color_match=color_match)
    assert out.shape == img.shape and out.dtype == np.uint8
    alpha = mask_in_photo(m, img.shape, size)
    assert psnr(out[alpha >= 1], img[alpha >= 1]) >= min_psnr
    # Outside the mask's support the photo is untouched, byte for byte.
    np.testing.assert_array_equal(out[alpha == 0], img[alpha == 0])
    assert (alpha > 0).sum() < 0.1 * alpha.size


def test_paste_only_touches_the_face_region():
    img = synthetic_photo()
    crop, m, m_inv = align_face(img, BOX, 64)
    out = paste_back(img, np.zeros_like(crop), m_inv, color_match=False)
    changed = np.argwhere((out != img).any(-1))
    assert len(changed) > 0.5 * math.pi * 0.34 * 0.42 * 200**2  # most of the face ellipse
    cx, cy, side = crop_params(BOX)
    far = np.hypot(changed[:, 1] - cx, changed[:, 0] - cy)
    assert far.max() < 0.45 * side  # nothing beyond the ellipse (semi-axes 0.34/0.42 side)


@pytest.mark.parametrize("theta", [12.0, -15.0])
def test_roll_is_measured_and_undone(theta):
    img = synthetic_photo()
    centre = (BOX.x + BOX.w / 2 - 0.5, BOX.y + BOX.h / 2 - 0.5)  # pixel-index coordinates
    # getRotationMatrix2D turns counter-clockwise on screen for positive angles, which
    # lifts the right-hand eye: a roll of −angle in our convention.
    rot_m = cv2.getRotationMatrix2D(centre, -theta, 1.0)
    rotated = cv2.warpAffine(img, rot_m, img.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    eyes = [tuple(rot_m[:, :2] @ np.array(e, float) + rot_m[:, 2]) for e in EYES]
    assert roll_from_eyes(*eyes) == pytest.approx(theta, abs=1e-6)
    upright, _, _ = align_face(img, BOX, 64)

    def mad(roll: float) -> float:
        crop, _, _ = align_face(rotated, dataclasses.replace(BOX, roll_degrees=roll), 64)
        return float(np.abs(crop[8:-8, 8:-8].astype(float) - upright[8:-8, 8:-8]).mean())

    # Measured: 0.97 with the right roll, 6.5–7.7 without, 11–14 with the wrong sign.
    right, none, wrong = mad(theta), mad(0.0), mad(-theta)
    assert right < 2.0 and none > 3 * right and wrong > none


# -- preprocessor (synthetic, detector stubbed) ------------------------------------------------
@pytest.fixture
def three_faces(monkeypatch):
    faces = [BOX, FaceBox(400, 100, 80, 80, 5.0), FaceBox(50, 60, 40, 40)]
    monkeypatch.setattr(face_pre, "detect_faces", lambda image, *args, **kwargs: faces)
    return faces


def test_face_index_selects_a_face_and_reports_out_of_range(three_faces):
    photo = Image.fromarray(synthetic_photo())
    x, ctx = FacePreprocessor(64, face_index=1).to_model(photo)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    assert ctx.face == three_faces[1] and ctx.face_index == 1 and ctx.num_faces == 3
    with pytest.raises(NoFaceError, match=r"face index 3 is out of range: 3 faces found") as e:
        FacePreprocessor(64, face_index=3).to_model(photo)
    assert "valid: 0–2" in str(e.value) and e.value.num_faces == 3
    listed = make_preprocessor(face_index=2).list_faces(photo)
    assert [f["index"] for f in listed] == [0, 1, 2]
    assert [f["default"] for f in listed] == [False, False, True]
    assert listed[1]["box"] == [400, 100, 80, 80] and listed[1]["roll_degrees"] == 5.0


def test_small_rolls_keep_the_training_framing(monkeypatch):
    tilted = [dataclasses.replace(BOX, roll_degrees=1.5)]
    monkeypatch.setattr(face_pre, "detect_faces", lambda image, *args, **kwargs: tilted)
    _, ctx = FacePreprocessor(64).to_model(Image.fromarray(synthetic_photo()))
    assert ctx.face.roll_degrees == 0.0


def test_exif_orientation_and_output_size(tmp_path, three_faces):
    upright = Image.fromarray(synthetic_photo())  # 640 × 480
    path = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90° clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)
    photo = read_image(path)
    assert photo.size == (640, 480)  # read_image applied the orientation
    pre = make_preprocessor()
    x, ctx = pre.to_model(photo)
    out = pre.from_model(torch.rand_like(x), ctx, photo)
    assert out.size == photo.size and out.mode == "RGB"
    before, after = np.asarray(photo), np.asarray(out)
    np.testing.assert_array_equal(after[:, 400:], before[:, 400:])  # far from face 0


def test_from_model_checks_shapes(three_faces):
    photo = Image.fromarray(synthetic_photo())
    pre = make_preprocessor()
    x, ctx = pre.to_model(photo)
    with pytest.raises(ValueError, match=r"\(3, 64, 64\)"):
        pre.from_model(torch.rand(3, 32, 32), ctx, photo)
    with pytest.raises(ValueError, match="original is"):
        pre.from_model(x, ctx, photo.resize((320, 240)))


# -- real detector -----------------------------------------------------------------------------
def test_blank_image_has_no_face():
    blank = np.full((240, 320, 3), 128, np.uint8)
    assert detect_faces(blank) == []
    with pytest.raises(NoFaceError, match="no face found") as e:
        make_preprocessor().to_model(Image.fromarray(blank))
    assert e.value.for_path(Path("x.jpg")).path == Path("x.jpg")
    assert str(e.value.for_path("x.jpg")).startswith("x.jpg: no face found")


@pytest.mark.shared
def test_detects_faces_in_real_photos(shared_data):
    for rel in (STABLE_PHOTO, "7202/012050.jpg", "7208/015339.jpg"):
        faces = detect_faces(np.asarray(read_image(shared_data / "celeba_wild_samples" / rel)))
        assert len(faces) >= 1, rel
        assert all(a.area >= b.area for a, b in zip(faces, faces[1:], strict=False))


@pytest.mark.shared
def test_framing_matches_celeba_faces(shared_data):
    photo = np.asarray(read_image(shared_data / "celeba_wild_samples" / STABLE_PHOTO))
    face = detect_faces(photo, estimate_roll=False)[0]
    crop, _, _ = align_face(photo, face, 128)
    expected = np.asarray(read_image(shared_data / "celeba_faces" / STABLE_PHOTO))
    # The crops were cut from the original photo and saved at JPEG q92; the sample photo
    # was re-saved at q90, so bit-exactness is impossible. Measured: 1.51.
    assert np.abs(crop.astype(np.int16) - expected).mean() < 3.0


@pytest.mark.shared
def test_roll_on_a_real_photo(shared_data):
    photo = np.asarray(read_image(shared_data / "celeba_wild_samples" / "7208/015339.jpg"))
    h, w = photo.shape[:2]
    rolls = []
    for theta in (10.0, -10.0):
        rot_m = cv2.getRotationMatrix2D((w / 2, h / 2), -theta, 1.0)
        rotated = cv2.warpAffine(photo, rot_m, (w, h), borderMode=cv2.BORDER_REPLICATE)
        face = detect_faces(rotated)[0]
        assert face.eyes is not None
        rolls.append(face.roll_degrees)
    assert rolls[0] - rolls[1] == pytest.approx(20.0, abs=2.5)  # measured 18.7


@pytest.mark.shared
def test_second_face_and_exif_on_real_photos(shared_data, tmp_path):
    # No sample photo has two real faces (the extra Haar boxes are necks and caps), so put
    # two single-face photos side by side: the right one's face is larger, so it is face 0.
    left = read_image(shared_data / "celeba_wild_samples" / STABLE_PHOTO)
    right = read_image(shared_data / "celeba_wild_samples" / "7208/015339.jpg")
    both = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), "grey")
    both.paste(left, (0, 0))
    both.paste(right, (left.width, 0))
    path = tmp_path / "sideways.jpg"  # a temporary file, never inside the repo
    exif = Image.Exif()
    exif[0x0112] = 6
    both.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)
    photo = read_image(path)
    assert photo.size == both.size
    pre = make_preprocessor(face_index=1)
    faces = pre.detect(photo)
    assert len(faces) >= 2 and faces[0].x >= left.width and faces[1].x < left.width
    x, ctx = pre.to_model(photo)
    assert ctx.face == faces[1]
    out = pre.from_model(x, ctx, photo)
    assert out.size == photo.size
    np.testing.assert_array_equal(
        np.asarray(out)[:, left.width :], np.asarray(photo)[:, left.width :]
    )
    with pytest.raises(NoFaceError, match=f"{len(faces)} faces found"):
        make_preprocessor(face_index=len(faces)).to_model(photo)
