"""Paste a generated face crop back into the full-resolution photo.

The crop is warped back with the inverse of the alignment transform and blended through a
feathered ellipse defined in crop coordinates (so it follows the face's roll and scale).
Blending is done in plain (gamma-encoded) sRGB: the model is trained and evaluated on sRGB
values, the blend only acts in the feathered rim, and after the optional colour match both
sides of the rim are close, so linear-light blending would change little and cost two
conversions of the whole region.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lordfx_faces.align import warp_to_crop

# The mask ellipse, as fractions of the crop side. The celeba framing puts the Haar box at
# [0.25, 0.75] × [0.2, 0.7] of the crop; the ellipse covers it plus forehead and chin, and
# keeps ≥ 6 % of the side away from every crop edge, where edge replication (photo border)
# and the model's weakest pixels live.
MASK_CENTRE = (0.5, 0.48)
MASK_AXES = (0.34, 0.42)
DEFAULT_FEATHER = 0.25
# A generated crop with (almost) no contrast must not be stretched into noise.
STD_RATIO_RANGE = (0.5, 2.0)


@dataclass(frozen=True)
class Ellipse:
    """The paste mask's ellipse (centre, semi-axes) as fractions of the crop side; domains
    with another framing (e.g. FER2013's tight crops) pass their own."""

    centre: tuple[float, float] = MASK_CENTRE
    axes: tuple[float, float] = MASK_AXES


CELEBA_ELLIPSE = Ellipse()


def _as_float_crop(generated: np.ndarray) -> np.ndarray:
    """Shape: (S, S, 3) uint8 (0–255) or float (0–1) → (S, S, 3) float32 in [0, 255]."""
    if generated.ndim != 3 or generated.shape[2] != 3 or generated.shape[0] != generated.shape[1]:
        raise ValueError(f"expected a square (S, S, 3) crop, got shape {generated.shape}")
    if generated.dtype == np.uint8:
        return generated.astype(np.float32)
    return np.clip(generated.astype(np.float32), 0.0, 1.0) * 255.0


def crop_mask(
    u: np.ndarray,
    v: np.ndarray,
    size: int,
    feather: float = DEFAULT_FEATHER,
    ellipse: Ellipse = CELEBA_ELLIPSE,
) -> np.ndarray:
    """Soft elliptical face mask at crop pixel coordinates (u, v) (any shape).

    Shape: u, v (...) float → (...) float32 in [0, 1].
    With r the normalised elliptical radius (r = 1 on the ellipse), the weight is
    smoothstep((1 − r) / feather): 1 inside r ≤ 1 − feather, exactly 0 for r ≥ 1.
    """
    if not 0.0 < feather <= 1.0:
        raise ValueError(f"feather must be in (0, 1], got {feather}")
    (cx, cy), (ax, ay) = ellipse.centre, ellipse.axes
    du = ((u + 0.5) / size - cx) / ax
    dv = ((v + 0.5) / size - cy) / ay
    t = np.clip((1.0 - np.sqrt(du * du + dv * dv)) / feather, 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def match_color(generated: np.ndarray, reference: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Match the per-channel mean/std of ``generated`` to ``reference`` in CIE Lab.

    Shape: generated, reference (S, S, 3) float32 in [0, 255]; weight (S, S) → (S, S, 3)
    float32 in [0, 255]. Statistics are weighted by ``weight`` (the face mask), so skin
    tone and lighting of the original face carry over while the background does not count.
    """
    gen_lab = cv2.cvtColor(generated / 255.0, cv2.COLOR_RGB2Lab)
    ref_lab = cv2.cvtColor(reference / 255.0, cv2.COLOR_RGB2Lab)
    w = weight[..., None] / max(float(weight.sum()), 1e-6)
    mu_g, mu_r = (gen_lab * w).sum((0, 1)), (ref_lab * w).sum((0, 1))
    sd_g = np.sqrt(((gen_lab - mu_g) ** 2 * w).sum((0, 1)))
    sd_r = np.sqrt(((ref_lab - mu_r) ** 2 * w).sum((0, 1)))
    ratio = np.clip(sd_r / np.maximum(sd_g, 1e-6), *STD_RATIO_RANGE)
    out = (gen_lab - mu_g) * ratio + mu_r
    rgb = cv2.cvtColor(out.astype(np.float32), cv2.COLOR_Lab2RGB)
    return np.clip(rgb * 255.0, 0.0, 255.0)


def _footprint(
    m_inv: np.ndarray, size: int, shape: tuple[int, ...], ellipse: Ellipse
) -> tuple[int, ...] | None:
    """Integer photo rectangle (x0, y0, x1, y1) covering the mask ellipse, clipped to the
    photo; None if it lies wholly outside. Only this rectangle is ever computed on, so the
    cost follows the face's size, not the photo's."""
    t = np.linspace(0.0, 2.0 * np.pi, 73)
    # Points on the ellipse in crop pixel coordinates, mapped to the photo; the 2-pixel pad
    # covers the polygon's chords (< 0.1 % of the radius) and rounding.
    u = (ellipse.centre[0] + ellipse.axes[0] * np.cos(t)) * size - 0.5
    v = (ellipse.centre[1] + ellipse.axes[1] * np.sin(t)) * size - 0.5
    pts = np.stack([u, v], 1) @ m_inv[:, :2].T + m_inv[:, 2]
    x0, y0 = np.maximum(np.floor(pts.min(axis=0)).astype(int) - 2, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + 3, shape[1])
    y1 = min(int(np.ceil(pts[:, 1].max())) + 3, shape[0])
    if x0 >= x1 or y0 >= y1:
        return None
    return int(x0), int(y0), x1, y1


def paste_back(
    original: np.ndarray,
    generated: np.ndarray,
    M_inv: np.ndarray,  # noqa: N803 - the usual name of the inverse matrix
    feather: float = DEFAULT_FEATHER,
    color_match: bool = True,
    reference_crop: np.ndarray | None = None,
    ellipse: Ellipse = CELEBA_ELLIPSE,
) -> np.ndarray:
    """Blend ``generated`` (a canonical crop) into ``original`` where the face was.

    Shape: original (H, W, 3) uint8; generated (S, S, 3) uint8 in [0, 255] or float in
    [0, 1]; M_inv (2, 3) crop pixel → photo pixel (from :func:`align_face`) → (H, W, 3)
    uint8.

    out = original · (1 − α) + warp(generated) · α, with α the feathered ellipse of
    :func:`crop_mask` (``ellipse``; ``feather`` = fraction of its radius that fades). Pixels
    where α = 0 are copied byte for byte. With ``color_match`` the crop's Lab mean/std
    inside the mask is first matched to the original face (``reference_crop``, the aligned
    original at size S; recomputed from ``original`` when not given).
    """
    if original.dtype != np.uint8 or original.ndim != 3 or original.shape[2] != 3:
        raise ValueError(
            f"expected an (H, W, 3) uint8 photo, got {original.dtype} {original.shape}"
        )
    gen = _as_float_crop(generated)
    size = gen.shape[0]
    m = cv2.invertAffineTransform(np.asarray(M_inv, dtype=np.float64))
    if color_match:
        if reference_crop is None:
            reference_crop = warp_to_crop(original, m, size)
        grid = np.arange(size, dtype=np.float32)
        weight = crop_mask(grid[None, :], grid[:, None], size, feather, ellipse)
        gen = match_color(gen, reference_crop.astype(np.float32), weight)
    out = original.copy()
    warp = _warp_to_photo(gen, M_inv, original.shape, feather, ellipse)
    if warp is None:
        return out
    (x0, y0, x1, y1), alpha, warped = warp
    roi = out[y0:y1, x0:x1].astype(np.float32)
    a = alpha[..., None]
    blended = np.clip(np.rint(roi * (1.0 - a) + warped * a), 0, 255).astype(np.uint8)
    out[y0:y1, x0:x1] = np.where(a > 0, blended, out[y0:y1, x0:x1])
    return out


def paste_delta(
    original: np.ndarray,
    delta: np.ndarray,
    M_inv: np.ndarray,  # noqa: N803
    feather: float = DEFAULT_FEATHER,
    ellipse: Ellipse = CELEBA_ELLIPSE,
) -> np.ndarray:
    """Add a crop-space change to the photo: out = original + α · warp(delta) · 255.

    Residual editing: ``delta`` = G(content, new class) − G(content, own class), so the
    photo keeps its own detail at full resolution and only what the edit changes is
    added (the model's low-resolution rendering of the unchanged face never replaces it).
    Shape: original (H, W, 3) uint8; delta (S, S, 3) float in [−1, 1]; → (H, W, 3) uint8.
    A zero delta returns the original byte for byte.
    """
    if original.dtype != np.uint8 or original.ndim != 3 or original.shape[2] != 3:
        raise ValueError(
            f"expected an (H, W, 3) uint8 photo, got {original.dtype} {original.shape}"
        )
    out = original.copy()
    warp = _warp_to_photo(
        np.asarray(delta, np.float32) * 255.0, M_inv, original.shape, feather, ellipse
    )
    if warp is None:
        return out
    (x0, y0, x1, y1), alpha, warped = warp
    roi = out[y0:y1, x0:x1]
    added = np.clip(np.rint(roi.astype(np.float32) + warped * alpha[..., None]), 0, 255)
    out[y0:y1, x0:x1] = added.astype(np.uint8)
    return out


def _warp_to_photo(
    crop: np.ndarray,
    M_inv: np.ndarray,  # noqa: N803
    shape: tuple[int, ...],
    feather: float,
    ellipse: Ellipse,
) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray] | None:
    """The crop warped into the photo rectangle the mask covers, with the mask there.

    Shape: crop (S, S, 3) float → (box (x0, y0, x1, y1), alpha (h, w), warped (h, w, 3)),
    or None when the face lies wholly outside the photo.
    """
    size = crop.shape[0]
    m = cv2.invertAffineTransform(np.asarray(M_inv, dtype=np.float64))
    box = _footprint(np.asarray(M_inv, dtype=np.float64), size, shape, ellipse)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    alpha = _photo_alpha(m, box, size, feather, ellipse)
    shifted = m.copy()
    shifted[:, 2] += m[:, :2] @ np.array([x0, y0], dtype=np.float64)
    # Upsampling is the usual case (64² crop → a face hundreds of pixels wide): bicubic
    # keeps it sharper than bilinear; downsampling first goes through INTER_AREA.
    crop, shifted = _prescale(crop, shifted)
    warped = cv2.warpAffine(
        crop,
        shifted,
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return box, alpha, warped


def _photo_alpha(
    m: np.ndarray, box: tuple[int, ...], size: int, feather: float, ellipse: Ellipse
) -> np.ndarray:
    """The mask at every photo pixel of ``box``, evaluated analytically in crop coordinates
    (exact zeros outside the ellipse, whatever the scale).

    Shape: m (2, 3) photo → crop → (y1 − y0, x1 − x0) float32.
    """
    x0, y0, x1, y1 = box
    c = m.astype(np.float32)  # float32 throughout: this runs on millions of pixels
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    u = c[0, 0] * xs + c[0, 1] * ys + c[0, 2]
    v = c[1, 0] * xs + c[1, 1] * ys + c[1, 2]
    return crop_mask(u, v, size, feather, ellipse)


def _prescale(crop: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """If the photo face is smaller than the crop, shrink the crop with INTER_AREA first
    (warpAffine alone would alias). ``m`` maps photo → crop pixels and is updated to match.
    """
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # crop pixels per photo pixel
    if scale <= 1.25:
        return crop, m
    size = crop.shape[0]
    new = max(1, round(size / scale))
    small = cv2.resize(crop, (new, new), interpolation=cv2.INTER_AREA)
    k = new / size
    pre = np.array([[k, 0, 0.5 * k - 0.5], [0, k, 0.5 * k - 0.5]])
    return small, pre[:, :2] @ m + np.hstack([np.zeros((2, 2)), pre[:, 2:]])
