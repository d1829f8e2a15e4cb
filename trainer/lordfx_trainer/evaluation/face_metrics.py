"""Face metrics for ``lordfx eval-faces``: dlib's 68 landmarks and 128-d face descriptor on
small face crops, and the pure numpy helpers the report is built from.

dlib is an optional evaluation extra (``pip install 'lordfx-trainer[eval-faces]'``, i.e.
``dlib-bin`` + ``face_recognition_models``); it is imported only by :class:`DlibFaces`, so
the helpers here and the rest of lordfx never need it. The 68-point model was trained on
iBUG 300-W, which is non-commercial: keep it an evaluation tool.

Crops are tiny (48×48 in the CPU preset), so every image is upsampled to ``UPSAMPLE`` px
before dlib sees it, and instead of dlib's face detector (which misses some small blurry
faces, and would make the set of scored images depend on the model) one fixed face
rectangle from the crops' known framing is used for every image, real or generated.
"""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lordfx.errors import LordfxError

#: dlib's recommended "same person" threshold on the descriptor distance.
SAME_PERSON = 0.6
UPSAMPLE = 150
LANDMARK_MODEL = "shape_predictor_68_face_landmarks.dat"
DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
EXTRA_HINT = "pip install 'lordfx-trainer[eval-faces]' (dlib-bin, face_recognition_models)"
LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 36, 45


@dataclass(frozen=True)
class FaceBox:
    """The face rectangle as fractions of the crop: centre (cx, cy) and side ``width``.

    Default: the mean box of dlib's own HOG detector on 48→150 px shared/data/celeba_faces
    crops of the 30 held-out identities (192 of 200 detected; centre (0.490, 0.485) ± 0.02,
    width 0.490 ± 0.02). dlib's shape predictor was trained on its detector's boxes, and this
    box gives landmarks 0.015 inter-ocular from the detector-box fit (median 0.009), against
    0.031 for a tighter (0.50, 0.45, 0.41) box.
    """

    cx: float = 0.49
    cy: float = 0.485
    width: float = 0.49

    def pixels(self, size: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) in a ``size``-px square image."""
        half = self.width * size / 2
        x, y = self.cx * size, self.cy * size
        return round(x - half), round(y - half), round(x + half), round(y + half)

    def to_dict(self) -> dict:
        return asdict(self)


# -- pure helpers (no dlib) ------------------------------------------------------------------
def stats(values: np.ndarray) -> dict:
    """{"mean", "std", "n"} of a 1-d array (population std); NaNs are dropped."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[~np.isnan(v)]
    if not len(v):
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std()), "n": int(len(v))}


def share_under(distances: np.ndarray, threshold: float = SAME_PERSON) -> dict:
    """How many of ``distances`` are strictly below ``threshold``: {"share", "count", "n"}."""
    d = np.asarray(distances, dtype=np.float64).ravel()
    d = d[~np.isnan(d)]
    count = int(np.sum(d < threshold))
    return {"share": count / len(d) if len(d) else None, "count": count, "n": int(len(d))}


def descriptor_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance of paired descriptors. Shape: (N, 128) ×2 → (N,)."""
    return np.linalg.norm(np.asarray(a) - np.asarray(b), axis=-1)


def interocular(landmarks: np.ndarray) -> np.ndarray:
    """Distance between the outer eye corners (points 36 and 45). Shape: (..., 68, 2) → (...)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.linalg.norm(lm[..., LEFT_EYE_OUTER, :] - lm[..., RIGHT_EYE_OUTER, :], axis=-1)


def landmark_distance(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Mean point-to-point distance of 68 landmarks normalised by ``ref``'s inter-ocular
    distance (NME); 0 for identical landmarks, |shift| / inter-ocular for a shift.

    Shape: pred, ref (..., 68, 2) (broadcast) → (...).
    """
    pred, ref = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    per_point = np.linalg.norm(pred - ref, axis=-1).mean(-1)
    return per_point / np.maximum(interocular(ref), 1e-9)


def nearest_by_landmarks(
    queries: np.ndarray, pool: np.ndarray, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each query the allowed pool image whose landmarks are nearest (NME against the
    query's landmarks); -1 / NaN where nothing is allowed.

    Shape: queries (Q, 68, 2), pool (N, 68, 2), allowed (Q, N) bool → ((Q,) int64, (Q,) NME).
    """
    index = np.full(len(queries), -1, dtype=np.int64)
    nme = np.full(len(queries), np.nan)
    for q, query in enumerate(np.asarray(queries)):
        candidates = np.flatnonzero(allowed[q])
        if not len(candidates):
            continue
        d = landmark_distance(pool[candidates], query[None])
        best = int(np.argmin(d))
        index[q], nme[q] = candidates[best], d[best]
    return index, nme


def sample_face_pairs(class_ids: np.ndarray, num: int, seed: int) -> tuple[np.ndarray, ...]:
    """``num`` (FACE, REF) index pairs of different classes, uniform with replacement
    (``numpy.random.default_rng(seed)``). Shape: class_ids (N,) → ((P,), (P,)) int64."""
    class_ids = np.asarray(class_ids)
    if len(np.unique(class_ids)) < 2:
        raise LordfxError("face pairs need images of at least two identities")
    rng, faces, refs = np.random.default_rng(seed), [], []
    while len(faces) < num:
        i, j = rng.integers(len(class_ids), size=(2, 2 * num))
        keep = class_ids[i] != class_ids[j]
        faces.extend(i[keep].tolist())
        refs.extend(j[keep].tolist())
    return np.asarray(faces[:num], np.int64), np.asarray(refs[:num], np.int64)


def other_of_same_class(class_ids: np.ndarray, index: np.ndarray, seed: int) -> np.ndarray:
    """For each ``index`` a seeded other image of the same class, or -1 if it has none.

    Shape: class_ids (N,), index (P,) → (P,) int64.
    """
    class_ids, rng = np.asarray(class_ids), np.random.default_rng(seed)
    out = np.full(len(index), -1, dtype=np.int64)
    for p, i in enumerate(np.asarray(index)):
        others = np.flatnonzero(class_ids == class_ids[i])
        others = others[others != i]
        if len(others):
            out[p] = rng.choice(others)
    return out


# -- dlib --------------------------------------------------------------------------------------
def model_dir() -> Path:
    """face_recognition_models' model folder, found without importing the package (its
    ``__init__`` needs pkg_resources, which recent setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise LordfxError(f"eval-faces needs face_recognition_models: {EXTRA_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    for name in (LANDMARK_MODEL, DESCRIPTOR_MODEL):
        if not (folder / name).is_file():
            raise LordfxError(f"{folder / name}: missing; reinstall face_recognition_models")
    return folder


def import_dlib() -> Any:
    """The dlib module, or a :class:`LordfxError` naming the extra that installs it."""
    try:
        import dlib
    except ImportError:
        raise LordfxError(f"eval-faces needs dlib: {EXTRA_HINT}") from None
    return dlib


def dlib_available() -> bool:
    """Whether dlib and face_recognition_models' two model files are installed."""
    if importlib.util.find_spec("dlib") is None:
        return False
    try:
        model_dir()
    except LordfxError:
        return False
    return True


class DlibFaces:
    """dlib's 68-point shape predictor and ResNet face descriptor on a fixed face box.

    Images are upsampled (bicubic) to ``size``² and the predictor is fitted inside ``box``
    (no detector runs: the crops are aligned). ``descriptors=False`` skips loading the
    descriptor network for landmark-only use.
    """

    def __init__(
        self, box: FaceBox = FaceBox(), size: int = UPSAMPLE, descriptors: bool = True
    ) -> None:
        dlib = import_dlib()
        folder = model_dir()
        self.dlib, self.box, self.size = dlib, box, size
        self.predictor = dlib.shape_predictor(str(folder / LANDMARK_MODEL))
        self.encoder = (
            dlib.face_recognition_model_v1(str(folder / DESCRIPTOR_MODEL)) if descriptors else None
        )
        self.rect = dlib.rectangle(*box.pixels(size))

    def info(self) -> dict:
        from importlib.metadata import PackageNotFoundError, version

        def ver(name: str) -> str | None:
            try:
                return version(name)
            except PackageNotFoundError:
                return None

        return {
            "landmarks": f"dlib shape_predictor {LANDMARK_MODEL} (68 points, iBUG 300-W: "
            "non-commercial)",
            "descriptor": f"dlib face_recognition_model_v1 {DESCRIPTOR_MODEL} (128-d, "
            f"same person below {SAME_PERSON})",
            "dlib": self.dlib.__version__,
            "dlib_bin": ver("dlib-bin"),
            "face_recognition_models": ver("face_recognition_models"),
        }

    def upsample(self, images: np.ndarray) -> list[np.ndarray]:
        """Shape: (N, H, W, 3) uint8 → N × (size, size, 3) uint8 (bicubic)."""
        from PIL import Image

        resample = Image.Resampling.BICUBIC
        return [
            np.asarray(Image.fromarray(im).resize((self.size, self.size), resample))
            for im in images
        ]

    def analyse(self, images: np.ndarray, descriptors: bool = True) -> tuple:
        """Landmarks in units of the image side, and descriptors (or None).

        Shape: images (N, H, W, 3) uint8 → ((N, 68, 2) float, (N, 128) float | None).
        """
        if descriptors and self.encoder is None:
            raise ValueError("this DlibFaces was built with descriptors=False")
        landmarks, codes = [], []
        for up in self.upsample(images):
            shape = self.predictor(up, self.rect)
            landmarks.append([[p.x, p.y] for p in shape.parts()])
            if descriptors:
                codes.append(np.asarray(self.encoder.compute_face_descriptor(up, shape)))
        lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 68, 2) / self.size
        return lm, (np.asarray(codes).reshape(-1, 128) if descriptors else None)
