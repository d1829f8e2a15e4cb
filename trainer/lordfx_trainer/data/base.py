"""The canonical dataset every reader returns, and the seeded train/held-out splits.

A dataset is images (uint8, always in memory) + one class id per image (+ content labels
where the content is known, e.g. a Cars3D view). This is the "canonical dataset" of the
data flow in DESIGN §1: readers produce it, stage 1 / stage 2 / evaluation consume it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True, eq=False)  # eq=False: array fields make field-wise == ambiguous
class ImageDataset:
    """Images with a class id each and, where known, content labels.

    Shape:
        images: (N, H, W, C) uint8, H == W, C in {1, 3}
        class_ids: (N,) int64 in [0, num_classes)
        content_labels: (N, K) int64 or None; column k is ``content_names[k]``

    ``meta`` is JSON-able provenance (source path, split seed, held-out class names,
    licence note). Arrays are not copied or frozen (torch wants writable arrays): do not
    mutate them in place.
    """

    name: str
    images: np.ndarray
    class_ids: np.ndarray
    class_names: tuple[str, ...]
    content_labels: np.ndarray | None = None
    content_names: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Lists of names are accepted for convenience; stored as tuples so the record stays
        # immutable as far as Python can make it.
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "content_names", tuple(self.content_names))
        _check_images(self.images)
        _check_classes(self.class_ids, self.class_names, len(self.images))
        _check_content(self.content_labels, self.content_names, len(self.images))
        try:
            json.dumps(self.meta)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"meta must be JSON-able ({exc})") from None

    @property
    def num_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])

    def class_counts(self) -> np.ndarray:
        """Number of images of each class. Shape: (num_classes,) int64."""
        return np.bincount(self.class_ids, minlength=self.num_classes).astype(np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageDataset:
        """The images at ``indices`` (ints or a boolean mask); class ids and names unchanged.

        Shape: indices (M,) int or (N,) bool -> dataset of M images.
        """
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (self.num_images,):
                raise ValueError(
                    f"boolean mask has shape {idx.shape}, expected ({self.num_images},)"
                )
            idx = np.flatnonzero(idx)
        if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 1):
            raise ValueError("indices must be a 1-d integer array or a boolean mask")
        idx = idx.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < -self.num_images or idx.max() >= self.num_images):
            raise ValueError(f"indices out of range for {self.num_images} images")
        labels = None if self.content_labels is None else self.content_labels[idx]
        return replace(
            self,
            images=self.images[idx],
            class_ids=self.class_ids[idx],
            content_labels=labels,
            meta=dict(self.meta),
        )

    def select_classes(self, class_indices: Sequence[int] | np.ndarray) -> ImageDataset:
        """Only the images of ``class_indices``, re-indexed 0..k-1 in the order given.

        Class names follow their classes, so ``out.class_names[j] ==
        self.class_names[class_indices[j]]``.
        """
        chosen = [int(c) for c in np.asarray(class_indices).reshape(-1)]
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"class_indices has duplicates: {chosen}")
        bad = [c for c in chosen if not 0 <= c < self.num_classes]
        if bad:
            raise ValueError(f"class indices {bad} out of range [0, {self.num_classes})")
        new_id = np.full(self.num_classes, -1, dtype=np.int64)
        new_id[chosen] = np.arange(len(chosen), dtype=np.int64)
        keep = np.flatnonzero(new_id[self.class_ids] >= 0)
        labels = None if self.content_labels is None else self.content_labels[keep]
        return replace(
            self,
            images=self.images[keep],
            class_ids=new_id[self.class_ids[keep]],
            class_names=tuple(self.class_names[c] for c in chosen),
            content_labels=labels,
            meta=dict(self.meta),
        )

    def class_index(self, name: str) -> int:
        """The id of the class called ``name``; a KeyError lists a few valid names."""
        try:
            return self.class_names.index(name)
        except ValueError:
            few = ", ".join(self.class_names[:8]) + (", …" if self.num_classes > 8 else "")
            raise KeyError(f"no class {name!r} in {self.name} (classes: {few})") from None


def _check_images(images: object) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        got = getattr(images, "dtype", type(images).__name__)
        raise ValueError(f"images must be a uint8 numpy array, got {got}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, H, W, C), got {images.shape}")
    _, h, w, c = images.shape
    if h != w or h == 0:
        raise ValueError(f"images must be square and non-empty, got H={h}, W={w}")
    if c not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {c}")


def _check_classes(class_ids: object, class_names: tuple[str, ...], n: int) -> None:
    if not isinstance(class_ids, np.ndarray) or class_ids.dtype != np.int64:
        got = getattr(class_ids, "dtype", type(class_ids).__name__)
        raise ValueError(f"class_ids must be an int64 numpy array, got {got}")
    if class_ids.shape != (n,):
        raise ValueError(f"class_ids must have shape ({n},), got {class_ids.shape}")
    if not all(isinstance(name, str) for name in class_names):
        raise ValueError("class_names must all be strings")
    if len(set(class_names)) != len(class_names):
        raise ValueError("class_names must be unique")
    if n and (class_ids.min() < 0 or class_ids.max() >= len(class_names)):
        raise ValueError(
            f"class_ids must lie in [0, {len(class_names)}), "
            f"got [{class_ids.min()}, {class_ids.max()}]"
        )


def _check_content(labels: object, names: tuple[str, ...], n: int) -> None:
    if not all(isinstance(name, str) for name in names):
        raise ValueError("content_names must all be strings")
    if labels is None:
        if names:
            raise ValueError("content_names given without content_labels")
        return
    if not isinstance(labels, np.ndarray) or labels.dtype != np.int64:
        got = getattr(labels, "dtype", type(labels).__name__)
        raise ValueError(f"content_labels must be an int64 numpy array, got {got}")
    if labels.shape != (n, len(names)):
        raise ValueError(
            f"content_labels must have shape ({n}, {len(names)}) to match content_names "
            f"{names}, got {labels.shape}"
        )
    if labels.size and labels.min() < 0:
        raise ValueError("content_labels must be >= 0")


def split_classes(
    ds: ImageDataset,
    num_heldout: int | None = None,
    heldout_names: Sequence[str] | None = None,
    seed: int = 0,
) -> tuple[ImageDataset, ImageDataset]:
    """Hold out whole classes: returns (train, heldout), each re-indexed from 0.

    Give either ``num_heldout`` (classes drawn by ``numpy.random.default_rng(seed)``) or
    ``heldout_names``. Both results record the seed and the held-out names in
    ``meta["split"]``. This is LORD's evaluation protocol for unseen classes (e.g. Cars3D
    163 / 20).
    """
    if (num_heldout is None) == (heldout_names is None):
        raise ValueError("give exactly one of num_heldout and heldout_names")
    if heldout_names is not None:
        heldout = sorted(ds.class_index(name) for name in heldout_names)
        if len(set(heldout)) != len(heldout):
            raise ValueError(f"heldout_names has duplicates: {list(heldout_names)}")
        seed_used: int | None = None
    else:
        if not 0 < int(num_heldout) < ds.num_classes:
            raise ValueError(f"num_heldout must be in [1, {ds.num_classes - 1}], got {num_heldout}")
        rng = np.random.default_rng(seed)
        heldout = sorted(
            int(c) for c in rng.choice(ds.num_classes, int(num_heldout), replace=False)
        )
        seed_used = int(seed)
    heldout_set = set(heldout)
    train = [c for c in range(ds.num_classes) if c not in heldout_set]
    record = {
        "kind": "classes",
        "seed": seed_used,
        "num_heldout": len(heldout),
        "heldout_class_names": [ds.class_names[c] for c in heldout],
    }
    return (
        _with_split(ds.select_classes(train), record, "train"),
        _with_split(ds.select_classes(heldout), record, "heldout"),
    )


def split_images(
    ds: ImageDataset, fraction: float, seed: int = 0
) -> tuple[ImageDataset, ImageDataset]:
    """Hold out a seeded random ``fraction`` of the images: returns (train, heldout).

    Classes keep their ids and names in both parts (the same classes appear in both), for
    datasets whose evaluation holds out images rather than classes (e.g. FER2013-like).
    The seed and fraction are recorded in ``meta["split"]``; image order is preserved.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    num_heldout = int(round(fraction * ds.num_images))
    if not 0 < num_heldout < ds.num_images:
        raise ValueError(f"fraction {fraction} of {ds.num_images} images leaves a part empty")
    order = np.random.default_rng(seed).permutation(ds.num_images)
    heldout = np.sort(order[:num_heldout])
    train = np.sort(order[num_heldout:])
    record = {"kind": "images", "seed": int(seed), "fraction": float(fraction)}
    return (
        _with_split(ds.subset(train), record, "train"),
        _with_split(ds.subset(heldout), record, "heldout"),
    )


def split_groups(
    ds: ImageDataset, group: str, num_heldout: int, seed: int = 0
) -> tuple[ImageDataset, ImageDataset]:
    """Hold out whole groups of a content label (e.g. performers): returns (train, heldout).

    ``group`` names a column of ``content_names``; ``num_heldout`` of its values present in
    ``ds`` are drawn by ``numpy.random.default_rng(seed)``, and every image of a drawn value
    goes to the held-out part. Classes keep their ids and names in both parts (every class
    can appear on both sides): the unit held out is content, not class. The seed and the
    held-out values (names from ``meta["content_values"][group]`` where the reader lists
    them) are recorded in ``meta["split"]``. Values the reader lists in
    ``meta["never_heldout"][group]`` (e.g. photos added from another dataset) are never
    drawn: they always train, and the draw among the others is the one without them.
    """
    if group not in ds.content_names or ds.content_labels is None:
        raise ValueError(f"{ds.name} has no content label {group!r} (has {ds.content_names})")
    column = ds.content_labels[:, ds.content_names.index(group)]
    present = np.unique(column)
    names = (ds.meta.get("content_values") or {}).get(group)
    never = (ds.meta.get("never_heldout") or {}).get(group) or []
    if never:
        index = {n: i for i, n in enumerate(names)} if names else {}
        excluded = {index.get(n, n) for n in never}
        present = np.array([g for g in present if int(g) not in excluded], dtype=present.dtype)
    if not 0 < int(num_heldout) < len(present):
        raise ValueError(f"num_heldout must be in [1, {len(present) - 1}], got {num_heldout}")
    rng = np.random.default_rng(seed)
    heldout = np.sort(rng.choice(present, int(num_heldout), replace=False))
    mask = np.isin(column, heldout)
    record = {
        "kind": "groups",
        "group": group,
        "seed": int(seed),
        "num_heldout": len(heldout),
        "heldout_groups": [names[int(g)] if names else int(g) for g in heldout],
    }
    return (
        _with_split(ds.subset(~mask), record, "train"),
        _with_split(ds.subset(mask), record, "heldout"),
    )


def _with_split(ds: ImageDataset, record: dict, part: str) -> ImageDataset:
    meta = dict(ds.meta)
    meta["split"] = {**record, "part": part}
    return replace(ds, meta=meta)
