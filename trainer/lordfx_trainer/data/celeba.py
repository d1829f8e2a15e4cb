"""CelebA (Liu et al., ICCV 2015) from an identity list: class = identity, no content labels.

Layout accepted: an identity file of ``<relative path> <identity>`` lines (CelebA's own
``identity_CelebA.txt`` format, or shared/data/celeba_faces/identities.txt) and the images
under ``root`` at those relative paths. The LORD paper's CelebA setup likewise uses the
identity as the class and leaves pose, expression, lighting and background unlabelled.
Images that are not square are centre-cropped to a square before resizing, so pass face
crops (e.g. celeba_faces/) rather than full photos.

Licence: CelebA is for non-commercial research only; models trained on it inherit that.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lordfx.errors import InputError, UsageError

from .base import ImageDataset
from .images import check_size, read_image_files

logger = logging.getLogger(__name__)

LICENCE = "CelebA: non-commercial research purposes only; no redistribution"


def read_pairs(path: Path, columns: int = 2) -> list[list[str]]:
    """Whitespace-separated lines of at least ``columns`` fields (blank and # lines skipped).

    An InputError names the file and the line for a malformed line.
    """
    if not path.is_file():
        raise InputError(path, "no such file")
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read as UTF-8 text ({exc})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < columns:
            raise InputError(path, f"line {lineno}: expected {columns} fields, got {line!r}")
        rows.append(fields)
    return rows


def load_celeba(
    root: Path,
    image_size: int,
    channels: int,
    *,
    identities: str | Path = "identities.txt",
    exclude: str | Path | None = None,
    min_images_per_class: int = 1,
    skip_bad: bool = False,
) -> ImageDataset:
    """Images listed in ``identities`` (relative to ``root`` unless absolute).

    ``exclude`` lists paths to drop (first field per line, e.g. nonface_suspects.txt);
    identities with fewer than ``min_images_per_class`` remaining images are dropped.
    Classes are sorted numerically when all identities are numbers.

    Shape: images (N, S, S, C) uint8, class_ids (N,), content_labels None.
    """
    check_size(image_size, channels)
    if min_images_per_class < 1:
        raise UsageError(f"min_images_per_class must be >= 1, got {min_images_per_class}")
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "no such folder (expected CelebA images)")
    id_file = _resolve(root, identities)
    rows = read_pairs(id_file)
    excluded = set()
    if exclude is not None:
        excluded = {row[0] for row in read_pairs(_resolve(root, exclude), columns=1)}
    num_listed = len(rows)
    rows = [row for row in rows if row[0] not in excluded]
    num_excluded = num_listed - len(rows)
    logger.info("CelebA: %d images listed, %d excluded", num_listed, num_excluded)
    counts: dict[str, int] = {}
    for _, ident in rows:
        counts[ident] = counts.get(ident, 0) + 1
    kept_ids = sorted((i for i, c in counts.items() if c >= min_images_per_class), key=_sort_key)
    if not kept_ids:
        raise InputError(id_file, f"no identity has {min_images_per_class} or more images")
    index = {ident: k for k, ident in enumerate(kept_ids)}
    rows = [row for row in rows if row[1] in index]
    images, kept = read_image_files(
        [root / rel for rel, _ in rows], image_size, channels, skip_bad=skip_bad
    )
    class_ids = np.array([index[rows[i][1]] for i in kept], dtype=np.int64)
    return ImageDataset(
        name="celeba",
        images=images,
        class_ids=class_ids,
        class_names=tuple(kept_ids),
        meta={
            "source": str(root),
            "reader": "celeba",
            "identities_file": str(id_file),
            "exclude_file": None if exclude is None else str(_resolve(root, exclude)),
            "num_excluded": num_excluded,
            "min_images_per_class": min_images_per_class,
            "licence": LICENCE,
        },
    )


def _resolve(root: Path, name: str | Path) -> Path:
    p = Path(name)
    return p if p.is_absolute() else root / p


def _sort_key(ident: str) -> tuple[int, int | str]:
    # Numeric identities sort as numbers (7201 < 10000), anything else after, as text.
    return (0, int(ident)) if ident.isdigit() else (1, ident)
