"""``lordfx cluster-shoes``: classes for the paper's Edges2Shoes experiment (LORD §4, A.5).

edges2shoes_mix has no labels, shoes and handbags mixed. Two unsupervised steps, both
deterministic (seeded k-means, :mod:`lordfx_trainer.kmeans`) and recorded in
``OUT/clusters.json``:

1. **shoe vs bag**: 2-means on the photos' ImageNet VGG16 conv5_3 features (ReLU, spatial
   mean, L2-normalised). Which of the two clusters is "shoe" is decided by the edge maps'
   silhouettes: a shoe seen from the side is left-right asymmetric (toe vs heel), a bag is
   close to mirror-symmetric, so the cluster with the larger mean asymmetry is the shoes.
2. **style**: Gram matrices of the first VGG16 layer (conv1_1 after ReLU; Li et al. 2017,
   "Demystifying neural style transfer", whose style statistics the paper's clustering
   uses), over the object's pixels only (the white background is masked out), upper
   triangle, PCA to ``STYLE_DIMS`` dimensions, then k-means. k is the silhouette maximum on
   a k-means curve over ``K_RANGE`` (the inertia of each k is recorded beside it).

Edge maps form one more class, ``edges``. Outputs (dataset images: never commit them):
``clusters.json`` (labels of every train/val pair, the k curve, per-cluster counts and mean
colours), ``style_model.safetensors`` (PCA + centres, to assign new photos to a style) and
``sheets/*.png`` contact sheets (one per style cluster, one per shoe/bag group).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from lordfx.errors import InputError, LordfxError
from lordfx_trainer.data.shoes import CLUSTERS_FILE, SPLITS, pair_files, read_pairs
from lordfx_trainer.kmeans import kmeans, silhouette, sq_distances

log = logging.getLogger("lordfx.trainer.shoes")

FEATURE_SIZE = 64  # style features are computed at the model's resolution
#: shoe vs bag features: at 64² VGG16's conv5_3 is a 4 × 4 map and the split misplaced 39 bags
#: + 11 shoes of 2,000 training photos; at 128² 9 + 5 (docs/results.md)
OBJECT_FEATURE_SIZE = 128
STYLE_DIMS = 32
K_RANGE = (4, 16)
MIN_PER_CLUSTER = 25  # caps k: a LORD class needs enough images for its class code
STYLE_MODEL_FILE = "style_model.safetensors"
WHITE = 235  # a pixel with every channel >= this is background in the product photos


def _to_vgg_input(photos: np.ndarray, size: int = FEATURE_SIZE) -> torch.Tensor:
    from lordfx_trainer.losses import IMAGENET_MEAN, IMAGENET_STD

    x = torch.from_numpy(np.ascontiguousarray(photos)).permute(0, 3, 1, 2).float() / 255
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=size, mode="area")
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    return (x - mean) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def foreground_masks(photos: np.ndarray, size: int = FEATURE_SIZE) -> np.ndarray:
    """Object pixels of white-background product photos (at least one channel < WHITE).

    Shape: (N, H, W, 3) uint8 → (N, size, size) float32 in {0, 1}; an all-white photo gets
    an all-ones mask so its statistics stay defined.
    """
    out = np.empty((len(photos), size, size), dtype=np.float32)
    for i, p in enumerate(photos):
        small = cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA)
        m = (small.min(2) < WHITE).astype(np.uint8)
        out[i] = m if m.any() else 1
    return out


@torch.no_grad()
def object_features(photos: np.ndarray, vgg: torch.nn.Module, batch: int = 50) -> np.ndarray:
    """Semantic features for shoe vs bag: VGG16 conv5_3 (ReLU) of the photo at
    ``OBJECT_FEATURE_SIZE``², spatial mean, L2-normalised.

    Shape: (N, H, W, 3) uint8 → (N, 512) float64.
    """
    feats = []
    for s in range(0, len(photos), batch):
        x = _to_vgg_input(photos[s : s + batch], OBJECT_FEATURE_SIZE)
        f = vgg[:30](x).mean((2, 3))
        feats.append(f.double().numpy())
    f = np.concatenate(feats)
    return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


@torch.no_grad()
def style_grams(photos: np.ndarray, vgg: torch.nn.Module, batch: int = 100) -> np.ndarray:
    """Gram statistics of VGG16's first layer (conv1_1 + ReLU) over the object's pixels.

    G = F M Fᵀ / Σ M with F the (64, HW) feature map and M the foreground mask; the upper
    triangle (with the diagonal) is returned. Shape: (N, H, W, 3) uint8 → (N, 2080) float64.
    """
    masks = torch.from_numpy(foreground_masks(photos))
    rows, cols = np.triu_indices(64)
    out = []
    for s in range(0, len(photos), batch):
        f = vgg[:2](_to_vgg_input(photos[s : s + batch])).flatten(2)  # (B, 64, HW)
        m = masks[s : s + batch].flatten(1)[:, None, :]
        gram = (f * m) @ f.transpose(1, 2) / m.sum(2, keepdim=True)
        out.append(gram[:, rows, cols].double().numpy())
    return np.concatenate(out)


def edge_silhouettes(edges: np.ndarray, size: int = 32) -> np.ndarray:
    """Filled outline of each edge map: lines closed, everything not reachable from the
    border is object. Shape: (N, H, W) uint8 → (N, size, size) float32 in [0, 1]."""
    out = np.empty((len(edges), size, size), dtype=np.float32)
    kernel = np.ones((5, 5), np.uint8)
    for i, e in enumerate(edges):
        lines = cv2.morphologyEx((e < 160).astype(np.uint8), cv2.MORPH_CLOSE, kernel)
        flood = lines.copy()
        cv2.floodFill(flood, np.zeros((e.shape[0] + 2, e.shape[1] + 2), np.uint8), (0, 0), 2)
        out[i] = cv2.resize((flood != 2).astype(np.float32), (size, size), cv2.INTER_AREA)
    return out


def asymmetry(silhouettes: np.ndarray) -> np.ndarray:
    """Left-right asymmetry of filled silhouettes: Σ|m − mirror(m)| / (2 Σ m), in [0, 1].
    Shape: (N, S, S) → (N,)."""
    diff = np.abs(silhouettes - silhouettes[:, :, ::-1]).sum((1, 2))
    return diff / np.maximum(2 * silhouettes.sum((1, 2)), 1e-6)


@dataclass(frozen=True)
class StyleModel:
    """Projects Gram features to the clustering space and assigns the nearest style centre.

    Shape: mean (2080,), components (STYLE_DIMS, 2080), scale (STYLE_DIMS,), centres (k, STYLE_DIMS).
    """

    mean: np.ndarray
    components: np.ndarray
    scale: np.ndarray
    centres: np.ndarray

    @classmethod
    def fit_pca(cls, grams: np.ndarray, dims: int = STYLE_DIMS) -> StyleModel:
        mean = grams.mean(0)
        _, _, vt = np.linalg.svd(grams - mean, full_matrices=False)
        comps = vt[:dims]
        # deterministic sign: the largest-magnitude loading of each component is positive
        signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])
        comps = comps * signs[:, None]
        # one global scale (the first component's std) keeps relative variances intact
        z = (grams - mean) @ comps.T
        scale = np.full(len(comps), max(float(z[:, 0].std()), 1e-12))
        return cls(mean, comps, scale, np.zeros((0, len(comps))))

    def project(self, grams: np.ndarray) -> np.ndarray:
        return (grams - self.mean) @ self.components.T / self.scale

    def assign(self, grams: np.ndarray) -> np.ndarray:
        """Nearest style centre per image. Shape: (N, 2080) → (N,) int64."""
        return sq_distances(self.project(grams), self.centres).argmin(1).astype(np.int64)

    def save(self, path: Path) -> None:
        save_file({k: np.ascontiguousarray(getattr(self, k)) for k in _STYLE_KEYS}, str(path))

    @classmethod
    def load(cls, path: Path) -> StyleModel:
        if not Path(path).is_file():
            raise InputError(path, "no such file (a cluster-shoes output)")
        return cls(**load_file(str(path)))


_STYLE_KEYS = ("mean", "components", "scale", "centres")


def k_curve(z: np.ndarray, ks: range, seed: int) -> list[dict[str, float]]:
    """k-means inertia and silhouette for each k (the curve k is chosen from)."""
    rows = []
    for k in ks:
        res = kmeans(z, k, seed=seed)
        rows.append({"k": k, "inertia": res.inertia, "silhouette": silhouette(z, res.labels)})
        log.info("k=%d inertia %.1f silhouette %.3f", k, res.inertia, rows[-1]["silhouette"])
    return rows


def choose_k(curve: list[dict[str, float]]) -> int:
    """The k of the highest silhouette (ties: the smaller k)."""
    return int(max(curve, key=lambda r: (round(r["silhouette"], 6), -r["k"]))["k"])


def contact_sheet(images: np.ndarray, path: Path, cols: int = 12, thumb: int = 48) -> Path:
    """A grid of up to 8 rows of thumbnails (RGB or grey uint8), written as PNG."""
    n = min(len(images), cols * 8)
    rows = max(1, -(-n // cols))
    sheet = np.full((rows * thumb, cols * thumb, 3), 255, dtype=np.uint8)
    for i in range(n):
        im = images[i] if images[i].ndim == 3 else np.repeat(images[i][:, :, None], 3, 2)
        small = cv2.resize(im, (thumb, thumb), interpolation=cv2.INTER_AREA)
        r, c = divmod(i, cols)
        sheet[r * thumb : (r + 1) * thumb, c * thumb : (c + 1) * thumb] = small
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return path


def mean_colour(photos: np.ndarray) -> list[int]:
    """Mean RGB of the object pixels of a group of photos (background excluded)."""
    masks = foreground_masks(photos, size=photos.shape[1]).astype(bool)
    return [int(round(float(photos[..., c][masks].mean()))) for c in range(3)]


LDA_DIMS = 64
LDA_ROUNDS = 5


def self_trained_lda(
    feats: np.ndarray, labels: np.ndarray, rounds: int = LDA_ROUNDS, dims: int = LDA_DIMS
) -> tuple[np.ndarray, Any]:
    """Refine a 2-way labelling by refitting a linear discriminant (Fisher LDA: class means,
    shared covariance) to its own labels, ``rounds`` times, in the top ``dims`` principal
    components. k-means splits at the midpoint between centres with a spherical metric; the
    LDA's boundary follows the classes' shared covariance instead.

    Shape: feats (N, D), labels (N,) bool → (N,) bool and a function that labels new
    feature rows the same way.
    """
    mean = feats.mean(0)
    _, _, vt = np.linalg.svd(feats - mean, full_matrices=False)
    basis = vt[: max(1, min(dims, len(feats) // 4))].T  # keep the covariance well-posed

    def project(f: np.ndarray) -> np.ndarray:
        return (f - mean) @ basis

    z = project(feats)
    w, b = None, 0.0
    for _ in range(rounds):
        m1, m0 = z[labels].mean(0), z[~labels].mean(0)
        centred = np.concatenate([z[labels] - m1, z[~labels] - m0])
        cov = np.cov(centred.T) + 1e-6 * np.eye(z.shape[1])
        w_new = np.linalg.solve(cov, m1 - m0)
        b_new = -float(w_new @ (m1 + m0)) / 2
        new = z @ w_new + b_new > 0
        if new.all() or not new.any():
            break  # the refit would empty a class: keep the last boundary
        labels, w, b = new, w_new, b_new
    if w is None:
        raise LordfxError("shoe/bag split: the LDA refinement found no usable boundary")
    return labels, lambda f: project(f) @ w + b > 0


def split_shoes_bags(
    obj_feats: np.ndarray, silhouettes: np.ndarray, seed: int
) -> tuple[np.ndarray, Any, dict[str, Any]]:
    """2-means on object features; the more left-right asymmetric cluster is the shoes;
    then :func:`self_trained_lda` refines the boundary.

    Shape: (N, 512), (N, S, S) → is_shoe (N,) bool, a labeller for new features, record.
    """
    res = kmeans(obj_feats, 2, seed=seed)
    asym = asymmetry(silhouettes)
    per_cluster = [float(asym[res.labels == j].mean()) for j in range(2)]
    shoe = int(np.argmax(per_cluster))
    is_shoe, labeller = self_trained_lda(obj_feats, res.labels == shoe)
    record = {
        "method": f"2-means on VGG16 conv5_3 mean features (L2-normalised) of the photos at "
        f"{OBJECT_FEATURE_SIZE}², "
        f"refined by {LDA_ROUNDS} rounds of self-trained LDA in {LDA_DIMS} PCA dimensions",
        "rule": "shoe cluster = the one whose edge-map silhouettes are more left-right asymmetric",
        "asymmetry_per_cluster": per_cluster,
        "shoe_cluster": shoe,
        "num_shoes_2means": int((res.labels == shoe).sum()),
        "changed_by_lda": int((is_shoe != (res.labels == shoe)).sum()),
    }
    return is_shoe, labeller, record


def cluster_shoes(
    data: Path, out: Path, k: int | None = None, seed: int = 0, vgg: torch.nn.Module | None = None
) -> dict[str, Any]:
    """Cluster ``data`` (edges2shoes_mix) into shoe/bag and shoe styles; write ``out``.

    ``out`` must not exist (runs are never overwritten); it is built in a temporary folder
    next to it and renamed into place. Returns the ``clusters.json`` record.
    """
    out = Path(out)
    if out.exists():
        raise LordfxError(f"{out}: already exists; choose another --out (never overwritten)")
    if vgg is None:
        from lordfx_trainer.weights import load_vgg16_features

        vgg = load_vgg16_features()
    vgg = vgg.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        record = _cluster_into(Path(data), tmp, k, seed, vgg)
        os.replace(tmp, out)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def _cluster_into(
    data: Path, out: Path, k: int | None, seed: int, vgg: torch.nn.Module
) -> dict[str, Any]:
    paths = {s: pair_files(data, s) for s in SPLITS}
    pairs = {s: read_pairs(paths[s]) for s in SPLITS}
    photos, edges = pairs["train"]
    log.info("object features of %d train + %d val photos", len(photos), len(pairs["val"][0]))
    obj = {s: object_features(pairs[s][0], vgg) for s in SPLITS}
    is_shoe, labeller, shoe_record = split_shoes_bags(obj["train"], edge_silhouettes(edges), seed)
    val_shoe = labeller(obj["val"])
    grams = {s: style_grams(pairs[s][0], vgg) for s in SPLITS}
    model = StyleModel.fit_pca(grams["train"][is_shoe])
    z = model.project(grams["train"][is_shoe])
    k_max = max(K_RANGE[0], min(K_RANGE[1], int(is_shoe.sum()) // MIN_PER_CLUSTER))
    curve = k_curve(z, range(2, k_max + 1), seed)
    chosen = k or choose_k([r for r in curve if r["k"] >= K_RANGE[0]] or curve)
    res = kmeans(z, chosen, seed=seed)
    model = StyleModel(model.mean, model.components, model.scale, res.centres)
    model.save(out / STYLE_MODEL_FILE)
    styles = {"train": np.full(len(photos), -1), "val": np.full(len(val_shoe), -1)}
    styles["train"][is_shoe] = res.labels
    styles["val"][val_shoe] = model.assign(grams["val"][val_shoe])
    shoes = photos[is_shoe]
    clusters = [
        {
            "id": j,
            "name": f"style-{j:02d}",
            "count": int((res.labels == j).sum()),
            "mean_rgb": mean_colour(shoes[res.labels == j]),
        }
        for j in range(chosen)
    ]
    _write_sheets(out / "sheets", photos, edges, is_shoe, styles["train"], chosen)
    record = {
        "source": str(data.resolve()),
        "seed": seed,
        "feature_size": FEATURE_SIZE,
        "object_feature_size": OBJECT_FEATURE_SIZE,
        "shoe_vs_bag": shoe_record
        | {
            "num_shoes": {"train": int(is_shoe.sum()), "val": int(val_shoe.sum())},
            "num_bags": {"train": int((~is_shoe).sum()), "val": int((~val_shoe).sum())},
        },
        "style_features": "VGG16 conv1_1+ReLU Gram over object pixels, upper triangle, "
        f"PCA {STYLE_DIMS} (Li et al. 2017)",
        "k_curve": curve,
        "k_rule": "highest silhouette for k in "
        f"[{K_RANGE[0]}, {k_max}] (k_max = min({K_RANGE[1]}, shoes // {MIN_PER_CLUSTER}))"
        if k is None
        else "given with --k",
        "num_styles": chosen,
        "clusters": clusters,
        "edges_class": "edges (the shoes' edge maps, one class)",
    }
    for s in SPLITS:
        record[s] = [
            {"file": p.name, "kind": "shoe" if st >= 0 else "bag", "style": int(st)}
            for p, st in zip(paths[s], styles[s], strict=True)
        ]
    text = json.dumps(record, indent=1) + "\n"
    (out / CLUSTERS_FILE).write_text(text)
    record["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    return record


def _write_sheets(
    folder: Path,
    photos: np.ndarray,
    edges: np.ndarray,
    is_shoe: np.ndarray,
    styles: np.ndarray,
    k: int,
) -> None:
    contact_sheet(photos[is_shoe], folder / "shoes.png")
    contact_sheet(photos[~is_shoe], folder / "bags.png")
    contact_sheet(edges[is_shoe], folder / "edges.png")
    for j in range(k):
        contact_sheet(photos[styles == j], folder / f"style-{j:02d}.png")
