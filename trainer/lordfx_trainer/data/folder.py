"""Generic folder-per-class images: ``root/<class>/**/<image>``; no content labels.

Each visible sub-folder of ``root`` is one class (sorted by name); its images are read
recursively in sorted order. Files with a non-image suffix, and files directly in
``root``, are skipped with a logged warning; hidden files and folders are ignored. A file
with an image suffix that cannot be decoded raises an InputError naming it, or is
skipped with a warning when ``skip_bad=True``. Class folders without images are dropped
with a warning. Suits e.g. FER2013's ``train/<expression>/`` or ORL's ``s<ID>/``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lordfx.errors import InputError

from .base import ImageDataset
from .images import IMAGE_SUFFIXES, check_size, is_image_file, read_image_files

logger = logging.getLogger(__name__)


def list_class_folders(root: Path) -> tuple[list[str], list[Path], list[int]]:
    """(class names, image paths, class index per path) of a folder-per-class tree."""
    names: list[str] = []
    paths: list[Path] = []
    labels: list[int] = []
    stray: list[Path] = []  # files outside class folders or without an image suffix
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            stray.append(entry)
            continue
        images = []
        for path in sorted(entry.rglob("*")):
            rel = path.relative_to(entry)
            if not path.is_file() or any(part.startswith(".") for part in rel.parts):
                continue
            (images if is_image_file(path) else stray).append(path)
        if not images:
            logger.warning("skipping class folder %s: no images", entry)
            continue
        labels += [len(names)] * len(images)
        names.append(entry.name)
        paths += images
    if stray:
        # One line, not one per file: a misplaced folder can hold thousands of them.
        examples = ", ".join(str(p) for p in stray[:3]) + (", …" if len(stray) > 3 else "")
        logger.warning(
            "skipped %d file(s) outside class folders or without an image suffix (%s): %s",
            len(stray),
            " ".join(IMAGE_SUFFIXES),
            examples,
        )
    return names, paths, labels


def load_folder(
    root: Path, image_size: int, channels: int, *, skip_bad: bool = False
) -> ImageDataset:
    """Images of ``root/<class>/**``; class = the top-level folder name.

    Shape: images (N, S, S, C) uint8, class_ids (N,), content_labels None.
    """
    check_size(image_size, channels)
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "no such folder")
    names, paths, labels = list_class_folders(root)
    if not paths:
        raise InputError(root, "no class folders with images (expected root/<class>/<image>)")
    images, kept = read_image_files(paths, image_size, channels, skip_bad=skip_bad)
    class_ids = np.asarray(labels, dtype=np.int64)[kept]
    return ImageDataset(
        name=root.name or "folder",
        images=images,
        class_ids=class_ids,
        class_names=tuple(names),
        meta={
            "source": str(root),
            "reader": "folder",
            "skip_bad": skip_bad,
            "num_skipped_bad": len(paths) - len(kept),
        },
    )
