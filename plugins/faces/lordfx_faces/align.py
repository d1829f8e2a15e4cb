"""Face alignment: a similarity transform from the photo to the canonical face crop.

The canonical framing is the celeba_faces one (shared/data/README.md): a square of side
s = round(2.0·w) centred at (x + w/2, y + h/2 + 0.1·h), edge-replicated outside the photo,
resized with INTER_AREA. At roll 0 :func:`align_face` reproduces that recipe exactly (same
integer square, same resampling), so a model trained on those crops sees the same framing
at edit time; with a roll it additionally rotates about the crop centre so the eye line
becomes horizontal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from lordfx_faces.detect import FaceBox, round_half_up

CROP_SCALE = 2.0  # crop side / face-box width
CENTRE_DROP = 0.1  # crop centre sits this many box heights below the box centre


@dataclass(frozen=True)
class Framing:
    """Where the canonical crop sits relative to the Haar box: side = scale·w, centre
    ``drop``·h below the box centre. Other domains (e.g. FER2013's tight crops) pass their
    own."""

    scale: float = CROP_SCALE
    drop: float = CENTRE_DROP


CELEBA_FRAMING = Framing()


def crop_params(box: FaceBox, framing: Framing = CELEBA_FRAMING) -> tuple[float, float, int]:
    """The crop square (cx, cy, side) in pixel-corner coordinates.

    side = round(scale·w) (celeba: 2.0·w); the centre is chosen so that the top-left corner
    (cx − side/2, cy − side/2) equals the recipe's rounded corner
    (round(x + w/2 − side/2), round(y + h/2 + drop·h − side/2)), i.e. the rounding of the
    training crops is reproduced. With a roll, the drop·h follows the face's own "down"
    direction instead of the image's.
    """
    side = round_half_up(framing.scale * box.w)
    theta = math.radians(box.roll_degrees)
    drop = framing.drop * box.h
    cx = box.x + box.w / 2 - math.sin(theta) * drop
    cy = box.y + box.h / 2 + math.cos(theta) * drop
    if box.roll_degrees == 0.0:
        cx = round_half_up(cx - side / 2) + side / 2
        cy = round_half_up(cy - side / 2) + side / 2
    return cx, cy, side


def similarity_matrix(box: FaceBox, size: int, framing: Framing = CELEBA_FRAMING) -> np.ndarray:
    """The forward 2×3 matrix M: photo pixel (X, Y) → crop pixel (u, v).

    Shape: → (2, 3) float64.
    With k = size/side, θ = roll and pixel centres at integer indices (OpenCV's convention),

        [u, v]ᵀ = k · R(−θ) · ([X, Y]ᵀ + ½ − [cx, cy]ᵀ) + size/2 − ½,

    where R(φ) is the rotation [[cos φ, −sin φ], [sin φ, cos φ]]. At θ = 0 this is
    u = k·(X − x0 + ½) − ½, exactly the sample positions of ``cv2.resize(INTER_AREA)`` of
    the square starting at x0.
    """
    cx, cy, side = crop_params(box, framing)
    k = size / side
    theta = math.radians(box.roll_degrees)
    c, s = math.cos(theta) * k, math.sin(theta) * k
    a = np.array([[c, s], [-s, c]])  # k · R(−θ)
    t = a @ np.array([0.5 - cx, 0.5 - cy]) + (size / 2 - 0.5)
    return np.hstack([a, t[:, None]])


def _replicate_region(image: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """image[y0:y1, x0:x1] where out-of-bounds pixels repeat the nearest edge pixel
    (the same values as ``cv2.copyMakeBorder(..., BORDER_REPLICATE)``)."""
    h, w = image.shape[:2]
    rows = np.clip(np.arange(y0, y1), 0, h - 1)
    cols = np.clip(np.arange(x0, x1), 0, w - 1)
    return image[rows[:, None], cols[None, :]]


def _region_bounds(m: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """Integer source rectangle (x0, y0, x1, y1) covering the crop's footprint."""
    m_inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64) - 0.5
    src = corners @ m_inv[:, :2].T + m_inv[:, 2] + 0.5  # pixel-corner coordinates
    # A rotated footprint needs a margin for the bilinear taps of the second step; an
    # upright one is the exact integer square of the recipe.
    margin = 0 if _is_upright(m) else 2
    x0, y0 = np.floor(src.min(axis=0) + 1e-6).astype(int) - margin
    x1, y1 = np.ceil(src.max(axis=0) - 1e-6).astype(int) + margin
    return int(x0), int(y0), int(x1), int(y1)


def _is_upright(m: np.ndarray) -> bool:
    return abs(m[0, 1]) < 1e-12 and abs(m[1, 0]) < 1e-12


def warp_to_crop(image: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Resample ``image`` into a (size, size) crop through the similarity ``m``.

    Shape: (H, W, C) uint8, m (2, 3) photo pixel → crop pixel → (size, size, C) uint8.

    Two steps: (1) the crop's source footprint (edge-replicated) is resized by the
    transform's scale with INTER_AREA, (2) the remaining rotation, now at scale ≈ 1, is
    applied with ``cv2.warpAffine`` (bilinear, BORDER_REPLICATE). Step 1 gives the same
    anti-aliasing as the training crops (warpAffine has no area filter, and a Gaussian
    pre-blur only approximates one); for an upright transform step 2 is the identity and is
    skipped, so the result equals the celeba_faces recipe bit for bit. Warping at crop
    resolution is also cheaper than warping the full-resolution photo.
    """
    x0, y0, x1, y1 = _region_bounds(m, size)
    region = _replicate_region(image, x0, y0, x1, y1)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    new_w = max(1, round_half_up((x1 - x0) * scale))
    new_h = max(1, round_half_up((y1 - y0) * scale))
    small = cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA)
    # Photo → small-region pixel map, in the same centre convention as cv2.resize.
    sx, sy = new_w / (x1 - x0), new_h / (y1 - y0)
    pre = np.array([[sx, 0, sx * (0.5 - x0) - 0.5], [0, sy, sy * (0.5 - y0) - 0.5]])
    residual = _compose(m, cv2.invertAffineTransform(pre))
    if (new_w, new_h) == (size, size) and np.allclose(residual, np.eye(2, 3), atol=1e-6):
        crop = small
    else:
        crop = cv2.warpAffine(
            small, residual, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    if crop.ndim == 2:  # cv2 drops a singleton channel axis
        crop = crop[:, :, None]
    return np.ascontiguousarray(crop)


def align_face(
    image: np.ndarray, box: FaceBox, size: int, framing: Framing = CELEBA_FRAMING
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut the canonical face crop out of ``image`` (resampling: :func:`warp_to_crop`).

    Shape: (H, W, C) uint8 → ((size, size, C) uint8, M (2, 3), M_inv (2, 3)), where M maps
    photo pixels to crop pixels (see :func:`similarity_matrix`) and M_inv the reverse.
    At roll 0 with the default framing the crop equals the celeba_faces recipe exactly.
    """
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) uint8 image, got {image.dtype} {image.shape}")
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    m = similarity_matrix(box, size, framing)
    return warp_to_crop(image, m, size), m, cv2.invertAffineTransform(m)


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2×3 affine map x ↦ a(b(x))."""
    return a[:, :2] @ b + np.hstack([np.zeros((2, 2)), a[:, 2:]])
