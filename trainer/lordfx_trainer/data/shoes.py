"""edges2shoes_mix (Isola et al., CVPR 2017 sample): class = style cluster or "edges".

The raw folder (shared/data/edges2shoes_mix) holds ``train/<N>_AB.jpg`` and
``val/<N>_AB.jpg``, 256×128 RGB: the LEFT half is the photo, the RIGHT half the edge map
(the reverse of pix2pix's AB order). Shoes and handbags are mixed and nothing is labelled.

The paper's Edges2Shoes experiment (LORD §4, A.5) makes classes by clustering the shoe
photos by style; :mod:`lordfx_trainer.shoes_cluster` (``lordfx cluster-shoes DATA --out
DIR``) does that and writes ``DIR/clusters.json``. This reader takes that directory as its
root: it reads the raw pairs from the folder recorded there and yields the shoe photos with
class = their style cluster, and the shoes' edge maps as one more class, ``edges``. Content
(the shape) is unlabelled; a photo and its own edge map are two images with their own
content codes, as in the paper.

Licence: UT-Zappos50K (shoes) is academic / non-commercial; the sample has no licence of
its own. Research only; models trained on it inherit that.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lordfx.errors import InputError, UsageError

from .base import ImageDataset
from .images import check_size, to_canonical

LICENCE = (
    "edges2shoes/edges2handbags sample: UT-Zappos50K academic non-commercial use; "
    "handbag photos from Amazon (iGAN); research only"
)
SPLITS = ("train", "val")
CLUSTERS_FILE = "clusters.json"
EDGES_CLASS = "edges"
HALF = 128  # each half of a pair is 128×128 in edges2shoes_mix


def style_name(k: int) -> str:
    """The class name of style cluster ``k`` (``style-03``)."""
    return f"style-{k:02d}"


def pair_files(root: Path, split: str) -> list[Path]:
    """The ``<N>_AB.jpg`` files of ``root/split``, in numeric order of N.

    Shape: → list of N paths.
    """
    if split not in SPLITS:
        raise UsageError(f"edges2shoes split must be one of {', '.join(SPLITS)}, got {split!r}")
    folder = Path(root) / split
    if not folder.is_dir():
        raise InputError(folder, "no such folder (expected edges2shoes_mix's train/ and val/)")
    pattern = re.compile(r"^(\d+)_AB\.jpg$")
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := pattern.match(p.name))]
    if not found:
        raise InputError(folder, "no <N>_AB.jpg files")
    return [p for _, p in sorted(found)]


def _read_pair(path: Path) -> tuple[np.ndarray, np.ndarray]:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(path, "cannot decode image")
    if bgr.shape[:2] != (HALF, 2 * HALF):
        raise InputError(path, f"expected a 256×128 pair, got {bgr.shape[1]}×{bgr.shape[0]}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    edges = cv2.cvtColor(np.ascontiguousarray(rgb[:, HALF:]), cv2.COLOR_RGB2GRAY)
    return np.ascontiguousarray(rgb[:, :HALF]), edges


def read_pairs(paths: list[Path], workers: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Decode pairs into (photos, edge maps) at the stored 128×128.

    Shape: N paths → photos (N, 128, 128, 3) uint8 RGB, edges (N, 128, 128) uint8 grey
    (dark lines on white, JPEG-grey around the lines).
    """
    photos = np.empty((len(paths), HALF, HALF, 3), dtype=np.uint8)
    edges = np.empty((len(paths), HALF, HALF), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, (photo, edge) in enumerate(pool.map(_read_pair, paths)):
            photos[i], edges[i] = photo, edge
    return photos, edges


def read_clusters(cluster_dir: Path) -> dict[str, Any]:
    """``cluster_dir/clusters.json`` as written by ``lordfx cluster-shoes``."""
    path = Path(cluster_dir) / CLUSTERS_FILE
    if not path.is_file():
        raise InputError(
            path,
            "no such file: run `lordfx cluster-shoes DATA --out DIR` first and train with "
            "--data DIR (the cluster directory, not the raw data folder)",
        )
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON ({exc})") from None
    for key in ("source", "num_styles", "train"):
        if key not in info:
            raise InputError(path, f"missing key {key!r} (not written by cluster-shoes?)")
    return info


def labelled_pairs(info: dict[str, Any], split: str) -> tuple[list[Path], np.ndarray]:
    """The shoe pairs of ``split`` and their style cluster (bags have style -1 and are
    dropped). Shape: → (M paths, (M,) int64)."""
    rows = info[split]
    root = Path(info["source"]) / split
    keep = [(root / r["file"], int(r["style"])) for r in rows if r["kind"] == "shoe"]
    return [p for p, _ in keep], np.asarray([s for _, s in keep], dtype=np.int64)


def load_shoes(
    root: Path,
    image_size: int,
    channels: int,
    *,
    split: str = "train",
    include_edges: bool = True,
) -> ImageDataset:
    """Shoe photos (class = style cluster) and their edge maps (class ``edges``).

    ``root`` is a cluster directory (``lordfx cluster-shoes``). Photos come first, then the
    edge maps in the same order, so image ``i`` and ``i + M`` are a pair.

    Shape: images (2M or M, S, S, C) uint8, class_ids in [0, num_styles] (the last id is
    ``edges``), content_labels (2M or M, 1): the content factor ``pair``, the pair's index,
    shared by a photo and its edge map (``content_target_group = "pair"`` trains the content
    encoder to give both one code).
    """
    check_size(image_size, channels)
    if split not in SPLITS:
        raise UsageError(f"shoes split must be one of {', '.join(SPLITS)}, got {split!r}")
    info = read_clusters(Path(root))
    paths, styles = labelled_pairs(info, split)
    if not paths:
        raise InputError(Path(root) / CLUSTERS_FILE, f"no shoes in split {split!r}")
    photos, edges = read_pairs(paths)
    num_styles = int(info["num_styles"])
    images = [to_canonical(p, image_size, channels) for p in photos]
    class_ids = [styles]
    pair = np.arange(len(paths), dtype=np.int64)
    pairs = [pair]
    if include_edges:
        images += [to_canonical(e, image_size, channels) for e in edges]
        class_ids.append(np.full(len(paths), num_styles, dtype=np.int64))
        pairs.append(pair)
    names = tuple(style_name(k) for k in range(num_styles)) + (EDGES_CLASS,)
    return ImageDataset(
        name="edges2shoes",
        images=np.stack(images),
        class_ids=np.concatenate(class_ids),
        class_names=names,
        content_labels=np.concatenate(pairs)[:, None],
        content_names=("pair",),
        meta={
            "source": str(info["source"]),
            "clusters": str(Path(root).resolve() / CLUSTERS_FILE),
            "clusters_sha256": info.get("sha256", ""),
            "reader": "shoes",
            "split": split,
            "num_pairs": len(paths),
            "include_edges": include_edges,
            "licence": LICENCE,
        },
    )
