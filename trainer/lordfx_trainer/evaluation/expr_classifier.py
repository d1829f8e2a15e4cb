"""The expression classifier: the judge of the expression-translation protocol.

``kind = "cnn"`` is the small CNN below; ``kind = "vgg-probe"`` is a linear probe on frozen
ImageNet VGG16 features and ``"vgg-landmarks"`` the same with dlib's 68 landmarks added
(:mod:`expr_probe`; the posed-expression judge). All share the training split, class
weighting, cache and reports here.

The paper scores RaFD expression transfer with a classifier trained on real images; here
it is trained on the real FER2013 training split (all of it, de-duplicated, not only the
LORD model's per-class subset) at the run's image size, seeded and CPU-friendly.

- Input: (N, C, S, S) floats in [0, 1]; each image is standardised (mean 0, std 1) inside
  the network, so brightness and contrast (Yale's lighting, the generator's tone) matter
  less than the shape of the face.
- Loss: cross-entropy weighted by inverse class frequency (``class_weighting="balanced"``),
  because the translation protocol asks "is this output t?" for every t equally; the
  epoch kept is the one with the best *balanced* validation accuracy.
- Cache: RUN_DIR/eval/expr_classifier-<key>.safetensors, key = hash of the settings and
  the data source; the training record (validation accuracy, history) is in its metadata.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from lordfx_trainer.evaluation.leakage import split_indices

log = logging.getLogger("lordfx.eval")
CACHE_PREFIX = "expr_classifier-"


@dataclass(frozen=True)
class ClassifierSettings:
    """Everything that determines the trained classifier (and so its cache key)."""

    image_size: int
    channels: int
    num_classes: int = 7
    width: int = 16
    epochs: int = 8
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    class_weighting: str = "balanced"  # or "none"
    augment: bool = True  # random horizontal flip + shifts of S/16 px
    seed: int = 0
    downsample: int = 1  # average-pool the input by this factor first (64² → 32²: 1/4 the cost)
    # or "vgg-probe" / "vgg-landmarks" (expr_probe; width/epochs/lr/augment unused there)
    kind: str = "cnn"


class _Standardise(nn.Module):
    """Per-image mean 0 / std 1. Shape: (N, C, H, W) → same."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) / x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)


def build_classifier(s: ClassifierSettings) -> nn.Module:
    """The judge of ``s.kind``: for "cnn", three stages of two conv3×3-BN-ReLU (widths w, 2w,
    4w), global average pool, linear; ``downsample`` > 1 average-pools the input first.

    Shape: (N, channels, S, S) in [0, 1] → (N, num_classes) logits.
    """
    from lordfx_trainer.evaluation.expr_probe import PROBE_KINDS, build_probe

    if s.kind in PROBE_KINDS:
        return build_probe(s.num_classes, s.kind)
    if s.kind != "cnn":
        raise ValueError(f"classifier kind must be 'cnn' or one of {PROBE_KINDS}, not {s.kind!r}")
    w = s.width
    first: list[nn.Module] = [nn.AvgPool2d(s.downsample)] if s.downsample > 1 else []

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *first,
        _Standardise(),
        *block(s.channels, w),
        *block(w, w),
        nn.MaxPool2d(2),
        *block(w, 2 * w),
        *block(2 * w, 2 * w),
        nn.MaxPool2d(2),
        *block(2 * w, 4 * w),
        *block(4 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(4 * w, s.num_classes),
    )


def to_float(images: np.ndarray) -> torch.Tensor:
    """Shape: (N, H, W, C) uint8 → (N, C, H, W) float in [0, 1] (CPU)."""
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return x.float().div_(255)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and per-image shifts (replicate padding). Shape: kept."""
    b, _, s, _ = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    p = max(1, s // 16)
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    dy, dx = (torch.randint(0, 2 * p + 1, (b,), generator=gen) for _ in range(2))
    rows = (dy[:, None] + torch.arange(s))[:, :, None]
    cols = (dx[:, None] + torch.arange(s))[:, None, :]
    # advanced indices around a slice: the result is (B, S, S, C)
    return padded[torch.arange(b)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Predicted class ids. Shape: (N, C, S, S) in [0, 1] → (N,) int64."""
    model.eval()
    device = next(model.parameters()).device
    out = [model(x.to(device).float()).argmax(1).cpu() for x in images.split(batch_size)]
    return torch.cat(out).numpy().astype(np.int64) if out else np.zeros(0, np.int64)


def accuracy_report(
    predicted: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, balanced accuracy (mean per-class recall over classes present) and chance.

    chance.uniform = 1/K; chance.majority = what always answering the most frequent class
    of ``labels`` scores (its balanced accuracy would be 1/K_present).
    Shape: predicted (N,), labels (N,) ids into ``class_names``.
    """
    k = len(class_names)
    counts = np.bincount(labels, minlength=k)
    hits = np.bincount(labels[predicted == labels], minlength=k)
    per_class = {
        name: {"accuracy": float(hits[c] / counts[c]) if counts[c] else None, "n": int(counts[c])}
        for c, name in enumerate(class_names)
    }
    present = counts > 0
    n = int(len(labels))
    return {
        "n": n,
        "accuracy": float(np.mean(predicted == labels)) if n else None,
        "balanced_accuracy": float(np.mean(hits[present] / counts[present])) if n else None,
        "per_class": per_class,
        "chance": {
            "uniform": 1.0 / k,
            "majority": float(counts.max() / n) if n else None,
            "majority_class": class_names[int(counts.argmax())] if n else None,
        },
    }


def _class_weights(labels: np.ndarray, s: ClassifierSettings) -> torch.Tensor:
    counts = np.bincount(labels, minlength=s.num_classes).astype(np.float64)
    if s.class_weighting == "none":
        return torch.ones(s.num_classes)
    if s.class_weighting != "balanced":
        raise ValueError(f"class_weighting must be 'balanced' or 'none', not {s.class_weighting!r}")
    weights = np.where(counts > 0, counts.sum() / (s.num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def _train_epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    images: np.ndarray,
    labels: torch.Tensor,
    weights: torch.Tensor,
    rng: np.random.Generator,
    gen: torch.Generator,
    s: ClassifierSettings,
) -> float:
    """One shuffled pass; returns the mean training loss."""
    model.train()
    order = rng.permutation(len(labels))
    total = 0.0
    for batch in np.array_split(order, max(1, -(-len(order) // s.batch_size))):
        x = to_float(images[batch])
        x = _augment(x, gen) if s.augment else x
        loss = F.cross_entropy(model(x), labels[batch], weight=weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += float(loss.detach()) * len(batch)
    return total / len(order)


def train_classifier(
    images: np.ndarray, labels: np.ndarray, s: ClassifierSettings
) -> tuple[nn.Module, dict[str, Any]]:
    """Train on a seeded (1 - val_fraction) split; keep the epoch with the best balanced
    validation accuracy. Deterministic on a CPU for a given seed and thread count.

    Shape: images (N, S, S, C) uint8, labels (N,) int → (model in eval mode, record).
    """
    start = time.time()
    fit_idx, val_idx = split_indices(len(labels), s.seed, s.val_fraction)
    from lordfx_trainer.evaluation.expr_probe import PROBE_KINDS, train_probe

    if s.kind in PROBE_KINDS:
        weights = _class_weights(labels[fit_idx], s)
        return train_probe(images, labels, s, fit_idx, val_idx, weights)
    x_val, y_val = to_float(images[val_idx]), labels[val_idx]
    x_fit, y_fit = images[fit_idx], torch.from_numpy(labels[fit_idx])
    weights = _class_weights(labels[fit_idx], s)
    rng = np.random.default_rng([s.seed, 11])
    gen = torch.Generator().manual_seed(s.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        model = build_classifier(s)
        opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay)
        steps = s.epochs * -(-len(fit_idx) // s.batch_size)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, s.lr, total_steps=max(1, steps))
        best, history = (-1.0, None, 0), []
        for epoch in range(1, s.epochs + 1):
            loss = _train_epoch(model, opt, sched, x_fit, y_fit, weights, rng, gen, s)
            report = accuracy_report(predict(model, x_val), y_val, range(s.num_classes))
            row = {
                "epoch": epoch,
                "train_loss": round(loss, 5),
                "val_accuracy": report["accuracy"],
                "val_balanced_accuracy": report["balanced_accuracy"],
            }
            history.append(row)
            log.info("expression classifier epoch %d: %s", epoch, row)
            if row["val_balanced_accuracy"] > best[0]:
                best = (row["val_balanced_accuracy"], copy.deepcopy(model.state_dict()), epoch)
    model.load_state_dict(best[1])
    model.eval()
    kept = history[best[2] - 1]
    record = {
        "best_epoch": best[2],
        "val_accuracy": kept["val_accuracy"],
        "val_balanced_accuracy": kept["val_balanced_accuracy"],
        "num_train": len(fit_idx),
        "num_val": len(val_idx),
        "history": history,
        "train_seconds": round(time.time() - start, 1),
    }
    return model, record


def cache_key(s: ClassifierSettings, data_id: dict[str, Any]) -> str:
    from lordfx_trainer.evaluation.expr_probe import LANDMARK_FEATURES

    key: dict[str, Any] = {"settings": asdict(s), "data": data_id}
    if s.kind == "vgg-landmarks":
        key["landmark_features"] = LANDMARK_FEATURES
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_or_train(
    cache_dir: Path,
    s: ClassifierSettings,
    data_id: dict[str, Any],
    load_data: Callable[[], tuple[np.ndarray, np.ndarray]],
) -> tuple[nn.Module, dict[str, Any]]:
    """The cached classifier for (settings, data) or a freshly trained (and cached) one.

    ``load_data`` returns (images (N, S, S, C) uint8, labels (N,)) and is only called on a
    cache miss. The record says ``cached`` and the cache ``file``.
    """
    path = Path(cache_dir) / f"{CACHE_PREFIX}{cache_key(s, data_id)}.safetensors"
    if path.is_file():
        with safe_open(str(path), "pt") as fh:
            record = json.loads(fh.metadata()["record"])
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - not a dict
        model = build_classifier(s)
        model.load_state_dict(state, strict=True)
        log.info("expression classifier from cache %s", path)
        return model.eval(), {**record, "cached": True, "file": str(path)}
    images, labels = load_data()
    log.info("training the expression classifier on %d real images", len(labels))
    model, record = train_classifier(images, labels, s)
    record = {"settings": asdict(s), "data": data_id, **record}
    _save_atomic(model, record, path)
    return model, {**record, "cached": False, "file": str(path)}


def _save_atomic(model: nn.Module, record: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, tmp, metadata={"record": json.dumps(record)})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
