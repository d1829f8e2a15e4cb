"""Edge maps drawn anywhere → the look of the training edge maps (edges2shoes, HED edges).

The model only knows edge maps like its training data: a 128×128 frame, thin dark lines on
white, the object's longer side filling most of the frame, centred. A sketch drawn by hand
(any size, any line width, any margin) is normalised to that:

1. grey; light lines on a dark background are inverted;
2. threshold (Otsu) → a line mask; no lines at all is an error;
3. crop to the lines' bounding box and pad to a square with white, so the longer side fills
   ``EXTENT`` of the frame (the training maps' median);
4. resize the mask to the 128 frame, thin it to a one-pixel skeleton (Zhang–Suen) and
   thicken it back to ``LINE_WIDTH`` (the training maps' median stroke width);
5. dark lines on white at 128², then the same INTER_AREA resize to the model's size that
   the training images went through.

Every step that changed something is reported in the returned notes (``-v`` prints them).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FRAME = 128  # training edge maps are 128×128 (edges2shoes_mix halves)
#: Measured with :func:`measure` on the first 300 training edge maps (Otsu lines): median
#: stroke width 1.09 px at 128² (quartiles 1.07-1.11: one-pixel lines), median extent (the
#: object's longer side / frame) 0.977 (quartiles 0.953-0.992).
LINE_WIDTH = 1
EXTENT = 0.97


@dataclass(frozen=True)
class EdgeMapStats:
    """Shape: measured on one (H, W) uint8 edge map (dark lines on light)."""

    stroke_width: float
    extent: float
    ink: float


def line_mask(grey: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Dark lines of a grey sketch as a bool mask (Otsu threshold), plus what was done.

    Shape: (H, W) uint8 → (H, W) bool.
    """
    notes = []
    if np.median(grey) < 128:  # mostly dark: light lines on a dark background
        grey = 255 - grey
        notes.append("inverted (light lines on a dark background)")
    level, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if grey.max() - grey.min() < 32:  # flat image: Otsu would split noise
        return np.zeros(grey.shape, dtype=bool), notes
    notes.append(f"thresholded at grey level {int(level)} (Otsu)")
    return grey <= level, notes


def thin(mask: np.ndarray) -> np.ndarray:
    """Zhang–Suen thinning (CACM 1984) of a bool mask to a one-pixel-wide skeleton.

    Shape: (H, W) bool → (H, W) bool.
    """
    img = np.pad(mask.astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = [
                img[:-2, 1:-1], img[:-2, 2:], img[1:-1, 2:], img[2:, 2:],
                img[2:, 1:-1], img[2:, :-2], img[1:-1, :-2], img[:-2, :-2],
            ]  # fmt: skip
            neighbours = sum(q.astype(np.int32) for q in p)
            ring = p + [p[0]]
            transitions = sum(
                ((ring[i] == 0) & (ring[i + 1] == 1)).astype(np.int32) for i in range(8)
            )
            if step == 0:
                c1, c2 = p[0] * p[2] * p[4], p[2] * p[4] * p[6]
            else:
                c1, c2 = p[0] * p[2] * p[6], p[0] * p[4] * p[6]
            centre = img[1:-1, 1:-1]
            remove = (
                (centre == 1)
                & (neighbours >= 2)
                & (neighbours <= 6)
                & (transitions == 1)
                & (c1 == 0)
                & (c2 == 0)
            )
            if remove.any():
                centre[remove] = 0
                changed = True
        if not changed:
            return img[1:-1, 1:-1].astype(bool)


def stroke_width(mask: np.ndarray) -> float:
    """Mean line width of a line mask: ink pixels / skeleton length (0 for no lines)."""
    skeleton = int(thin(mask).sum())
    return float(mask.sum()) / skeleton if skeleton else 0.0


def measure(edge_map: np.ndarray) -> EdgeMapStats:
    """Stroke width, extent (longer bbox side / frame side) and ink share of an edge map."""
    mask, _ = line_mask(edge_map)
    if not mask.any():
        return EdgeMapStats(0.0, 0.0, 0.0)
    ys, xs = np.nonzero(mask)
    side = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
    return EdgeMapStats(stroke_width(mask), side / max(edge_map.shape), float(mask.mean()))


def _into_frame(mask: np.ndarray, place: Placement, width_in_frame: float) -> np.ndarray:
    """The placement's square of ``mask`` resampled to FRAME² (lines kept at least a pixel
    wide: thin lines are thickened before shrinking so area averaging cannot erase them).

    Shape: (H, W) bool → (FRAME, FRAME) bool.
    """
    scale = FRAME / place.side
    m = mask.astype(np.uint8)
    if width_in_frame < 1.5:
        k = int(np.ceil(1.5 / scale))
        m = cv2.dilate(m, np.ones((k, k), np.uint8))
    left, top, side = round(place.left), round(place.top), max(1, round(place.side))
    pad = max(0, -left, -top, left + side - m.shape[1], top + side - m.shape[0])
    m = cv2.copyMakeBorder(m, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    crop = m[top + pad : top + pad + side, left + pad : left + pad + side].astype(np.float32)
    interp = cv2.INTER_AREA if side > FRAME else cv2.INTER_LINEAR
    return cv2.resize(crop, (FRAME, FRAME), interpolation=interp) >= 0.5


@dataclass(frozen=True)
class Placement:
    """Where the normalised square came from in the input: the square's top-left corner
    and side in input pixels (may extend past the input's border)."""

    left: float
    top: float
    side: float
    width: int
    height: int


def normalise_edges(grey: np.ndarray) -> tuple[np.ndarray, Placement, list[str]]:
    """A sketch (dark lines on light, any size/width) → a training-like 128² edge map.

    Shape: (H, W) uint8 → (128, 128) uint8 (dark lines on white), its placement in the
    input (to map results back to the input's size), notes. Raises ValueError when the
    image has no lines.
    """
    h, w = grey.shape
    mask, notes = line_mask(grey)
    if not mask.any():
        raise ValueError("no lines found (expected dark lines on a light background)")
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    width_in = stroke_width(mask)
    inset = max(0.0, (width_in - 1) / 2)  # the skeleton runs along the lines' middle
    side = max(max(y1 - y0, x1 - x0) - 2 * inset, 1) / EXTENT
    place = Placement((x0 + x1) / 2 - side / 2, (y0 + y1) / 2 - side / 2, side, w, h)
    notes.append(
        f"cropped to the lines ({x1 - x0}×{y1 - y0} px at {x0},{y0}) and padded to a "
        f"{side:.0f}² square (lines fill {EXTENT:.0%} of it)"
    )
    scale = FRAME / side
    lines = _into_frame(mask, place, width_in * scale)
    skeleton = thin(lines)
    out = skeleton
    if LINE_WIDTH > 1:
        kernel = np.ones((LINE_WIDTH, LINE_WIDTH), np.uint8)
        out = cv2.dilate(skeleton.astype(np.uint8), kernel) > 0
    notes.append(
        f"resized ×{scale:.2f} to {FRAME}²; lines {width_in * scale:.1f} px wide there, "
        f"thinned to a 1-px skeleton and drawn {LINE_WIDTH} px wide (the training edge maps')"
    )
    return np.where(out, 0, 255).astype(np.uint8), place, notes
