"""Rendering an edit at the photo's own resolution (DESIGN §9), for every domain.

A model at 48–64² cannot paint a megapixel face, but it can say how the face should move.
For an edit x → x' of an aligned crop, r = G(E_c(x), E_y(x)) (the model's reconstruction)
and g = G(c', e') (the edit, e.g. G(E_c(REF), E_y(x)) for swap-pose) come from the same
generator, so their blur matches and their difference is the edit. :func:`render_warp`

1. estimates the dense motion r → g (OpenCV Farnebäck on r and g upsampled to
   :attr:`RenderSettings.flow_size`; for content swaps r is anchored partly on the photo
   itself, :attr:`RenderSettings.photo_anchor`), smooths it and confines it to the region mask,
2. upsamples it to the full-resolution crop and applies it there (``cv2.remap``), so the
   photo's own detail moves instead of being replaced,
3. adds the low-frequency residual g − warp(r) (blurred, upsampled) for what a warp cannot
   produce (an opened mouth, closed eyes).

``strength`` in [0, 1] scales motion and residual; 0 returns the crop's pixels unchanged.
``render="generate"`` (the preprocessor's ``from_model``) keeps the model's own pixels.

Preprocessors opt in with three methods (the faces and expressions plugins implement them;
a preprocessor without them, e.g. :class:`lordfx.preprocess.ResizePreprocessor`, gets the
centre square of the photo, as its ``to_model`` uses, and the edited square back):

- ``photo_crop(context, photo) -> (crop, handle)``: the aligned crop at the photo's
  resolution, (N, N, C) uint8, and whatever ``paste_photo_crop`` needs to put it back;
- ``render_mask() -> (S, S) float in [0, 1] or None``: where motion and residual may act,
  at model size (None: everywhere);
- ``paste_photo_crop(edited, crop, handle, photo) -> PIL image``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from lordfx.errors import UsageError

RENDER_MODES = ("warp", "generate")


@dataclass(frozen=True)
class RenderSettings:
    """How :func:`render_warp` estimates and applies the motion.

    ``flow_size``: side (px) r and g are upsampled to before flow estimation (sub-pixel
    motion of a 48² image is lost on its own grid); ``flow_smooth``: Gaussian sigma of the
    flow smoothing, as a fraction of the side; ``residual_blur``: Gaussian sigma of the
    residual's low-pass, in model pixels (1 model pixel ≈ the generator's own blur). Only
    the final remap runs at the crop's resolution (its cost follows the face's size).

    ``photo_anchor`` a in [0, 1]: the motion and residual start from
    (1 − a)·r + a·p, where p is the crop itself at the model's size, blurred by one model
    pixel (the generator's blur). r alone (a = 0) moves the photo by r → g even where r gets
    the photo's geometry wrong (a reconstruction in its own, averaged pose); p alone (a = 1)
    differs from g in appearance too, and the flow and residual then carry that appearance
    (identity) instead of motion. Measured on held-out faces (docs/results.md, "Photo
    anchor"): for swap-pose a = 0.4 takes more of REF's pose than 0 and keeps the person
    better than 1 (:data:`SWAP_SETTINGS`). The default stays 0. An edit with a strength (set
    an expression at 0.1) must fade to the photo, and with a fixed a > 0 even g = r + ε
    would move the photo by a·(photo → r), so class edits scale a with their strength
    (:func:`class_edit_settings`).
    """

    flow_size: int = 128
    flow_smooth: float = 0.02
    residual_blur: float = 1.0
    photo_anchor: float = 0.0

    def __post_init__(self) -> None:
        if self.flow_size < 16:
            raise ValueError(f"flow_size must be ≥ 16, got {self.flow_size}")
        if self.flow_smooth < 0 or self.residual_blur < 0:
            raise ValueError("flow_smooth and residual_blur must be ≥ 0")
        if not 0.0 <= self.photo_anchor <= 1.0:
            raise ValueError(f"photo_anchor must be in [0, 1], got {self.photo_anchor}")


DEFAULT_SETTINGS = RenderSettings()
# Content swaps (swap-pose; any domain's swap_content_file): r anchored 40 % on the photo.
SWAP_SETTINGS = RenderSettings(photo_anchor=0.4)


def class_edit_settings(strength: float) -> RenderSettings:
    """Render settings of a class edit at ``strength`` (set an expression): the swap anchor
    scaled by the strength, so the edit still fades continuously to the photo as the
    strength goes to 0 (the edit g → r and the anchor → 0 together)."""
    return replace(SWAP_SETTINGS, photo_anchor=SWAP_SETTINGS.photo_anchor * float(strength))


def check_render(render: str) -> str:
    """``render`` itself, or a :class:`UsageError` listing the valid modes."""
    if render not in RENDER_MODES:
        raise UsageError(f"unknown render mode {render!r}; valid: {', '.join(RENDER_MODES)}")
    return render


def _as_hwc(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Shape: (C, S, S) tensor or (S, S, C)/(S, S) array in [0, 1] → (S, S, C) float32."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
        if x.ndim == 3:
            x = x.transpose(1, 2, 0)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[0] != x.shape[1]:
        raise ValueError(f"expected a square (S, S, C) image, got shape {x.shape}")
    return np.clip(x, 0.0, 1.0)


def _resize(x: np.ndarray, size: tuple[int, int], interpolation: int) -> np.ndarray:
    """cv2.resize to (W, H) keeping a trailing channel axis of 1."""
    out = cv2.resize(x, size, interpolation=interpolation)
    return out[:, :, None] if out.ndim == 2 and x.ndim == 3 else out


def resize_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A flow field resampled to (W, H), its vectors rescaled to the new pixel units.

    Shape: (h, w, 2) float32 → (H, W, 2) float32.
    """
    h, w = flow.shape[:2]
    out = cv2.resize(flow, size, interpolation=cv2.INTER_LINEAR)
    return (out * np.array([size[0] / w, size[1] / h], dtype=np.float32)).astype(np.float32)


def warp(image: np.ndarray, flow: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Backward warp: out(p) = image(p + flow(p)) (edges replicated).

    Shape: image (H, W, C) float32 or uint8, flow (H, W, 2) float32 in pixels → image's
    shape and dtype. Where the flow is 0 the input is returned exactly.
    """
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = cv2.remap(
        image,
        grid_x + flow[..., 0],
        grid_y + flow[..., 1],
        interpolation=interpolation,
        borderMode=cv2.BORDER_REPLICATE,
    )
    if out.ndim == 2 and image.ndim == 3:
        out = out[:, :, None]
    still = ~np.any(flow != 0, axis=2)
    out[still] = image[still]
    return out


def _grey_u8(x: np.ndarray) -> np.ndarray:
    """Shape: (S, S, C) float in [0, 1] → (S, S) uint8 (luma for RGB)."""
    grey = x[:, :, 0] if x.shape[2] == 1 else x @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.clip(np.rint(grey * 255.0), 0, 255).astype(np.uint8)


def estimate_motion(
    recon: np.ndarray, edit: np.ndarray, settings: RenderSettings = DEFAULT_SETTINGS
) -> np.ndarray:
    """Dense motion from the reconstruction to the edit, at ``settings.flow_size``.

    Shape: recon, edit (S, S, C) float in [0, 1] → (F, F, 2) float32 in pixels of the F×F
    grid (F = flow_size), such that warp(recon↑F, flow) ≈ edit↑F, i.e. the flow points from
    a pixel of the edit to where its content sits in the reconstruction. Identical inputs
    give a zero flow.
    """
    if np.array_equal(recon, edit):
        return np.zeros((settings.flow_size, settings.flow_size, 2), np.float32)
    f = settings.flow_size
    a = cv2.resize(_grey_u8(edit), (f, f), interpolation=cv2.INTER_CUBIC)
    b = cv2.resize(_grey_u8(recon), (f, f), interpolation=cv2.INTER_CUBIC)
    # Farnebäck: prev = edit, next = recon gives edit(p) ≈ recon(p + flow(p)). A window of
    # f/8 spans a facial feature at the model's resolution; 3 levels reach ~f/4 motion.
    flow = cv2.calcOpticalFlowFarneback(
        a, b, None, pyr_scale=0.5, levels=3, winsize=max(5, f // 8), iterations=5,
        poly_n=5, poly_sigma=1.1, flags=cv2.OPTFLOW_FARNEBACK_GAUSSIAN,
    )  # fmt: skip
    if settings.flow_smooth > 0:
        flow = cv2.GaussianBlur(flow, (0, 0), settings.flow_smooth * f)
    return flow.astype(np.float32)


def photo_at_model_size(crop: np.ndarray, size: int, channels: int) -> np.ndarray:
    """The crop as the model would draw it: area-downsampled to ``size`` and blurred by one
    model pixel (Gaussian σ = 1), in the model's channels (luma for a grey model, grey
    repeated for a colour model on a grey photo).

    Shape: (N, N, C) uint8 → (size, size, channels) float32 in [0, 1].
    """
    x = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = cv2.GaussianBlur(x, (0, 0), 1.0).reshape(size, size, crop.shape[2])
    if x.shape[2] == 1 and channels == 3:
        return np.repeat(x, 3, axis=2)
    return _luma(x) if channels == 1 else x


def _luma(x: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of an RGB image; a one-channel image as it is. (H, W, C) → (H, W, 1)."""
    if x.shape[2] == 1:
        return x
    return (x @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None]


def render_warp(
    crop: np.ndarray,
    recon: np.ndarray | torch.Tensor,
    edit: np.ndarray | torch.Tensor,
    strength: float = 1.0,
    mask: np.ndarray | None = None,
    settings: RenderSettings = DEFAULT_SETTINGS,
) -> np.ndarray:
    """The edit r → g rendered on the full-resolution crop: motion, then residual.

    Shape: crop (N, N, C) uint8 (the photo's aligned crop at its own resolution); recon, edit
    (S, S, Cm) arrays or (Cm, S, S) tensors in [0, 1] (Cm = C; or Cm = 1 with C = 3: a grey
    model's residual is added to every channel, which keeps an RGB crop's chroma; or Cm = 3
    with C = 1: the residual's luma); mask (S, S) in [0, 1] or None → (N, N, C) uint8.

    out = warp(crop, strength · F↑) + strength · blur(g − warp(r, F))↑ · 255, with F the
    masked motion of :func:`estimate_motion` and ↑ bilinear upsampling to N. Pixels where
    both terms are 0 (outside the mask, or strength 0) are the crop's, byte for byte.
    """
    if crop.dtype != np.uint8 or crop.ndim != 3:
        raise ValueError(f"expected an (N, N, C) uint8 crop, got {crop.dtype} {crop.shape}")
    if not 0.0 <= strength <= 1.0:
        raise UsageError(f"strength must be in [0, 1], got {strength}")
    r, g = _as_hwc(recon), _as_hwc(edit)
    if r.shape != g.shape:
        raise ValueError(f"recon {r.shape} and edit {g.shape} differ")
    if strength == 0.0 or np.array_equal(r, g):
        return crop.copy()
    f, (h, w) = settings.flow_size, crop.shape[:2]
    if settings.photo_anchor > 0:
        a = settings.photo_anchor
        r = (1.0 - a) * r + a * photo_at_model_size(crop, r.shape[0], r.shape[2])
    flow = estimate_motion(r, g, settings)
    region = None
    if mask is not None:
        region = cv2.resize(np.asarray(mask, np.float32), (f, f), interpolation=cv2.INTER_LINEAR)
        flow *= region[:, :, None]
    # The residual at the flow grid: what the motion of r does not explain.
    r_f = _resize(r, (f, f), cv2.INTER_CUBIC)
    g_f = _resize(g, (f, f), cv2.INTER_CUBIC)
    residual = g_f - warp(r_f, flow)
    if settings.residual_blur > 0:
        sigma = settings.residual_blur * f / r.shape[0]
        residual = cv2.GaussianBlur(residual, (0, 0), sigma).reshape(residual.shape)
    if region is not None:
        residual *= region[:, :, None]
    if crop.shape[2] == 1:  # a grey photo (edited by a colour model: the residual's luma)
        residual = _luma(residual)
    # Bicubic on the photo's pixels: bilinear at sub-pixel offsets halves their
    # high-frequency energy (measured on examples/astronaut.jpg's face: Laplacian variance).
    moved = warp(crop.astype(np.float32), resize_flow(flow, (w, h)) * strength, cv2.INTER_CUBIC)
    added = _resize(residual, (w, h), cv2.INTER_LINEAR) * (strength * 255.0)
    out = np.clip(np.rint(moved + added), 0, 255).astype(np.uint8)
    return out


# -- the whole path: photo → crop → render → paste --------------------------------------------
def _centre_square(photo: Image.Image, channels: int) -> tuple[np.ndarray, None]:
    """The full-resolution square :class:`~lordfx.preprocess.ResizePreprocessor` resizes."""
    w, h = photo.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = photo.convert("L" if channels == 1 else "RGB").crop(
        (left, top, left + side, top + side)
    )
    arr = np.asarray(square, dtype=np.uint8)
    return (arr[:, :, None] if arr.ndim == 2 else arr), None


def render_photo(
    pre: Any,
    context: Any,
    photo: Image.Image,
    recon: torch.Tensor,
    edit: torch.Tensor,
    strength: float = 1.0,
    settings: RenderSettings = DEFAULT_SETTINGS,
) -> Image.Image:
    """``render="warp"`` for any domain: the edit r → g rendered on ``photo`` at its own
    resolution through ``pre``'s photo-crop methods (module doc).

    Shape: recon, edit (C, S, S) in [0, 1] (one image each) → PIL image: the photo's size
    for preprocessors that paste back, the photo's centre square otherwise.
    """
    if hasattr(pre, "photo_crop"):
        crop, handle = pre.photo_crop(context, photo)
        edited = render_warp(crop, recon, edit, strength, pre.render_mask(), settings)
        return pre.paste_photo_crop(edited, crop, handle, photo)
    channels = int(recon.shape[0])
    crop, _ = _centre_square(photo, channels)
    edited = render_warp(crop, recon, edit, strength, None, settings)
    return Image.fromarray(edited[:, :, 0] if channels == 1 else edited)
