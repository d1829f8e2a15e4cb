"""Disentanglement leakage (paper Table 2): how well can a classifier read the class from
the content codes (y←c) and the content from the class codes (y→c)? Lower is better;
chance level is what a code carrying nothing scores.

Two probes, both seeded and deterministic on a CPU: multinomial logistic regression
(L-BFGS, small L2) and a one-hidden-layer MLP (Adam, full batch). Features are
standardised with the training split's statistics. Chance = the majority-label rate on the
test split (the best any constant predictor can do there).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger("lordfx.eval")

PROBES = ("logistic", "mlp")
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class ProbeSettings:
    """Classifier settings; ``mlp_steps`` full-batch Adam steps on a ``mlp_hidden`` MLP."""

    seed: int = 0
    mlp_steps: int = 300
    mlp_hidden: int = 256
    mlp_lr: float = 3e-3
    logistic_l2: float = 1e-4
    logistic_iters: int = 100
    max_codes: int = 20000  # seeded subset above this (CelebA-sized: 10k labels × 200k codes)


def joint_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Distinct label rows → ids 0..L-1 (e.g. (azimuth, elevation) → one view id).

    Shape: labels (N,) or (N, K) → ((N,) int64, L).
    """
    rows = labels.reshape(len(labels), -1)
    _, ids = np.unique(rows, axis=0, return_inverse=True)
    ids = ids.reshape(-1).astype(np.int64)
    return ids, int(ids.max()) + 1 if len(ids) else 0


def split_indices(n: int, seed: int, test_fraction: float = TEST_FRACTION) -> tuple:
    """Seeded 80/20 split of range(n) (``numpy.random.default_rng(seed)``)."""
    order = np.random.default_rng(seed).permutation(n)
    num_test = max(1, int(round(test_fraction * n)))
    return np.sort(order[num_test:]), np.sort(order[:num_test])


def chance_level(y_test: np.ndarray) -> float:
    """Majority-label rate on the test split. Shape: (M,) int."""
    return float(np.bincount(y_test).max() / len(y_test))


def _standardise(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple:
    mean, std = x_train.mean(0), x_train.std(0, unbiased=False).clamp_min(1e-6)
    return (x_train - mean) / std, (x_test - mean) / std


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, k: int, s: ProbeSettings) -> nn.Module:
    model = nn.Linear(x.shape[1], k, device=x.device)
    nn.init.zeros_(model.weight)  # convex problem: a fixed start makes it deterministic
    nn.init.zeros_(model.bias)
    opt = torch.optim.LBFGS(
        model.parameters(), max_iter=s.logistic_iters, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y) + s.logistic_l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return model


def _fit_mlp(x: torch.Tensor, y: torch.Tensor, k: int, s: ProbeSettings) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(s.seed)
        model = nn.Sequential(
            nn.Linear(x.shape[1], s.mlp_hidden), nn.ReLU(), nn.Linear(s.mlp_hidden, k)
        ).to(x.device)
    opt = torch.optim.Adam(model.parameters(), lr=s.mlp_lr)
    for _ in range(s.mlp_steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model


def probe(
    codes: torch.Tensor | np.ndarray,
    labels: np.ndarray,
    method: str,
    settings: ProbeSettings = ProbeSettings(),
) -> dict:
    """Test accuracy of predicting ``labels`` from ``codes`` with ``method`` beside chance.

    Shape: codes (N, D), labels (N,) or (N, K) (rows are joint labels) →
    {"accuracy", "chance", "num_train", "num_test", "num_labels"}.
    """
    if method not in PROBES:
        raise ValueError(f"unknown probe {method!r}; valid: {', '.join(PROBES)}")
    y_all, k = joint_labels(np.asarray(labels))
    # Probes run where the codes are (a GPU makes the Cars3D-sized MLP probes instant).
    x_all = codes.detach() if torch.is_tensor(codes) else torch.from_numpy(np.asarray(codes))
    train, test = split_indices(len(y_all), settings.seed)
    if len(y_all) > settings.max_codes:  # keep the 80/20 ratio, drop the rest (seeded)
        rng = np.random.default_rng(settings.seed + 1)
        num_test = round(TEST_FRACTION * settings.max_codes)
        test = np.sort(rng.choice(test, min(len(test), num_test), replace=False))
        train = np.sort(rng.choice(train, settings.max_codes - len(test), replace=False))
    chance = chance_level(y_all[test])
    result = {"chance": chance, "num_train": len(train), "num_test": len(test), "num_labels": k}
    if k < 2:
        return {"accuracy": 1.0, **result}  # one label: any predictor is right
    device = x_all.device
    x_train, x_test = _standardise(
        x_all[torch.from_numpy(train).to(device)].float(),
        x_all[torch.from_numpy(test).to(device)].float(),
    )
    y_train = torch.from_numpy(y_all[train]).to(device)
    fit = _fit_logistic if method == "logistic" else _fit_mlp
    with torch.enable_grad():
        model = fit(x_train, y_train, k, settings)
    with torch.no_grad():
        predicted = model(x_test).argmax(1).cpu().numpy()
    return {"accuracy": float(np.mean(predicted == y_all[test])), **result}


def _both_probes(codes: torch.Tensor, labels: np.ndarray, s: ProbeSettings) -> dict:
    return {method: probe(codes, labels, method, s) for method in PROBES}


def leakage(
    class_codes: torch.Tensor,
    content_codes: torch.Tensor,
    class_ids: np.ndarray,
    content_labels: np.ndarray | None,
    content_names: Sequence[str] = (),
    settings: ProbeSettings = ProbeSettings(),
) -> dict:
    """y←c (class from content codes) and y→c (content labels from class codes).

    y→c is reported for the joint content label and, when there are several columns, per
    column. In the latent setting every image of a class has the same class code, so y→c
    there sits at chance by construction; amortized class encoders are where it can leak.
    Shape: class_codes (N, class_dim), content_codes (N, content_dim), class_ids (N,),
    content_labels (N, K) or None.
    """
    log.info("leakage probes on %d codes", len(class_ids))
    out: dict = {"class_from_content": _both_probes(content_codes, class_ids, settings)}
    if content_labels is None:
        out["content_from_class"] = {"skipped": "the dataset has no content labels"}
        return out
    per_label = {"joint": _both_probes(class_codes, content_labels, settings)}
    if content_labels.shape[1] > 1:
        for k, name in enumerate(content_names or range(content_labels.shape[1])):
            per_label[str(name)] = _both_probes(class_codes, content_labels[:, k], settings)
    out["content_from_class"] = per_label
    return out


def settings_dict(settings: ProbeSettings) -> dict:
    """The probe settings as recorded in eval.json."""
    return {**asdict(settings), "test_fraction": TEST_FRACTION, "probes": list(PROBES)}
