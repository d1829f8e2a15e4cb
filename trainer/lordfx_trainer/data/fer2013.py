"""FER2013 (Goodfellow et al., ICONIP 2013) in image-folder form: class = expression.

Layout: ``root/train/<expression>/*.jpg`` and ``root/test/<expression>/*.jpg`` (48×48 grey;
shared/data/fer2013). Content (identity, pose, lighting, age) is unlabelled, as in the
paper's RaFD setting where the expression is the class.

FER2013 holds byte-identical copies, some with conflicting labels and many spanning train and
test. With ``dedup=True`` (default) the reader hashes every file: within the split read, a
group of identical files keeps its first file when all copies share one label and is
dropped entirely when the labels conflict; the ``test`` split also drops every file whose
bytes occur anywhere in ``train``, so test numbers are on images the model never saw.

Licence: Kaggle ICML 2013 challenge terms, research / non-commercial; models inherit that.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from lordfx.errors import InputError, UsageError

from .base import ImageDataset
from .folder import list_class_folders
from .images import check_size, read_image_files

logger = logging.getLogger(__name__)

LICENCE = "FER2013: ICML 2013 / Kaggle challenge terms, research and non-commercial use only"
EXPRESSIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
SPLITS = ("train", "test")


def _digest(path: Path) -> str:
    try:
        return hashlib.sha1(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None


def dedup_indices(
    digests: list[str], labels: list[int], forbidden: set[str] = frozenset()
) -> tuple[list[int], dict[str, int]]:
    """Indices to keep after de-duplication, and counts of what was dropped.

    Keeps the first of each group of equal digests whose labels agree; drops whole groups
    with conflicting labels and every item whose digest is in ``forbidden``.
    """
    groups: dict[str, list[int]] = {}
    for i, d in enumerate(digests):
        groups.setdefault(d, []).append(i)
    keep, dropped = [], {"copies": 0, "conflicting": 0, "in_train": 0}
    for d, members in groups.items():
        if d in forbidden:
            dropped["in_train"] += len(members)
        elif len({labels[i] for i in members}) > 1:
            dropped["conflicting"] += len(members)
        else:
            keep.append(members[0])
            dropped["copies"] += len(members) - 1
    return sorted(keep), dropped


def expression_files(folder: Path) -> tuple[list[Path], list[int]]:
    """The image files of one FER2013 split folder (``<expression>/*.jpg``) and their class
    ids in EXPRESSIONS order (even when the split lacks a class); a clear error for a
    missing folder or an unknown expression folder."""
    if not folder.is_dir():
        raise InputError(folder, "no such folder (expected FER2013's train/ and test/)")
    names, paths, labels = list_class_folders(folder)
    unknown = sorted(set(names) - set(EXPRESSIONS))
    if unknown:
        raise InputError(folder, f"unknown expression folders {unknown}; expected {EXPRESSIONS}")
    return paths, [EXPRESSIONS.index(names[k]) for k in labels]


def load_fer2013(
    root: Path,
    image_size: int,
    channels: int,
    *,
    split: str = "train",
    dedup: bool = True,
    skip_bad: bool = False,
) -> ImageDataset:
    """One split of FER2013, optionally de-duplicated (see module doc).

    Shape: images (N, S, S, C) uint8, class_ids (N,) in EXPRESSIONS order, content None.
    """
    check_size(image_size, channels)
    if split not in SPLITS:
        raise UsageError(f"fer2013 split must be one of {', '.join(SPLITS)}, got {split!r}")
    root = Path(root)
    folder = root / split
    paths, labels = expression_files(folder)
    meta: dict[str, object] = {"source": str(root), "reader": "fer2013", "split": split}
    if dedup:
        digests = [_digest(p) for p in paths]
        forbidden: set[str] = set()
        if split == "test":
            train_names, train_paths, _ = list_class_folders(root / "train")
            forbidden = {_digest(p) for p in train_paths}
        keep, dropped = dedup_indices(digests, labels, forbidden)
        logger.info("FER2013 %s: %d files, dropped %s", split, len(paths), dropped)
        meta |= {"num_files": len(paths), "dedup_dropped": dropped}
        paths = [paths[i] for i in keep]
        labels = [labels[i] for i in keep]
    if not paths:
        raise InputError(folder, "no images")
    images, kept = read_image_files(paths, image_size, channels, skip_bad=skip_bad)
    return ImageDataset(
        name="fer2013",
        images=images,
        class_ids=np.asarray(labels, dtype=np.int64)[kept],
        class_names=EXPRESSIONS,
        meta=meta | {"dedup": dedup, "licence": LICENCE},
    )
