"""The shoes editor: ``lordfx.load("shoes")`` returns one.

LORD as a domain translator (paper §4, Figure 5): the classes are the shoe photos' style
clusters plus one class of edge maps; the content code carries the shape. So

- from_edges(e, style=ref) = G(E_c(e), E_y(ref))  (paper Eq. 9 with e as content image),
- from_edges(e, cluster=k) = G(E_c(e), y_k)       (y_k: the learned code of style-k),
- to_edges(x)              = G(E_c(x), y_edges)   (the edge class's learned code).

Results have the input's size (:mod:`lordfx_shoes.preprocess`).
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

import torch
from PIL import Image

from lordfx.api import Editor, ImageLike
from lordfx.errors import InputError, LordfxError, UsageError
from lordfx.imageio import read_image
from lordfx.preprocess import tensor_to_pil

log = logging.getLogger("lordfx.shoes")
STYLES_FILE = "styles.safetensors"
EDGES_CLASS = "edges"


class ShoesEditor(Editor):
    """:class:`lordfx.api.Editor` plus :meth:`from_edges`, :meth:`to_edges`,
    :meth:`variations` and :attr:`styles`."""

    @cached_property
    def styles(self) -> list[dict[str, Any]]:
        """The style clusters the model was trained on: id, name, count, mean_rgb."""
        styles = self.bundle.info.get("styles")
        if not styles:
            raise LordfxError(
                f"{self.bundle.path}: the bundle has no style list (not a shoes model?)"
            )
        return list(styles)

    def _class_index(self, name: str) -> int:
        names = self.bundle.class_names
        if name not in names or self.bundle.class_codes is None:
            raise LordfxError(f"{self.bundle.path}: the bundle has no learned code for {name!r}")
        return names.index(name)

    def cluster_code(self, cluster: int) -> torch.Tensor:
        """The learned stage-1 code of style cluster ``cluster``. Shape: → (1, class_dim)."""
        if not 0 <= cluster < len(self.styles):
            raise UsageError(
                f"no style cluster {cluster}; valid: 0-{len(self.styles) - 1} (see `lordfx shoes styles`)"
            )
        return self.bundle.class_codes[self._class_index(self.styles[cluster]["name"])][None]

    @torch.inference_mode()
    def style_code(self, ref: ImageLike) -> torch.Tensor:
        """E_y of a reference shoe photo. Shape: → (1, class_dim)."""
        x, _, _ = self._load(ref, self.pre)
        return self.model.encode_class(x)

    def _edges(self, edges: ImageLike) -> tuple[torch.Tensor, Any]:
        """Normalised edge map on the device and its placement; notes logged (``-v``)."""
        name = edges if isinstance(edges, Image.Image) else str(edges)
        photo = edges if isinstance(edges, Image.Image) else read_image(edges)
        try:
            x, place, notes = self.pre.edges_to_model(photo)
        except InputError as exc:
            raise InputError(
                name if not isinstance(edges, Image.Image) else "image", exc.problem
            ) from None
        for note in notes:
            log.debug("%s: %s", name if isinstance(name, str) else "edges", note)
        return x[None].to(self.device), place

    def _code(self, style: ImageLike | torch.Tensor | None, cluster: int | None) -> torch.Tensor:
        if (style is None) == (cluster is None):
            raise UsageError("give exactly one of style (a reference photo) and cluster")
        if cluster is not None:
            return self.cluster_code(cluster)
        return style if isinstance(style, torch.Tensor) else self.style_code(style)

    @torch.inference_mode()
    def from_edges(
        self,
        edges: ImageLike,
        style: ImageLike | torch.Tensor | None = None,
        cluster: int | None = None,
    ) -> Image.Image:
        """A shoe with the shape of ``edges`` (any sketch: normalised first) in the style of
        ``style`` (a photo, or a class code from :meth:`style_code`) or of style cluster
        ``cluster``: G(E_c(edges), code).

        Shape: edges (W, H) → (W, H) image (the shoe where the sketch's lines were).
        """
        code = self._code(style, cluster)
        x, place = self._edges(edges)
        return self.pre.from_model(self.model.decode(self.model.encode_content(x), code)[0], place)

    @torch.inference_mode()
    def variations(self, edges: ImageLike, n: int, tile: int = 128) -> Image.Image:
        """The normalised edge map followed by its shoe in the first ``n`` style clusters
        (largest first), one row (paper Figure 5, upper row). Shape: → (tile·(n+1), tile)."""
        if not 1 <= n <= len(self.styles):
            raise UsageError(f"variations must be in 1-{len(self.styles)}, got {n}")
        x, _ = self._edges(edges)
        codes = torch.cat([self.cluster_code(k) for k in range(n)])
        content = self.model.encode_content(x).expand(n, -1)
        tiles = [x[0], *self.model.decode(content, codes)]
        row = Image.new("RGB", (tile * len(tiles), tile), (255, 255, 255))
        for i, t in enumerate(tiles):
            row.paste(
                tensor_to_pil(t).resize((tile, tile), Image.Resampling.LANCZOS), (i * tile, 0)
            )
        return row

    @torch.inference_mode()
    def to_edges(self, photo: ImageLike) -> Image.Image:
        """The edge map of a shoe photo: G(E_c(photo), y_edges). Shape: (W, H) → (W, H)."""
        x, place, _ = self._load(photo, self.pre)
        code = self.bundle.class_codes[self._class_index(EDGES_CLASS)][None]
        return self.pre.from_model(self.model.decode(self.model.encode_content(x), code)[0], place)
