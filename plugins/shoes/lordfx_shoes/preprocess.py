"""Shoe photos and edge maps → model input, and results back at the input's size.

Size policy: every result has the input's size. The input is padded to a square (white, the
product photos' background) or, for a sketch, cropped to its lines and padded
(:func:`lordfx_shoes.edges.normalise_edges`); the model's S×S output is scaled to that
square and pasted back where the square lies in the input, on white.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from PIL import Image

from lordfx.errors import InputError
from lordfx.preprocess import pil_to_tensor
from lordfx_shoes.edges import FRAME, Placement, normalise_edges


@dataclass(frozen=True)
class ShoePreprocessor:
    """Photos: white pad to a square, resize. Edge maps: :func:`normalise_edges`."""

    image_size: int

    def to_model(self, image: Image.Image) -> tuple[torch.Tensor, Placement]:
        """A photo. Shape: PIL (W, H) → ((3, S, S) float in [0, 1], its placement)."""
        w, h = image.size
        side = max(w, h)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        left, top = (side - w) // 2, (side - h) // 2
        square.paste(image.convert("RGB"), (left, top))
        small = square.resize(
            (self.image_size, self.image_size), Image.Resampling.LANCZOS, reducing_gap=3.0
        )
        return pil_to_tensor(small, 3), Placement(-left, -top, side, w, h)

    def edges_to_model(self, image: Image.Image) -> tuple[torch.Tensor, Placement, list[str]]:
        """A sketch or edge map. Shape: PIL (W, H) → ((3, S, S) float, placement, notes)."""
        grey = np.asarray(image.convert("L"), dtype=np.uint8)
        try:
            frame, place, notes = normalise_edges(grey)
        except ValueError as exc:
            raise InputError("image", str(exc)) from None
        small = cv2.resize(frame, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
        if self.image_size != FRAME:
            notes.append(f"resized {FRAME}² → {self.image_size}² (INTER_AREA, as in training)")
        x = torch.from_numpy(small).float().div_(255)[None].expand(3, -1, -1).contiguous()
        return x, place, notes

    def from_model(
        self, generated: torch.Tensor, context: Placement, original: Image.Image | None = None
    ) -> Image.Image:
        """The S×S result scaled to the placement's square and pasted on a white canvas of
        the input's size. Shape: (3, S, S) in [0, 1] → PIL (W, H)."""
        arr = generated.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
        arr = arr.permute(1, 2, 0).cpu().numpy()
        side = max(1, round(context.side))
        big = Image.fromarray(arr).resize((side, side), Image.Resampling.LANCZOS)
        canvas = Image.new("RGB", (context.width, context.height), (255, 255, 255))
        canvas.paste(big, (round(context.left), round(context.top)))
        return canvas


def make_preprocessor(image_size: int = 64) -> ShoePreprocessor:
    return ShoePreprocessor(image_size)
