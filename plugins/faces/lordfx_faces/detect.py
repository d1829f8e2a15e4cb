"""Face detection with OpenCV's bundled Haar cascades (no downloads).

The face detector uses exactly the settings that produced ``shared/data/celeba_faces`` (see
its README, "Processing applied", steps 1–5), so a model trained on those crops sees the
same boxes at edit time. The photo comes through :func:`lordfx.imageio.read_image`, whose
8-bit conversion gives the pixels ``cv2.imread(IMREAD_COLOR)`` gives (16-bit high byte,
libjpeg's CMYK formula, alpha dropped, EXIF orientation applied); tests/test_hostile.py
checks the boxes against the recipe on every celeba_wild_samples photo and its variants. An eye cascade, run inside the upper half of each face box, estimates the
in-plane roll; when it finds no plausible pair the roll is 0, which is also what the
training crops assumed.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger("lordfx_faces.detect")

Point = tuple[float, float]

# (minNeighbors, minSize as a fraction of the shorter image side): the celeba_faces recipe,
# a strict pass and then one looser retry.
DETECTION_PASSES: tuple[tuple[int, float], ...] = ((5, 0.10), (3, 0.05))
SCALE_FACTOR = 1.1
# Eye pairs steeper than this are eye-detector mistakes: the upright frontal-face cascade
# itself rarely fires beyond about ±20° of roll.
MAX_ROLL_DEGREES = 30.0

_cascades: dict[str, cv2.CascadeClassifier] = {}
_cascade_lock = threading.Lock()


@dataclass(frozen=True)
class FaceBox:
    """A detected face: Haar box in pixels (top-left x, y, width, height) plus roll.

    ``roll_degrees`` is the angle of the line from the image-left eye to the image-right eye,
    measured in image coordinates (y down), so a positive roll means the right-hand eye sits
    lower. ``eyes`` holds the two eye centres (image-left first) in pixel-corner coordinates
    when the roll was measured, else ``None``.
    """

    x: int
    y: int
    w: int
    h: int
    roll_degrees: float = 0.0
    eyes: tuple[Point, Point] | None = None

    @property
    def area(self) -> int:
        return self.w * self.h

    def as_dict(self) -> dict[str, object]:
        """JSON-ready description (used by ``--list-faces``)."""
        return {
            "box": [self.x, self.y, self.w, self.h],
            "roll_degrees": round(self.roll_degrees, 2),
            "eyes": None if self.eyes is None else [list(map(float, e)) for e in self.eyes],
        }


def round_half_up(value: float) -> int:
    """Round like the celeba_faces recipe (half up), not Python's banker's rounding."""
    return math.floor(value + 0.5)


def _cascade(name: str) -> cv2.CascadeClassifier:
    """Load a bundled cascade once per process (loading parses a large XML file)."""
    with _cascade_lock:
        clf = _cascades.get(name)
        if clf is None:
            path = Path(cv2.data.haarcascades) / name
            clf = cv2.CascadeClassifier(str(path))
            if clf.empty():
                raise RuntimeError(f"OpenCV cascade {path} is missing or unreadable")
            _cascades[name] = clf
        return clf


def to_grey(image: np.ndarray) -> np.ndarray:
    """Shape: (H, W, 3) RGB uint8 or (H, W) grey → (H, W) uint8 grey (same weights as
    the recipe's ``COLOR_BGR2GRAY`` on a BGR decode)."""
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def detect_boxes(grey: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Haar frontal-face boxes (x, y, w, h), largest area first (celeba_faces recipe)."""
    clf = _cascade("haarcascade_frontalface_default.xml")
    short = min(grey.shape[:2])
    for min_neighbors, min_frac in DETECTION_PASSES:
        m = max(1, round_half_up(min_frac * short))
        found = clf.detectMultiScale(
            grey, scaleFactor=SCALE_FACTOR, minNeighbors=min_neighbors, minSize=(m, m)
        )
        if len(found):
            boxes = [(bx, by, bw, bh) for bx, by, bw, bh in np.asarray(found).tolist()]
            # A stable sort: boxes of equal area keep the detector's order, so the first is
            # the recipe's "largest box" (what max() by area gives).
            return sorted(boxes, key=lambda b: -b[2] * b[3])
    return []


def roll_from_eyes(left: Point, right: Point) -> float:
    """Roll in degrees of the eye line, image-left eye → image-right eye (y down)."""
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


def find_eyes(grey: np.ndarray, box: tuple[int, int, int, int]) -> tuple[Point, Point] | None:
    """The most plausible eye pair inside the upper half of ``box``, or ``None``.

    A pair is plausible when one eye lies in each half of the box, they are 0.2–0.7 box
    widths apart, their midpoint is within 0.15·w of the box's centre line and between
    0.15·h and 0.5·h from its top, and their line is within ``MAX_ROLL_DEGREES``; among
    those the pair most symmetric about the box centre, with the most similar sizes, wins.
    The ROI is the top 0.55·h (a little over half, for faces whose box sits high).
    """
    x, y, w, h = box
    top = grey[max(y, 0) : max(y, 0) + round_half_up(0.55 * h), max(x, 0) : max(x, 0) + w]
    if top.size == 0:
        return None
    lo, hi = max(1, round_half_up(0.10 * w)), max(2, round_half_up(0.40 * w))
    found = _cascade("haarcascade_eye.xml").detectMultiScale(
        top, scaleFactor=SCALE_FACTOR, minNeighbors=3, minSize=(lo, lo), maxSize=(hi, hi)
    )
    # Eye centres in face-box coordinates (pixel corners), with their sizes.
    eyes = [(ex + ew / 2, ey + eh / 2, float(ew)) for ex, ey, ew, eh in np.asarray(found).tolist()]
    best: tuple[float, Point, Point] | None = None
    for lx, ly, ls in eyes:
        for rx, ry, rs in eyes:
            if not (lx < w / 2 < rx) or not (0.2 * w <= rx - lx <= 0.7 * w):
                continue
            # Haar face boxes put the eyes around 0.35·h, centred; far off means a brow,
            # nostril or ear was taken for an eye.
            if abs((lx + rx) / 2 - w / 2) > 0.15 * w or not (0.15 * h < (ly + ry) / 2 < 0.5 * h):
                continue
            if abs(roll_from_eyes((lx, ly), (rx, ry))) > MAX_ROLL_DEGREES:
                continue
            score = abs((lx + rx) / 2 - w / 2) / w + abs(ls - rs) / w
            if best is None or score < best[0]:
                best = (score, (lx, ly), (rx, ry))
    if best is None:
        return None
    (lx, ly), (rx, ry) = best[1], best[2]
    ox, oy = max(x, 0), max(y, 0)
    return (ox + lx, oy + ly), (ox + rx, oy + ry)


#: Where the roll's eye line comes from: the Haar eye cascade (no extra) or dlib's 5-point
#: landmark model (extra ``landmarks``, :mod:`lordfx_faces.landmarks`); ``auto`` (the default)
#: is dlib5 where the extra is installed, else haar. dlib5 measured better on full photos
#: (docs/results.md, `lordfx eval-faces-align`): eye line found in 100 % vs 70 % of faces,
#: residual roll in the crop 1.0° vs 2.6° mean.
ALIGNERS = ("auto", "haar", "dlib5")


def check_aligner(align: str) -> str:
    """``align`` if it names an aligner, else a UsageError listing them."""
    if align not in ALIGNERS:
        from lordfx.errors import UsageError

        raise UsageError(f"--align {align!r}: valid: {', '.join(ALIGNERS)}")
    return align


def resolve_aligner(align: str) -> str:
    """``haar`` or ``dlib5``: ``auto`` becomes dlib5 when its extra is installed."""
    if check_aligner(align) != "auto":
        return align
    from lordfx_faces import landmarks

    return "dlib5" if landmarks.available() else "haar"


def detect_faces(
    image: np.ndarray, estimate_roll: bool = True, align: str = "haar"
) -> list[FaceBox]:
    """Detect faces in an RGB photo, largest first.

    Shape: (H, W, 3) RGB uint8 (or (H, W) grey) → list of :class:`FaceBox`.
    The photo is not resized or equalised first, matching the celeba_faces recipe; ``align``
    picks the eye finder of the roll (:data:`ALIGNERS`), the boxes are the same for both.
    """
    grey = to_grey(image)
    eye_finder = find_eyes
    if estimate_roll and resolve_aligner(align) == "dlib5":
        from lordfx_faces import landmarks

        eye_finder = landmarks.find_eyes
    faces = []
    for box in detect_boxes(grey):
        eyes = eye_finder(grey, box) if estimate_roll else None
        roll = roll_from_eyes(*eyes) if eyes is not None else 0.0
        if abs(roll) > MAX_ROLL_DEGREES:
            eyes, roll = None, 0.0
        faces.append(FaceBox(*box, roll_degrees=roll, eyes=eyes))
    log.debug("detected %d face(s): %s", len(faces), faces)
    return faces
