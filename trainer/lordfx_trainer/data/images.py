"""Pixel helpers shared by the readers: one canonical resize/crop/channel conversion.

Every reader funnels its pixels through :func:`to_canonical`, so all datasets agree on how
an image becomes (S, S, C) uint8: centre square crop, ``cv2.INTER_AREA`` when shrinking
(it averages, so no aliasing), bilinear when enlarging, grey = ITU-R 601 luma
(0.299 R + 0.587 G + 0.114 B), grey -> RGB by tiling.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from lordfx.errors import InputError, UsageError
from lordfx.imageio import IMAGE_SUFFIXES, read_image

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_SUFFIXES", "check_size", "read_image_files", "to_canonical"]


def check_size(image_size: int, channels: int) -> None:
    """Refuse sizes no reader can produce (a usage error listing the valid choices)."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise UsageError(f"image_size must be a positive integer, got {image_size!r}")
    if channels not in (1, 3):
        raise UsageError(f"channels must be 1 (grey) or 3 (RGB), got {channels!r}")


def to_canonical(image: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """Centre-crop to a square, resize and convert to ``channels``.

    Shape: (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8 -> (S, S, C) uint8, S =
    ``image_size``. RGB order is assumed (an alpha channel is dropped).
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise ValueError(f"expected a uint8 (H, W[, C]) image, got {image.dtype} {image.shape}")
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[top : top + side, left : left + side]
    # Convert to grey before resizing (a third of the work); tile grey after resizing.
    if channels == 1 and image.ndim == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    if side != image_size:
        interp = cv2.INTER_AREA if side > image_size else cv2.INTER_LINEAR
        image = cv2.resize(
            np.ascontiguousarray(image), (image_size, image_size), interpolation=interp
        )
    if image.ndim == 2:
        image = image[:, :, None]
    if channels == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image)


def _load_one(path: Path, image_size: int, channels: int) -> np.ndarray | InputError:
    try:
        # PIL's "L" conversion is ITU-R 601-2 luma, the same weights as to_canonical.
        pil = read_image(path, "L" if channels == 1 else "RGB")
        return to_canonical(np.asarray(pil), image_size, channels)
    except InputError as exc:
        return exc


def read_image_files(
    paths: Sequence[Path],
    image_size: int,
    channels: int,
    *,
    skip_bad: bool = False,
    workers: int | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Decode ``paths`` into one canonical array; returns (images, indices of paths kept).

    A missing/corrupt file raises :class:`InputError` naming it, or is skipped with a
    logged warning when ``skip_bad``. Decoding runs in threads (PIL and OpenCV release the
    GIL), keeping file order.

    Shape: len(paths) = N -> images (M, S, S, C) uint8, M <= N.
    """
    workers = workers or min(8, os.cpu_count() or 1)
    out = np.empty((len(paths), image_size, image_size, channels), dtype=np.uint8)
    kept: list[int] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda p: _load_one(Path(p), image_size, channels), paths)
        for i, result in enumerate(results):
            if isinstance(result, InputError):
                if not skip_bad:
                    raise result
                logger.warning("skipping unreadable image %s", result)
                continue
            out[len(kept)] = result
            kept.append(i)
    return out[: len(kept)], kept


def is_image_file(path: Path) -> bool:
    """True for a visible file with a known image suffix."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
