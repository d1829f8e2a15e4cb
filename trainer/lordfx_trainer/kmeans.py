"""Deterministic k-means (k-means++ init, Lloyd iterations) and the silhouette score, numpy only.

Used to make classes from unlabelled data (LORD §4 / A.5: Edges2Shoes style clusters). Every
random draw comes from ``numpy.random.default_rng(seed)``, so a call is a pure function of
its inputs: the same data and seed give the same labels, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KMeansResult:
    """Shape: labels (N,) int64 in [0, k); centres (k, D) float64; inertia = Σ‖x − c‖²."""

    labels: np.ndarray
    centres: np.ndarray
    inertia: float
    iterations: int


def sq_distances(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Shape: x (N, D), centres (K, D) → (N, K) squared Euclidean distances (≥ 0)."""
    d = (x * x).sum(1)[:, None] - 2.0 * x @ centres.T + (centres * centres).sum(1)[None, :]
    return np.maximum(d, 0.0)


def _plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centres = [x[rng.integers(len(x))]]
    closest = sq_distances(x, centres[0][None])[:, 0]
    for _ in range(1, k):
        total = closest.sum()
        pick = rng.choice(len(x), p=closest / total) if total > 0 else rng.integers(len(x))
        centres.append(x[pick])
        closest = np.minimum(closest, sq_distances(x, x[pick][None])[:, 0])
    return np.stack(centres)


def _lloyd(x: np.ndarray, centres: np.ndarray, max_iter: int) -> KMeansResult:
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        labels = sq_distances(x, centres).argmin(1)
        new = centres.copy()
        for j in range(len(centres)):
            members = labels == j
            if members.any():  # an emptied cluster keeps its centre
                new[j] = x[members].mean(0)
        if np.array_equal(new, centres):
            break
        centres = new
    labels = sq_distances(x, centres).argmin(1)
    inertia = float(sq_distances(x, centres)[np.arange(len(x)), labels].sum())
    return KMeansResult(labels.astype(np.int64), centres, inertia, iterations)


def kmeans(
    x: np.ndarray, k: int, seed: int = 0, n_init: int = 10, max_iter: int = 300
) -> KMeansResult:
    """The best (lowest inertia) of ``n_init`` seeded k-means++ runs.

    Clusters are renumbered by decreasing size (ties: by first member), so labels do not
    depend on which restart won. Shape: x (N, D) → labels (N,), centres (k, D).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not 1 <= k <= len(x):
        raise ValueError(f"kmeans needs (N, D) data with 1 <= k <= N, got {x.shape}, k={k}")
    rng = np.random.default_rng(seed)
    best: KMeansResult | None = None
    for _ in range(n_init):
        result = _lloyd(x, _plus_plus(x, k, rng), max_iter)
        if best is None or result.inertia < best.inertia:
            best = result
    assert best is not None
    counts = np.bincount(best.labels, minlength=k)
    first = np.array([np.flatnonzero(best.labels == j)[:1].tolist() or [len(x)] for j in range(k)])
    order = np.lexsort((first[:, 0], -counts))
    remap = np.empty(k, dtype=np.int64)
    remap[order] = np.arange(k)
    return KMeansResult(remap[best.labels], best.centres[order], best.inertia, best.iterations)


def silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient (Rousseeuw 1987) with Euclidean distances.

    s(i) = (b − a) / max(a, b), a = mean distance to its own cluster, b = lowest mean
    distance to another cluster; points alone in their cluster score 0.
    Shape: x (N, D), labels (N,) → float in [-1, 1].
    """
    x = np.asarray(x, dtype=np.float64)
    ks = np.unique(labels)
    if len(ks) < 2:
        raise ValueError("silhouette needs at least two clusters")
    dist = np.sqrt(sq_distances(x, x))
    onehot = (labels[:, None] == ks[None, :]).astype(np.float64)
    counts = onehot.sum(0)
    sums = dist @ onehot  # (N, K): summed distance to each cluster
    own = np.searchsorted(ks, labels)
    size_own = counts[own]
    a = np.where(size_own > 1, sums[np.arange(len(x)), own] / np.maximum(size_own - 1, 1), 0.0)
    mean_other = sums / counts[None, :]
    mean_other[np.arange(len(x)), own] = np.inf
    b = mean_other.min(1)
    s = np.where(size_own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(s.mean())
