"""Roll from dlib's 5 points (``--align dlib5``, extra ``landmarks``) beside the Haar eye
cascade, and the alignment evaluation's pure parts. dlib tests skip without the extra; the
photos are the public-domain examples/."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from lordfx_faces import landmarks
from lordfx_faces.detect import ALIGNERS, check_aligner, detect_faces, resolve_aligner
from lordfx_faces.preprocess import FacePreprocessor
from typer.testing import CliRunner

from lordfx.cli import build_app
from lordfx.errors import UsageError
from lordfx.imageio import read_image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
needs_dlib = pytest.mark.skipif(not landmarks.available(), reason="extra 'landmarks' missing")


def test_aligner_names_are_checked():
    assert ALIGNERS == ("auto", "haar", "dlib5")
    assert check_aligner("dlib5") == "dlib5"
    with pytest.raises(UsageError, match="--align 'eyes': valid: auto, haar, dlib5"):
        check_aligner("eyes")
    with pytest.raises(UsageError, match="valid: auto, haar, dlib5"):
        FacePreprocessor(image_size=64, align="nope")
    pre = FacePreprocessor(image_size=64).with_align("dlib5")
    assert pre.align == "dlib5" and pre.image_size == 64
    assert FacePreprocessor(image_size=64).align == "auto"
    expected = "dlib5" if landmarks.available() else "haar"
    assert resolve_aligner("auto") == expected and resolve_aligner("haar") == "haar"


def test_auto_without_the_extra_is_the_haar_path(monkeypatch):
    photo = np.asarray(read_image(EXAMPLES / "astronaut.jpg"))
    monkeypatch.setattr(landmarks, "available", lambda: False)
    assert resolve_aligner("auto") == "haar"
    assert detect_faces(photo, align="auto") == detect_faces(photo, align="haar")


def test_eye_centres_from_five_points_are_ordered_image_left_first():
    # dlib's order: one eye's two corners, the other eye's two corners, the nose base.
    points = np.array([[80.0, 52], [70, 50], [30, 40], [40, 42], [55, 70]])
    left, right = landmarks.eyes_from_points(points)
    assert left == (35.0, 41.0) and right == (75.0, 51.0)
    swapped = landmarks.eyes_from_points(points[[2, 3, 0, 1, 4]])
    assert swapped == (left, right)


def test_swap_pose_rejects_an_unknown_aligner(tmp_path):
    photo = tmp_path / "face.jpg"
    cv2.imwrite(str(photo), np.full((64, 64, 3), 128, np.uint8))
    result = CliRunner().invoke(build_app(), ["swap-pose", str(photo), str(photo), "--align", "x"])
    assert result.exit_code == 2
    assert "--align 'x': valid: auto, haar, dlib5" in result.output


@needs_dlib
@pytest.mark.parametrize("theta", [10.0, -10.0])
def test_dlib5_roll_follows_a_rotated_photo(theta):
    photo = np.asarray(read_image(EXAMPLES / "astronaut.jpg"))
    h, w = photo.shape[:2]
    upright = detect_faces(photo, align="dlib5")[0]
    assert upright.eyes is not None and abs(upright.roll_degrees) < 6  # measured 3.3
    centre = (upright.x + upright.w / 2, upright.y + upright.h / 2)
    rot_m = cv2.getRotationMatrix2D(centre, -theta, 1.0)  # a roll of +theta in our convention
    rotated = cv2.warpAffine(photo, rot_m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    face = detect_faces(rotated, align="dlib5")[0]
    assert face.eyes is not None
    assert face.roll_degrees - upright.roll_degrees == pytest.approx(theta, abs=2.0)


@needs_dlib
def test_dlib5_keeps_the_haar_boxes():
    photo = np.asarray(read_image(EXAMPLES / "grace_hopper.jpg"))
    haar = detect_faces(photo, align="haar")
    dlib5 = detect_faces(photo, align="dlib5")
    assert [(f.x, f.y, f.w, f.h) for f in haar] == [(f.x, f.y, f.w, f.h) for f in dlib5]
    # The Haar eye cascade finds no plausible pair here; the 5-point model does.
    assert haar[0].eyes is None and dlib5[0].eyes is not None


def test_eye_roll_of_68_landmarks():
    from lordfx_trainer.evaluation.face_align import AlignEvalSettings, eye_roll

    lm = np.zeros((2, 68, 2))
    lm[0, 36:42] = [10.0, 20.0]
    lm[0, 42:48] = [30.0, 20.0]
    lm[1, 36:42] = [10.0, 20.0]
    lm[1, 42:48] = [30.0, 40.0]  # the image-right eye lower: +45°
    np.testing.assert_allclose(eye_roll(lm), [0.0, 45.0])
    with pytest.raises(UsageError, match="valid: none, haar, dlib5"):
        AlignEvalSettings(arms=("haar", "sift"))
    with pytest.raises(UsageError, match="--pairs"):
        AlignEvalSettings(pairs=0)
