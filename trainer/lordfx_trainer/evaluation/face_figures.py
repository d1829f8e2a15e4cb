"""Figures of ``lordfx eval-faces`` in RUN_DIR/eval_faces/: the held-out swap grid, the
identity pairs, the CelebA-protocol examples and a landmark overlay to check the fixed box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from lordfx_trainer.evaluation import figures
from lordfx_trainer.evaluation.runs import Codes, generate
from lordfx_trainer.evaluation.transfer import Pairs
from lordfx_trainer.grids import save_grid, to_uint8

OVERLAY_COLUMNS = 6


def write(
    out_dir: Path,
    generator: nn.Module,
    images: torch.Tensor,
    class_ids: np.ndarray,
    codes: Codes,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    protocol: tuple[np.ndarray, np.ndarray, np.ndarray],
    dlib_data: tuple,
    grid_size: int,
    seed: int,
) -> dict[str, str]:
    """All figures; returns name → path relative to the run directory.

    ``pairs`` = (FACE, REF, FACE') indices (FACE' -1 where none); ``protocol`` = (a, content,
    b); ``dlib_data`` = (DlibFaces, held-out landmarks, output landmarks of the pairs).
    """
    n = grid_size
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        # rows: identity source (one per held-out identity), columns: content source
        "swap_grid": figures.swap_grid_figure(out_dir, generator, images, class_ids, codes, n, seed)
    }
    face, ref, other = pairs
    keep = np.flatnonzero(other >= 0)[:n]
    # rows: FACE (identity), REF (content), output, FACE' (another image of FACE's person)
    identity = Pairs(face[keep], ref[keep], other[keep], 0)
    paths["identity_pairs"] = _renamed(
        figures.examples_figure(out_dir, generator, images, codes, identity, n),
        "identity_pairs.png",
    )
    # rows: a (identity), nearest-landmark content image, output, b (target)
    a, content, b = protocol
    order = np.random.default_rng(seed).permutation(len(b))[:n]
    proto = Pairs(a[order], content[order], b[order], 0)
    paths["protocol_examples"] = _renamed(
        figures.examples_figure(out_dir, generator, images, codes, proto, n),
        "protocol_examples.png",
    )
    paths["landmarks"] = landmark_overlay(
        out_dir / "landmarks.png", generator, images, codes, face, ref, dlib_data
    )
    return {name: str(path.relative_to(out_dir.parent)) for name, path in paths.items()}


def _renamed(path: Path, name: str) -> Path:
    return path.replace(path.with_name(name))


@torch.no_grad()
def landmark_overlay(
    path: Path,
    generator: nn.Module,
    images: torch.Tensor,
    codes: Codes,
    face: np.ndarray,
    ref: np.ndarray,
    dlib_data: tuple,
) -> Path:
    """Rows REF, output, FACE of the first pairs at dlib's resolution, with the fixed face box
    (green) and the 68 landmarks (red; eye corners 36/45 blue)."""
    faces, lm_real, lm_out = dlib_data
    k = min(OVERLAY_COLUMNS, len(face))
    f, r = torch.from_numpy(face[:k]), torch.from_numpy(ref[:k])
    out = to_uint8(generate(generator, codes.content_codes[r], codes.class_codes[f], k))
    rows = [
        (faces.upsample(to_uint8(images[r])), lm_real[ref[:k]]),
        (faces.upsample(out), lm_out[:k]),
        (faces.upsample(to_uint8(images[f])), lm_real[face[:k]]),
    ]
    size, pad = faces.size, 4
    grid = Image.new("RGB", (k * (size + pad) + pad, len(rows) * (size + pad) + pad), "white")
    box = faces.box.pixels(size)
    for i, (tiles, landmarks) in enumerate(rows):
        for j in range(k):
            tile = Image.fromarray(tiles[j])
            draw = ImageDraw.Draw(tile)
            draw.rectangle(box, outline=(0, 200, 0))
            for p, (x, y) in enumerate(landmarks[j] * size):
                colour = (0, 80, 255) if p in (36, 45) else (255, 0, 0)
                draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=colour)
            grid.paste(tile, (pad + j * (size + pad), pad + i * (size + pad)))
    return save_grid(np.asarray(grid), path)
