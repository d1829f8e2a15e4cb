"""The cars editor: ``lordfx.load("cars")`` returns one.

Named views use the bundle's view bank (:mod:`lordfx_cars.views`):
view(x, a, e) = G(bank[a, e], E_y(x)), the transfer of paper Eq. 9 with the bank's mean
content code of view (a, e) in place of E_c of a second image; where(x) is the bank view
nearest to E_c(x).

Size policy: results come at the model's size (64² for the shipped Cars3D model), which is
what the model produces; ``size=N`` upscales them with Lanczos for display (no new detail).
"""

from __future__ import annotations

import logging
from functools import cached_property

import torch
from PIL import Image

from lordfx.api import Editor, ImageLike
from lordfx.errors import UsageError
from lordfx.preprocess import tensor_to_pil
from lordfx_cars.views import View, ViewBank

log = logging.getLogger("lordfx.cars")


def resize_for_display(image: Image.Image, size: int | None) -> Image.Image:
    """``image`` as is, or upscaled (or reduced) to size x size with Lanczos."""
    if size is None or image.size == (size, size):
        return image
    if size < 1:
        raise UsageError(f"size must be a positive number of pixels, got {size}")
    return image.resize((size, size), Image.Resampling.LANCZOS)


class CarsEditor(Editor):
    """:class:`lordfx.api.Editor` plus views by name: :meth:`view`, :meth:`turntable`,
    :meth:`where`."""

    @cached_property
    def views(self) -> ViewBank:
        """The bundle's view bank (an error naming the bundle when it has none)."""
        return ViewBank.from_bundle(self.bundle)

    def _class_and_content(self, image: ImageLike) -> tuple[torch.Tensor, torch.Tensor]:
        """Shape: one image → E_y(x) (1, class_dim), E_c(x) (1, content_dim)."""
        x, _, _ = self._load(image, self.pre)
        return self.model.encode_class(x), self.model.encode_content(x)

    @torch.inference_mode()
    def where(self, image: ImageLike) -> View:
        """The (azimuth, elevation) the model reads from ``image``: the bank view nearest to
        E_c(image). ``.azimuth``/``.elevation`` in degrees, ``.as_dict()`` for JSON."""
        _, content = self._class_and_content(image)
        return self.views.locate(content)[0]

    @torch.inference_mode()
    def render_views(
        self, image: ImageLike, views: list[View], size: int | None = None
    ) -> list[Image.Image]:
        """``image``'s car at each bank view: G(bank[v], E_y(image)), one batch."""
        class_code, _ = self._class_and_content(image)
        codes = self.views.codes[[v.index for v in views]].to(self.device)
        out = self.model.decode(codes, class_code.expand(len(views), -1))
        return [resize_for_display(tensor_to_pil(g), size) for g in out]

    def view(
        self, image: ImageLike, azimuth: float, elevation: float, size: int | None = None
    ) -> Image.Image:
        """``image``'s car seen from (azimuth, elevation) in degrees; the nearest view of the
        bank when that one is not in it (logged at INFO; see :meth:`ViewBank.nearest`).

        Shape: image (any size; centre square crop) → (S, S) image, S = model size or ``size``.
        """
        chosen, rounded = self.views.nearest(azimuth, elevation)
        if rounded:
            log.info(
                "no view at azimuth %s°, elevation %s°: using the nearest, %s",
                azimuth,
                elevation,
                chosen.label(),
            )
        return self.render_views(image, [chosen], size)[0]

    def turntable(
        self, image: ImageLike, elevation: float | None = None, size: int | None = None
    ) -> list[Image.Image]:
        """``image``'s car at every azimuth of the bank (24 for Cars3D), in azimuth order
        starting from the image's own view, at ``elevation`` (degrees, nearest bank value)
        or by default at the image's own elevation (:meth:`where`).

        Shape: image → list of (S, S) images, one per azimuth.
        """
        own = self.where(image)
        level = own if elevation is None else self.views.nearest(own.azimuth, elevation)[0]
        ring = self.views.ring(level.elevation_index, own.azimuth_index)
        return self.render_views(image, ring, size)
