"""Expression translation, judged by a classifier: the paper's RaFD protocol on FER2013.

A LORD model with class = expression is asked to put each held-out test image x into every
expression t: x(t) = G(E_c(x), e_t), with e_t the learned stage-1 code of t (paper §3.2;
at strength α < 1 the class code is E_y(x) + α (e_t − E_y(x))). A CNN trained on real
FER2013 images (:mod:`.expr_classifier`) then says whether x(t) shows t. Every number comes
with its n and its chance level; the classifier's own accuracy on real held-out images is
the ceiling to read the translation accuracy against.

Baselines reported beside translation: ``copy_input`` (how often the classifier calls the
untouched input t; the score of a model that changes nothing) and ``reconstruction``
(G(E_c(x), E_y(x)) classified against x's true label: how much expression survives the
model at all).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lordfx.nets import AmortizedModel
from lordfx_trainer.grids import save_grid, to_uint8

log = logging.getLogger("lordfx.eval")
Classify = Callable[[torch.Tensor], np.ndarray]  # (B, C, S, S) in [0, 1] → (B,) class ids


def stratified_sample(class_ids: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At most ``n`` indices, as equal per class as the class sizes allow (small classes
    give all they have; the rest is shared by the others); seeded, sorted.

    Shape: class_ids (N,) → (min(n, N),) int64.
    """
    if n >= len(class_ids):
        return np.arange(len(class_ids), dtype=np.int64)
    rng = np.random.default_rng([seed, 3])
    classes, counts = np.unique(class_ids, return_counts=True)
    remaining, chosen = n, []
    for left, k in enumerate(np.argsort(counts, kind="stable")):
        take = min(int(counts[k]), remaining // (len(classes) - left))
        members = np.flatnonzero(class_ids == classes[k])
        chosen.append(rng.choice(members, take, replace=False))
        remaining -= take
    return np.sort(np.concatenate(chosen)).astype(np.int64)


@torch.no_grad()
def encode(
    model: AmortizedModel, images: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(E_c(x), E_y(x)) in batches. Shape: (N, C, S, S) → (N, content_dim), (N, class_dim)."""
    device = next(model.parameters()).device
    content, cls = [], []
    for x in images.split(batch_size):
        x = x.to(device)
        content.append(model.encode_content(x).float())
        cls.append(model.encode_class(x).float())
    return torch.cat(content), torch.cat(cls)


@torch.no_grad()
def translate(
    model: AmortizedModel,
    content: torch.Tensor,
    own_class: torch.Tensor,
    target_code: torch.Tensor,
    strength: float,
    batch_size: int,
) -> torch.Tensor:
    """G(c, E_y(x) + strength · (e_t − E_y(x))) for every row; strength 1 uses e_t itself.

    Shape: content (N, content_dim), own_class (N, class_dim), target_code (class_dim,)
    → (N, C, S, S) in [0, 1] on the CPU.
    """
    out = []
    for c, own in zip(content.split(batch_size), own_class.split(batch_size), strict=True):
        code = (
            target_code.expand_as(own) if strength == 1.0 else own + strength * (target_code - own)
        )
        out.append(model.decode(c, code).float().cpu())
    return torch.cat(out)


def translation_predictions(
    model: AmortizedModel,
    class_codes: torch.Tensor,
    images: torch.Tensor,
    classify: Classify,
    strength: float = 1.0,
    batch_size: int = 256,
) -> np.ndarray:
    """Classifier answers for x(t) of every image x and every target t.

    Shape: class_codes (K, class_dim), images (N, C, S, S) in [0, 1] → (N, K) int64.
    """
    cols = [
        classify(out)
        for _, out in translated_outputs(model, class_codes, images, strength, batch_size)
    ]
    return np.stack(cols, axis=1).astype(np.int64)


def translated_outputs(
    model: AmortizedModel,
    class_codes: torch.Tensor,
    images: torch.Tensor,
    strength: float = 1.0,
    batch_size: int = 256,
) -> Iterator[tuple[int, torch.Tensor]]:
    """(t, x(t) of every image) for each target t in turn (encoding the images once).

    Shape: class_codes (K, class_dim), images (N, C, S, S) in [0, 1] → K × (t, (N, C, S, S)).
    """
    content, own = encode(model, images, batch_size)
    codes = class_codes.to(content.device).float()
    for t in range(len(codes)):
        yield t, translate(model, content, own, codes[t], strength, batch_size)


def translation_report(
    predictions: np.ndarray,
    target_labels: Sequence[int],
    target_names: Sequence[str],
    source_labels: np.ndarray | None,
    num_labels: int,
) -> dict[str, Any]:
    """Per-target and mean accuracy that x(t) is classified t, beside chance 1/num_labels.

    ``other_sources`` counts only images whose own label is known and differs from t (the
    real edits; an image already showing t is easy). ``by_source`` is the full source ×
    target table. Labels of -1 are unknown.
    Shape: predictions (N, K) classifier ids; target_labels (K,); source_labels (N,) or None.
    """
    targets = np.asarray(target_labels)
    hit = predictions == targets[None, :]
    n = len(predictions)
    src = np.full(n, -1) if source_labels is None else np.asarray(source_labels)
    other = (src[:, None] >= 0) & (src[:, None] != targets[None, :])
    per_target = {
        name: {
            "accuracy": float(hit[:, t].mean()) if n else None,
            "n": n,
            "accuracy_other_sources": _mean(hit[other[:, t], t]),
            "n_other_sources": int(other[:, t].sum()),
        }
        for t, name in enumerate(target_names)
    }
    report = {
        "n_images": n,
        "n_outputs": int(hit.size),
        "mean_accuracy": float(hit.mean()) if n else None,
        "mean_accuracy_other_sources": _mean(hit[other]),
        "n_other_sources": int(other.sum()),
        "chance": 1.0 / num_labels,
        "per_target": per_target,
    }
    if source_labels is not None:
        report["by_source"] = {
            str(s): {name: _mean(hit[src == s, t]) for t, name in enumerate(target_names)}
            for s in np.unique(src[src >= 0])
        }
    return report


def copy_input_report(
    input_predictions: np.ndarray,
    target_labels: Sequence[int],
    target_names: Sequence[str],
    source_labels: np.ndarray | None,
) -> dict[str, Any]:
    """The "change nothing" baseline: how often the classifier already calls the input t.

    Shape: input_predictions (N,), target_labels (K,), source_labels (N,) or None.
    """
    src = np.full(len(input_predictions), -1) if source_labels is None else source_labels
    out = {}
    for t, name in zip(target_labels, target_names, strict=True):
        said_t = input_predictions == t
        other = (src >= 0) & (src != t)
        out[name] = {"rate": _mean(said_t), "rate_other_sources": _mean(said_t[other])}
    return out


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def name_labels(report: dict[str, Any], class_names: Sequence[str]) -> dict[str, Any]:
    """``by_source`` keys (classifier ids) → class names, for the JSON."""
    if "by_source" in report:
        report["by_source"] = {class_names[int(k)]: v for k, v in report["by_source"].items()}
    return report


@torch.no_grad()
def translation_grid(
    model: AmortizedModel,
    class_codes: torch.Tensor,
    images: torch.Tensor,
    path: Path,
    scale: int = 2,
    pad: int = 2,
) -> Path:
    """Rows = input images; columns = the input, then x(t) for every target t (strength 1).

    Shape: class_codes (K, class_dim), images (R, C, S, S) in [0, 1].
    """
    content, own = encode(model, images, len(images))
    codes = class_codes.to(content.device).float()
    columns = [images.cpu()] + [translate(model, content, own, c, 1.0, len(images)) for c in codes]
    tiles = [to_uint8(col) for col in columns]  # each (R, S, S, 3)
    r, s = len(images), images.shape[-1]
    grid = np.full((r * (s + pad) + pad, len(tiles) * (s + pad) + pad, 3), 255, np.uint8)
    for j, col in enumerate(tiles):
        for i, tile in enumerate(col):
            y, x = pad + i * (s + pad), pad + j * (s + pad)
            grid[y : y + s, x : x + s] = tile
    return save_grid(grid, path, scale=scale)


def grid_rows(class_ids: np.ndarray, num: int, seed: int) -> np.ndarray:
    """``num`` seeded indices, cycling through the classes so each shows up. Shape: (≤num,)."""
    rng = np.random.default_rng([seed, 5])
    pools = [list(rng.permutation(np.flatnonzero(class_ids == c))) for c in np.unique(class_ids)]
    rows: list[int] = []
    while len(rows) < num and any(pools):
        for pool in pools:
            if pool and len(rows) < num:
                rows.append(int(pool.pop()))
    return np.asarray(rows, dtype=np.int64)
