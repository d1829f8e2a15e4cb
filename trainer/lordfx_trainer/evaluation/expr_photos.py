"""A contact sheet of every expression on photos outside the training data.

Each photo goes through the path ``lordfx expression`` uses: the expressions plugin's
preprocessor at the bundle's size and channels, :meth:`lordfx.api.Editor.set_expression` at
strength 1, with each render ("warp": the photo's own pixels moved, "generate": the model's
face pasted). The sheet shows the face region of each result (1.8 Haar-box widths around
the detected face, resized to ``tile`` px): rows = photo × render, columns = the input and
the seven targets. Only public photos belong in a committed sheet (DESIGN: never dataset
people).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lordfx.errors import InputError
from lordfx.imageio import IMAGE_SUFFIXES, read_image

log = logging.getLogger("lordfx.eval")
RENDERS = ("warp", "generate")
VIEW_SCALE = 1.8  # shown region: this many Haar-box widths around the face


def photo_files(paths: Sequence[Path]) -> list[Path]:
    """Files as given, folders expanded to their image files (sorted)."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            out.append(p)
    return out


def face_view(photo: Image.Image, box: Any, tile: int) -> np.ndarray:
    """The square around a detected face, resized. Shape: → (tile, tile, 3) uint8."""
    cx, cy, side = box.x + box.w / 2, box.y + box.h / 2, VIEW_SCALE * box.w
    region = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    view = photo.convert("RGB").crop(tuple(round(v) for v in region))
    return np.asarray(view.resize((tile, tile), Image.Resampling.LANCZOS))


def photo_sheet(
    bundle_dir: Path,
    photos: Sequence[Path],
    out: Path,
    make_preprocessor: Callable[[int], Any] | None = None,
    renders: Sequence[str] = RENDERS,
    tile: int = 128,
    pad: int = 4,
) -> dict[str, Any]:
    """Write the sheet to ``out`` (PNG, atomic); returns a JSON-able record with ``figure``."""
    from lordfx.api import Editor
    from lordfx.bundle import load_bundle
    from lordfx_trainer.grids import save_grid

    bundle = load_bundle(bundle_dir)
    arch = bundle.model.cfg
    if make_preprocessor is not None:
        pre = make_preprocessor(arch.image_size)
    else:
        from lordfx_expressions.preprocess import make_preprocessor as plugin_preprocessor

        pre = plugin_preprocessor(arch.image_size, channels=arch.channels)
    editor = Editor(bundle, pre)
    names = list(bundle.class_names)
    rows, record, failed = [], [], {}
    for path in photo_files(photos):
        try:
            photo = read_image(path)
            box = pre.detect(photo)[pre.choose(pre.detect(photo))]
        except InputError as exc:
            failed[str(path)] = exc.problem
            continue
        for render in renders:
            tiles = [face_view(photo, box, tile)]
            for name in names:
                edited = editor.set_expression(photo, name, render=render)
                tiles.append(face_view(edited, box, tile))
            rows.append(tiles)
            record.append({"photo": str(path), "render": render})
    if not rows:
        return {"skipped": "no face in any --photo", "failed": failed}
    grid = np.full(
        (len(rows) * (tile + pad) + pad, (len(names) + 1) * (tile + pad) + pad, 3), 255, np.uint8
    )
    for i, tiles in enumerate(rows):
        for j, t in enumerate(tiles):
            y, x = pad + i * (tile + pad), pad + j * (tile + pad)
            grid[y : y + tile, x : x + tile] = t
    path = save_grid(grid, out, scale=1)
    return {
        "figure": str(path),
        "rows": record,
        "columns": ["input", *names],
        "strength": 1.0,
        "failed": failed,
    }
