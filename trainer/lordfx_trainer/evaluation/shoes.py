"""Edges → shoe metrics of a shoes run (issue 19; LORD §4, Figure 5), on the val shoe pairs.

For each val pair (photo x, edge map e) of a shoe (shoe/bag and style as ``cluster-shoes``
assigned them), the model draws y = G(E_c(e), E_y(x)): the shape of e in the style of its
own photo, which should look like x. Scored against x with LPIPS (alex v0.1, at the model's
size), beside two baselines that use no model:

- ``same_cluster``: a random training shoe photo of x's style cluster (seeded);
- ``nearest_edges``: the training photo whose edge map is nearest to e (Euclidean distance
  between the edge maps blurred with a Gaussian of σ = 1.5 px at the model's size, so
  nearby lines count as close).

Edge fidelity: F1 of the output's Canny edges against e's lines, with a 2-pixel tolerance
(precision = share of output edge pixels within 2 px of a line of e, recall = share of e's
line pixels within 2 px of an output edge). Style consistency: the share of outputs whose
style cluster (the clustering's own features and centres) is x's. to-edges, G(E_c(x),
y_edges), is scored against e with the same F1.

Two more rows locate a shortfall: ``reconstruction``, G(E_c(x), E_y(x)), the model's drawing
of the photo from the photo itself (what a perfect edge → content step could reach), and
``paired``, from-edges minus each baseline pair by pair (mean, a seeded bootstrap 95 %
interval, and the share of pairs where from-edges is closer): with ~200 pairs and LPIPS
spreads of ~0.1, a difference of means inside that interval is not a win.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from lordfx.bundle import load_bundle
from lordfx.errors import LordfxError
from lordfx_trainer.data.images import to_canonical
from lordfx_trainer.data.shoes import EDGES_CLASS, labelled_pairs, read_clusters, read_pairs

log = logging.getLogger("lordfx.eval")
EVAL_SHOES_FILE = "eval_shoes.json"
TOLERANCE = 2  # pixels, at the model's size
CANNY = (100, 200)
BLUR_SIGMA = 1.5
LINE_LEVEL = 200
LPIPS_MIN_SIZE = 64


def edge_lines(edge_maps: np.ndarray) -> np.ndarray:
    """Lines of edge maps (dark on white): grey < ``LINE_LEVEL``.

    At 64² the 128² maps' one-pixel lines are averaged with white (grey 176-191 where a
    line crosses, 254 background), so 128 would find almost none; with 200 the real photo's
    own Canny edges score F1 0.89 against its edge map (val shoes).
    Shape: (N, S, S[, C]) uint8 → bool.
    """
    grey = edge_maps if edge_maps.ndim == 3 else edge_maps.mean(3)
    return grey < LINE_LEVEL


def canny(images: np.ndarray) -> np.ndarray:
    """Canny edges (OpenCV, thresholds ``CANNY``) of RGB images. Shape: (N, S, S, 3) → bool."""
    return np.stack([cv2.Canny(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), *CANNY) > 0 for im in images])


def edge_f1(pred: np.ndarray, target: np.ndarray, tol: int = TOLERANCE) -> np.ndarray:
    """F1 of edge masks with a distance tolerance (0 when either mask is empty).

    Shape: pred, target (N, S, S) bool → (N,) float.
    """
    out = np.zeros(len(pred))
    for i, (p, t) in enumerate(zip(pred, target, strict=True)):
        if not p.any() or not t.any():
            continue
        dist_t = cv2.distanceTransform((~t).astype(np.uint8), cv2.DIST_L2, 3)
        dist_p = cv2.distanceTransform((~p).astype(np.uint8), cv2.DIST_L2, 3)
        precision = float((dist_t[p] <= tol).mean())
        recall = float((dist_p[t] <= tol).mean())
        out[i] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return out


def nearest_by_edges(query: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Index of the pool edge map nearest to each query (blurred-L2). Shape: (N,S,S), (M,S,S) → (N,)."""

    def blur(e: np.ndarray) -> np.ndarray:
        lines = edge_lines(e).astype(np.float32)
        return np.stack([cv2.GaussianBlur(x, (0, 0), BLUR_SIGMA) for x in lines]).reshape(
            len(e), -1
        )

    q, p = blur(query), blur(pool)
    d = (q * q).sum(1)[:, None] - 2 * q @ p.T + (p * p).sum(1)[None]
    return d.argmin(1)


def _canonical(images: np.ndarray, size: int) -> np.ndarray:
    return np.stack([to_canonical(im, size, 3) for im in images])


def load_pairs(
    cluster_dir: Path, split: str, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shoe photos, edge maps (RGB) and styles of a split at the model's size."""
    info = read_clusters(cluster_dir)
    paths, styles = labelled_pairs(info, split)
    photos, edges = read_pairs(paths)
    return _canonical(photos, size), _canonical(edges, size), styles


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).to(device)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return x.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def generate(
    bundle: Any, edges: np.ndarray, photos: np.ndarray, batch: int = 64
) -> dict[str, np.ndarray]:
    """from-edges with each photo's own style, to-edges of each photo, and the photo's own
    reconstruction G(E_c(x), E_y(x)). Shape: (N, S, S, 3) uint8 each."""
    model, device = bundle.model, next(bundle.model.parameters()).device
    edge_code = bundle.class_codes[bundle.class_names.index(EDGES_CLASS)][None]
    shoes, lines, recon = [], [], []
    for s in range(0, len(edges), batch):
        e, x = to_tensor(edges[s : s + batch], device), to_tensor(photos[s : s + batch], device)
        style, content = model.encode_class(x), model.encode_content(x)
        shoes.append(to_uint8(model.decode(model.encode_content(e), style)))
        lines.append(to_uint8(model.decode(content, edge_code.expand(len(x), -1))))
        recon.append(to_uint8(model.decode(content, style)))
    return {
        "from_edges": np.concatenate(shoes),
        "to_edges": np.concatenate(lines),
        "reconstruction": np.concatenate(recon),
    }


def lpips_to(
    images: np.ndarray, target: np.ndarray, lpips: Any, device: torch.device
) -> np.ndarray:
    """LPIPS per image pair, at the images' size, or upscaled (bilinear) to ``LPIPS_MIN_SIZE``
    when smaller: AlexNet's feature maps vanish below that (a test model at 16²)."""
    from lordfx_trainer.lpips_metric import lpips_distance

    out = []
    for s in range(0, len(images), 64):
        a, b = to_tensor(images[s : s + 64], device), to_tensor(target[s : s + 64], device)
        if a.shape[-1] < LPIPS_MIN_SIZE:
            a, b = (
                torch.nn.functional.interpolate(t, size=LPIPS_MIN_SIZE, mode="bilinear")
                for t in (a, b)
            )
        out.append(lpips_distance(lpips, a, b).cpu().numpy())
    return np.concatenate(out)


def _stats(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(values.mean()), "std": float(values.std()), "n": len(values)}


def paired_difference(
    a: np.ndarray, b: np.ndarray, seed: int = 0, resamples: int = 2000
) -> dict[str, float]:
    """a − b pair by pair: mean, seeded bootstrap 95 % interval of the mean, and the share of
    pairs with a < b (ties count half). Shape: a, b (N,) → scalars."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (resamples, len(d)))].mean(1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return {
        "mean": float(d.mean()),
        "ci95": [float(lo), float(hi)],
        "a_better_share": float((d < 0).mean() + 0.5 * (d == 0).mean()),
        "n": len(d),
    }


def evaluate_shoes(
    run_dir: Path, bundle_path: Path | None = None, seed: int = 0, figure: Path | None = None
) -> dict[str, Any]:
    """All metrics of the module doc for a run (its bundle, or ``bundle_path``)."""
    from lordfx_trainer.evaluation.runs import read_config
    from lordfx_trainer.lpips_metric import make_lpips
    from lordfx_trainer.shoes_cluster import STYLE_MODEL_FILE, StyleModel, style_grams
    from lordfx_trainer.weights import load_vgg16_features

    cfg, extra = read_config(run_dir)
    cluster_dir = Path(extra.get("data_path") or "")
    if cfg.dataset != "shoes":
        raise LordfxError(f"{run_dir}: dataset {cfg.dataset!r} is not a shoes run")
    bundle = load_bundle(bundle_path or run_dir / "bundle")
    size, device = cfg.image_size, torch.device("cpu")
    val_x, val_e, val_style = load_pairs(cluster_dir, "val", size)
    tr_x, tr_e, tr_style = load_pairs(cluster_dir, "train", size)
    out = generate(bundle, val_e, val_x)
    rng = np.random.default_rng(seed)
    same = np.array([rng.choice(np.flatnonzero(tr_style == s)) for s in val_style])
    near = nearest_by_edges(val_e, tr_e)
    candidates = {
        "from_edges": out["from_edges"],
        "same_cluster": tr_x[same],
        "nearest_edges": tr_x[near],
        "reconstruction": out["reconstruction"],
    }
    lpips = make_lpips("alex")
    styles = StyleModel.load(cluster_dir / STYLE_MODEL_FILE)
    vgg = load_vgg16_features().eval()
    lines = edge_lines(val_e)
    result: dict[str, Any] = {"run": str(run_dir), "num_pairs": len(val_x), "seed": seed}
    per_pair = {name: lpips_to(images, val_x, lpips, device) for name, images in candidates.items()}
    for name, images in candidates.items():
        result[name] = {
            "lpips_alex": _stats(per_pair[name]),
            "edge_f1": _stats(edge_f1(canny(images), lines)),
            "style_consistency": float(
                (styles.assign(style_grams(images, vgg)) == val_style).mean()
            ),
        }
    result["paired"] = {
        base: paired_difference(per_pair["from_edges"], per_pair[base], seed)
        for base in ("same_cluster", "nearest_edges")
    }
    result["real_photo_edge_f1"] = _stats(edge_f1(canny(val_x), lines))
    result["to_edges_f1"] = _stats(edge_f1(edge_lines(out["to_edges"]), lines))
    counts = np.bincount(tr_style, minlength=len(styles.centres))
    result["style_chance"] = float(counts.max() / counts.sum())
    result["num_styles"] = int(len(styles.centres))
    if figure is not None:
        figure_grid(bundle, val_e, val_x, out["from_edges"], figure)
    return result


@torch.no_grad()
def figure_grid(
    bundle: Any,
    edges: np.ndarray,
    photos: np.ndarray,
    own: np.ndarray,
    path: Path,
    rows: int = 8,
    styles: int = 6,
) -> Path:
    """Figure-5-style grid: per row an edge map, its real photo, the output in the photo's
    style, then the output in the ``styles`` largest style clusters (dataset pixels: do not
    commit)."""
    model, device = bundle.model, next(bundle.model.parameters()).device
    idx = np.linspace(0, len(edges) - 1, rows).round().astype(int)
    styles = min(styles, sum(n.startswith("style-") for n in bundle.class_names))
    codes = torch.stack(
        [bundle.class_codes[bundle.class_names.index(f"style-{k:02d}")] for k in range(styles)]
    )
    tiles = []
    for i in idx:
        content = model.encode_content(to_tensor(edges[i : i + 1], device)).expand(styles, -1)
        row = [edges[i], photos[i], own[i], *to_uint8(model.decode(content, codes))]
        tiles.append(np.concatenate(row, 1))
    grid = np.concatenate(tiles, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(
        str(path),
        cv2.cvtColor(
            cv2.resize(grid, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST), cv2.COLOR_RGB2BGR
        ),
    )
    return path


def summary_markdown(r: dict[str, Any]) -> str:
    """The result as a markdown table (docs/results.md, MODEL_CARD.md)."""
    lines = [
        f"{r['num_pairs']} val shoe pairs; {r['num_styles']} style clusters (largest {r['style_chance']:.1%})",
        "",
        "| | LPIPS alex vs paired photo ↓ | edge F1 (Canny, 2 px) ↑ | style consistency ↑ |",
        "|---|---|---|---|",
    ]
    labels = {
        "from_edges": "from-edges, style of the paired photo",
        "same_cluster": "baseline: random training shoe of the same cluster",
        "nearest_edges": "baseline: training photo with the nearest edge map",
        "reconstruction": "the model's reconstruction of the photo, G(E_c(photo), E_y(photo))",
    }
    for key, label in labels.items():
        if key not in r:  # results written before the row existed
            continue
        m = r[key]
        lines.append(
            f"| {label} | {m['lpips_alex']['mean']:.3f} ± {m['lpips_alex']['std']:.3f} | "
            f"{m['edge_f1']['mean']:.3f} | {m['style_consistency']:.3f} |"
        )
    lines.append(f"| the paired photo itself | 0 | {r['real_photo_edge_f1']['mean']:.3f} | 1 |")
    lines.append("")
    for base, p in r.get("paired", {}).items():
        lo, hi = p["ci95"]
        lines.append(
            f"from-edges − {labels[base].removeprefix('baseline: ')}, pair by pair: "
            f"{p['mean']:+.4f} LPIPS (bootstrap 95 % [{lo:+.4f}, {hi:+.4f}]), "
            f"from-edges closer in {p['a_better_share']:.1%} of pairs"
        )
    lines.append(
        f"to-edges (G(E_c(photo), y_edges)) line F1 vs the real edge map: {r['to_edges_f1']['mean']:.3f}"
    )
    return "\n".join(lines)
