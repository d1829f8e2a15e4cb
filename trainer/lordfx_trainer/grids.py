"""Figures written into the run directory: the class × content swap grid and loss curves."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lordfx.imageio import write_image_atomic


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Shape: (B, C, H, W) float [0, 1] → (B, H, W, 3) uint8 (grey tiled to RGB)."""
    x = images.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    x = x.permute(0, 2, 3, 1).numpy()
    return np.repeat(x, 3, axis=3) if x.shape[3] == 1 else x


@torch.no_grad()
def swap_grid(
    transfer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    class_keys: torch.Tensor,
    content_keys: torch.Tensor,
    class_images: torch.Tensor,
    content_images: torch.Tensor,
    pad: int = 2,
) -> np.ndarray:
    """The paper's Figure-2 layout: row i takes the class of ``class_images[i]`` (shown in
    the first column), column j the content of ``content_images[j]`` (shown in the first row).

    ``transfer(class_keys, content_keys)`` generates a paired batch; keys are images for the
    encoders (stage 2) or code indices (stage 1).
    Shape: class_images (R, C, H, W), content_images (K, C, H, W) → uint8 grid (H', W', 3).
    """
    r, k = class_images.shape[0], content_images.shape[0]
    h, w = class_images.shape[2:]
    out = transfer(class_keys.repeat_interleave(k, dim=0), torch.cat([content_keys] * r))
    out = to_uint8(out).reshape(r, k, h, w, 3)
    grid = np.full(((r + 1) * (h + pad) + pad, (k + 1) * (w + pad) + pad, 3), 255, np.uint8)

    def put(i: int, j: int, tile: np.ndarray) -> None:
        y, x = pad + i * (h + pad), pad + j * (w + pad)
        grid[y : y + h, x : x + w] = tile

    for j, tile in enumerate(to_uint8(content_images)):
        put(0, j + 1, tile)
    for i, tile in enumerate(to_uint8(class_images)):
        put(i + 1, 0, tile)
        for j in range(k):
            put(i + 1, j + 1, out[i, j])
    return grid


def save_grid(grid: np.ndarray, path: Path, scale: int = 1) -> Path:
    image = Image.fromarray(grid)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    return write_image_atomic(image, path)


def pick_grid_indices(class_ids: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` image indices from ``n`` different classes (fewer if there are fewer classes)."""
    rng = np.random.default_rng(seed)
    classes = rng.permutation(np.unique(class_ids))[:n]
    return np.array([rng.choice(np.flatnonzero(class_ids == c)) for c in classes])


def plot_losses(metrics_path: Path, out: Path) -> Path | None:
    """Loss curves of both stages from metrics.jsonl (log scale)."""
    if not metrics_path.exists():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    stages = [s for s in ("latent", "amortized") if any(r["stage"] == s for r in rows)]
    if not stages:
        return None
    fig, axes = plt.subplots(1, len(stages), figsize=(6 * len(stages), 4), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        sel = [r for r in rows if r["stage"] == stage]
        keys = [
            k
            for k in sel[0]
            if k not in {"stage", "epoch", "step", "lr", "images_per_s", "saturated"}
        ]
        for key in keys:
            ax.plot([r["step"] for r in sel], [r[key] for r in sel], label=key)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"stage: {stage}")
        ax.legend()
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(out)
    return out


def plot_curve(curve_path: Path, out: Path) -> Path | None:
    """Transfer LPIPS over training hours from curve.jsonl (lordfx_trainer.curve).

    Stage 1 points score pairs of training classes, stage 2 points held-out ones; the
    dashed lines are copying the class image on the same pairs. Stage 2's clock starts where
    stage 1's last point ends. Stage 1's content use (reconstruction with the image's own
    content code and with another's) is drawn too, so runs without content labels have a curve.
    """
    if not curve_path.exists():
        return None
    rows = [json.loads(line) for line in curve_path.read_text().splitlines() if line]
    series = [("latent", "train", "training classes"), ("amortized", "heldout", "held-out classes")]
    stage1_end = max((r["elapsed_s"] for r in rows if r["stage"] == "latent"), default=0.0)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for stage, part, label in series:
        sel = [r for r in rows if r["stage"] == stage and f"{part}_lpips_alex" in r]
        if not sel:
            continue
        offset = stage1_end if stage == "amortized" else 0.0
        hours = [(r["elapsed_s"] + offset) / 3600 for r in sel]
        line = ax.plot(hours, [r[f"{part}_lpips_alex"] for r in sel], "o-", label=label)[0]
        copy = sel[-1][f"{part}_copy_class_lpips_alex"]
        ax.axhline(copy, color=line.get_color(), linestyle="--", label=f"copy class ({part})")
        drawn = True
    use = [r for r in rows if r["stage"] == "latent" and "recon_lpips_alex" in r]
    if use:
        hours = [r["elapsed_s"] / 3600 for r in use]
        for key, label, style in (
            ("recon_lpips_alex", "reconstruction, own content", "s-"),
            ("shuffled_content_lpips_alex", "reconstruction, another's content", "s:"),
        ):
            ax.plot(hours, [r[key] for r in use], style, label=label)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("training hours (stage 1, then stage 2)")
    ax.set_ylabel("LPIPS alex ↓")
    ax.legend()
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(out)
    return out
