"""Domain preprocessing: photo → model input, and model output → photo.

The default preprocessor centre-crops to a square and resizes to the domain's size; domains
with their own framing (faces: detect + align + paste back) provide their own class with the
same two methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image


def pil_to_tensor(image: Image.Image, channels: int) -> torch.Tensor:
    """Shape: PIL image → (C, H, W) float in [0, 1]."""
    arr = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255)


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """Shape: (C, H, W) float in [0, 1] → PIL image (L or RGB)."""
    arr = x.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    arr = arr.permute(1, 2, 0).numpy()
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)


@dataclass(frozen=True)
class ResizePreprocessor:
    """Centre square crop + resize to ``image_size``; results come back at model size."""

    image_size: int
    channels: int

    def to_model(self, image: Image.Image) -> tuple[torch.Tensor, Any]:
        """Shape: PIL image → ((C, S, S) float in [0, 1], context for :meth:`from_model`)."""
        w, h = image.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        crop = image.crop((left, top, left + side, top + side))
        crop = crop.resize(
            (self.image_size, self.image_size), Image.Resampling.LANCZOS, reducing_gap=3.0
        )
        return pil_to_tensor(crop, self.channels), None

    def from_model(
        self, generated: torch.Tensor, context: Any, original: Image.Image
    ) -> Image.Image:
        """The generated image itself (generic domains have no photo to paste into)."""
        return tensor_to_pil(generated)
