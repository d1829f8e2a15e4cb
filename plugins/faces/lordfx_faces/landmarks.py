"""Optional eye finder for the roll: dlib's 5-point landmark model (extra ``landmarks``).

``pip install 'lordfx-faces[landmarks]'`` adds ``dlib-bin`` and ``face_recognition_models``;
only ``shape_predictor_5_face_landmarks.dat`` is used here: trained by Davis King on
publicly available images he annotated himself, and released into the public domain (the
dlib-models README) — unlike the package's 68-point model, whose iBUG 300-W training data
restricts commercial use, which stays an evaluation tool. The model reads the four eye
corners inside the Haar face box; the two eye centres are their midpoints. Detection and the
crop framing stay the Haar recipe the model was trained on: only the roll's eye line comes
from here (``FacePreprocessor(align="dlib5")``, ``lordfx swap-pose --align dlib5``).

Without the extra, :func:`available` is False and the default Haar eye cascade is used.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from lordfx.errors import UsageError

MODEL_FILE = "shape_predictor_5_face_landmarks.dat"
EXTRA_HINT = "pip install 'lordfx-faces[landmarks]' (dlib-bin, face_recognition_models)"

Point = tuple[float, float]

_lock = threading.Lock()
_predictor: object | None = None


def model_path() -> Path | None:
    """The 5-point model inside face_recognition_models, or None when it is not installed
    (found without importing the package, whose ``__init__`` needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILE
    return path if path.is_file() else None


def available() -> bool:
    """Whether dlib and the 5-point model are installed."""
    return importlib.util.find_spec("dlib") is not None and model_path() is not None


def _load() -> object:
    global _predictor
    with _lock:
        if _predictor is None:
            path = model_path()
            if path is None or importlib.util.find_spec("dlib") is None:
                raise UsageError(f"--align dlib5 needs dlib and its 5-point model: {EXTRA_HINT}")
            import dlib

            _predictor = dlib.shape_predictor(str(path))
        return _predictor


def five_points(grey: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """dlib's 5 points (4 eye corners, nose base) inside the face ``box`` (x, y, w, h).

    Shape: grey (H, W) uint8 → (5, 2) float64 in pixel-corner coordinates (dlib's integer
    pixel indices + ½, the convention of :mod:`lordfx_faces.detect`).
    """
    import dlib

    x, y, w, h = (int(v) for v in box)
    shape = _load()(np.ascontiguousarray(grey), dlib.rectangle(x, y, x + w - 1, y + h - 1))  # type: ignore[operator]
    return np.array([[p.x + 0.5, p.y + 0.5] for p in shape.parts()], dtype=np.float64)


def eyes_from_points(points: np.ndarray) -> tuple[Point, Point]:
    """The two eye centres (image-left first) from dlib's 5 points: points 0–1 and 2–3 are
    the corners of one eye each, point 4 the base of the nose."""
    a = points[0:2].mean(axis=0)
    b = points[2:4].mean(axis=0)
    left, right = (a, b) if a[0] <= b[0] else (b, a)
    return (float(left[0]), float(left[1])), (float(right[0]), float(right[1]))


def find_eyes(grey: np.ndarray, box: tuple[int, int, int, int]) -> tuple[Point, Point] | None:
    """Eye centres from the 5-point model, or None when they are implausible for ``box``
    (closer than 0.2 or farther than 0.7 box widths apart: the predictor drifted)."""
    left, right = eyes_from_points(five_points(grey, box))
    distance = float(np.hypot(right[0] - left[0], right[1] - left[1]))
    if not 0.2 * box[2] <= distance <= 0.7 * box[2]:
        return None
    return left, right
