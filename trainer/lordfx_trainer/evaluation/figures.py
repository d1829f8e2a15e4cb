"""Evaluation figures in RUN_DIR/eval/: the swap grid and transfer examples vs ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from lordfx_trainer.evaluation.runs import Codes, generate
from lordfx_trainer.evaluation.transfer import Pairs
from lordfx_trainer.grids import pick_grid_indices, save_grid, swap_grid, to_uint8

FIGURE_DIR = "eval"
GRID_SCALE = 2


def write_figures(
    out_dir: Path,
    generator: nn.Module,
    images: torch.Tensor,
    class_ids: np.ndarray,
    codes: Codes,
    pairs: Pairs | None,
    grid_size: int,
    seed: int,
) -> dict[str, str]:
    """Write the figures; returns name → path relative to the run directory.

    Shape: images (N, C, H, W) in [0, 1]; class_ids (N,); codes with N rows.
    """
    paths = {
        "swap_grid": swap_grid_figure(out_dir, generator, images, class_ids, codes, grid_size, seed)
    }
    if pairs is not None and len(pairs):
        paths["transfer_examples"] = examples_figure(
            out_dir, generator, images, codes, pairs, grid_size
        )
    return {name: str(path.relative_to(out_dir.parent)) for name, path in paths.items()}


def swap_grid_figure(
    out_dir: Path,
    generator: nn.Module,
    images: torch.Tensor,
    class_ids: np.ndarray,
    codes: Codes,
    grid_size: int,
    seed: int,
) -> Path:
    """Paper Figure 2 layout: row = class source (one image per class), column = content
    source (any images, so a split with few classes still shows many contents); both
    seeded. Shape: images (N, C, H, W), class_ids (N,)."""
    rows = torch.from_numpy(pick_grid_indices(class_ids, grid_size, seed)).to(images.device)
    picked = np.random.default_rng(seed).choice(
        len(class_ids), min(grid_size, len(class_ids)), replace=False
    )
    cols = torch.from_numpy(np.sort(picked)).to(images.device)

    def transfer(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return generate(generator, codes.content_codes[cols], codes.class_codes[rows], len(rows))

    grid = swap_grid(transfer, rows, cols, images[rows], images[cols])
    return save_grid(grid, out_dir / "swap_grid.png", scale=GRID_SCALE)


@torch.no_grad()
def examples_figure(
    out_dir: Path,
    generator: nn.Module,
    images: torch.Tensor,
    codes: Codes,
    pairs: Pairs,
    num: int,
    pad: int = 2,
) -> Path:
    """The first ``num`` evaluation pairs as columns; rows: class image x_i, content image
    x_j, transfer x(i←j), ground truth. Shape: images (N, C, H, W) in [0, 1]."""
    device = images.device
    i = torch.from_numpy(pairs.class_idx[:num]).to(device)
    j = torch.from_numpy(pairs.content_idx[:num]).to(device)
    t = torch.from_numpy(pairs.target_idx[:num]).to(device)
    out = generate(generator, codes.content_codes[j], codes.class_codes[i], num)
    rows = [to_uint8(x) for x in (images[i], images[j], out, images[t])]
    h, w = rows[0].shape[1:3]
    grid = np.full((len(rows) * (h + pad) + pad, len(i) * (w + pad) + pad, 3), 255, np.uint8)
    for r, tiles in enumerate(rows):
        for c, tile in enumerate(tiles):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[y : y + h, x : x + w] = tile
    return save_grid(grid, out_dir / "transfer_examples.png", scale=GRID_SCALE)
