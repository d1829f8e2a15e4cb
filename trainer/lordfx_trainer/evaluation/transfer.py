"""Content-transfer error on held-out classes with ground truth (paper Table 1 protocol).

For a pair (i, j) of held-out images of different classes the transfer x(i←j) =
G(E_c(x_j), E_y(x_i)) should look like the real image of i's class with j's content
labels (e.g. Cars3D: the same car model at j's azimuth and elevation). The trivial
baselines of DESIGN §3 (copy the class image, copy the content image, the mean image)
are scored on the *same* pairs, so a model number always has its floor beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

log = logging.getLogger("lordfx.eval")

#: (class indices, content indices) → transferred images, Shape: (B,), (B,) → (B, C, H, W).
TransferFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
METRICS = ("lpips_alex", "lpips_vgg", "l1", "ssim")
SSIM_WINDOW = 11


@dataclass(frozen=True)
class Pairs:
    """Seeded transfer pairs with their ground-truth image.

    Shape: class_idx, content_idx, target_idx (P,) int64 indices into the held-out images;
    ``target_idx[p]`` has the class of ``class_idx[p]`` and the content of ``content_idx[p]``.
    """

    class_idx: np.ndarray
    content_idx: np.ndarray
    target_idx: np.ndarray
    num_without_target: int  # drawn pairs skipped because no ground-truth image exists

    def __len__(self) -> int:
        return int(self.class_idx.shape[0])


def ground_truth_table(class_ids: np.ndarray, content_labels: np.ndarray) -> dict[tuple, int]:
    """(class id, *content labels) → index of the first image with them.

    Shape: class_ids (N,), content_labels (N, K). The first image is taken when a
    (class, content) cell has several (e.g. repeated renders), so lookups are deterministic.
    """
    table: dict[tuple, int] = {}
    for index in range(len(class_ids) - 1, -1, -1):  # backwards: the first one wins
        table[(int(class_ids[index]), *map(int, content_labels[index]))] = index
    return table


def sample_pairs(
    class_ids: np.ndarray,
    content_labels: np.ndarray,
    num_pairs: int,
    seed: int,
    max_rounds: int = 50,
) -> Pairs:
    """``num_pairs`` pairs (i, j) drawn uniformly with replacement by
    ``numpy.random.default_rng(seed)``, i and j of different classes, with ground truth.

    Fewer pairs come back only if ``max_rounds`` draws of ``2 * num_pairs`` candidates
    found too few with a ground-truth image (then the count says so).
    Shape: class_ids (N,), content_labels (N, K) → :class:`Pairs`.
    """
    if content_labels is None or len(np.unique(class_ids)) < 2:
        raise ValueError("pairs need content labels and at least two classes")
    table = ground_truth_table(class_ids, content_labels)
    rng = np.random.default_rng(seed)
    n, chosen, missing = len(class_ids), [], 0
    for _ in range(max_rounds):
        i, j = rng.integers(n, size=2 * num_pairs), rng.integers(n, size=2 * num_pairs)
        other = class_ids[i] != class_ids[j]
        for a, b in zip(i[other], j[other], strict=True):
            target = table.get((int(class_ids[a]), *map(int, content_labels[b])))
            if target is None:
                missing += 1
                continue
            chosen.append((a, b, target))
            if len(chosen) == num_pairs:
                break
        if len(chosen) == num_pairs:
            break
    arr = np.asarray(chosen, dtype=np.int64).reshape(-1, 3)
    return Pairs(arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy(), missing)


def ssim_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM (11×11 Gaussian window, kornia) per image. Shape: (B, C, H, W) ×2 → (B,)."""
    import kornia

    return kornia.metrics.ssim(a.float(), b.float(), SSIM_WINDOW).flatten(1).mean(1)


@torch.no_grad()
def pair_metrics(
    pred: torch.Tensor, target: torch.Tensor, lpips_models: dict[str, nn.Module]
) -> dict[str, torch.Tensor]:
    """Per-image LPIPS (one per model in ``lpips_models``: "alex", "vgg"), L1 and SSIM.

    Shape: pred, target (B, C, H, W) in [0, 1], C in {1, 3} (grey is tiled for LPIPS) →
    each value (B,).
    """
    from lordfx_trainer.lpips_metric import lpips_distance

    pred, target = pred.float().clamp(0, 1), target.float()
    out = {f"lpips_{net}": lpips_distance(m, pred, target) for net, m in lpips_models.items()}
    out["l1"] = (pred - target).abs().flatten(1).mean(1)
    out["ssim"] = ssim_per_image(pred, target)
    return out


def baselines(images: torch.Tensor) -> dict[str, TransferFn]:
    """DESIGN §3's trivial transfers: copy x_i, copy x_j, the mean held-out image.

    Shape: images (N, C, H, W) in [0, 1].
    """
    mean = images.mean(dim=0, keepdim=True)
    return {
        "copy_class": lambda i, j: images[i],
        "copy_content": lambda i, j: images[j],
        "mean_image": lambda i, j: mean.expand(len(i), -1, -1, -1),
    }


def score_transfers(
    methods: dict[str, TransferFn],
    images: torch.Tensor,
    pairs: Pairs,
    lpips_models: dict[str, nn.Module],
    batch_size: int = 256,
) -> dict[str, dict[str, np.ndarray]]:
    """Per-pair metrics of every method on the same ``pairs``: method → metric → (P,).

    Shape: images (N, C, H, W) in [0, 1] on the compute device (targets come from it).
    """
    device = images.device
    scores: dict[str, dict[str, list[np.ndarray]]] = {m: {} for m in methods}
    for start in range(0, len(pairs), batch_size):
        sl = slice(start, start + batch_size)
        i = torch.from_numpy(pairs.class_idx[sl]).to(device)
        j = torch.from_numpy(pairs.content_idx[sl]).to(device)
        target = images[torch.from_numpy(pairs.target_idx[sl]).to(device)]
        for name, fn in methods.items():
            for metric, values in pair_metrics(fn(i, j), target, lpips_models).items():
                scores[name].setdefault(metric, []).append(values.cpu().numpy())
    return {m: {k: np.concatenate(v) for k, v in s.items()} for m, s in scores.items()}


def summarize(scores: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, dict]]:
    """method → metric → {"mean", "std"} (population std over pairs)."""
    return {
        method: {
            metric: {"mean": float(np.mean(v)), "std": float(np.std(v))}
            for metric, v in values.items()
        }
        for method, values in scores.items()
    }
