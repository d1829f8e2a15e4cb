"""ComfyUI IMAGE tensors ↔ PIL images, and how two batches pair up.

A ComfyUI IMAGE is a float tensor (B, H, W, C) in [0, 1], C = 3 (RGB); lordfx's editing API
takes and returns PIL images, so each node converts at its edges and nowhere else.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_pils(images: torch.Tensor, name: str = "image") -> list[Image.Image]:
    """Shape: IMAGE (B, H, W, C) float in [0, 1], C in {1, 3, 4} → B RGB PIL images (H, W)."""
    if (
        not isinstance(images, torch.Tensor)
        or images.ndim != 4
        or images.shape[-1] not in (1, 3, 4)
    ):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name}: expected a ComfyUI IMAGE (B, H, W, 3) tensor, got {shape}")
    arr = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return [Image.fromarray(np.ascontiguousarray(a[:, :, :3])) for a in arr]


def to_image(pils: list[Image.Image]) -> torch.Tensor:
    """Shape: N PIL images of one size → IMAGE (N, H, W, 3) float in [0, 1] on the CPU."""
    sizes = {im.size for im in pils}
    if len(sizes) != 1:
        raise ValueError(f"results differ in size ({sorted(sizes)}); a batch needs one size")
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in pils])
    return torch.from_numpy(arr).float().div_(255)


def pair_batches(a: int, b: int, names: tuple[str, str]) -> list[tuple[int, int]]:
    """Index pairs of two batches: equal sizes pair up, a batch of 1 goes with every image
    of the other."""
    if a == b:
        return [(i, i) for i in range(a)]
    if b == 1:
        return [(i, 0) for i in range(a)]
    if a == 1:
        return [(0, j) for j in range(b)]
    raise ValueError(
        f"{names[0]} has {a} images and {names[1]} {b}: give equal batches or a batch of 1"
    )


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """``image`` at size x size (Lanczos) when ``size`` > 0, else as it is."""
    if size <= 0 or image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.LANCZOS)
