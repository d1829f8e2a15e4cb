"""RaFD (Langner et al., Cognition & Emotion 2010) from its file-name convention.

Names look like ``Rafd090_01_Caucasian_female_angry_frontal.jpg``: camera angle in
degrees (000, 045, 090, 135, 180), subject id, ethnicity, gender, expression, gaze
(frontal, left, right). Files may sit anywhere below ``root``; files whose names do not
follow the convention are skipped with one logged warning.

``class_by="expression"`` (the LORD paper's RaFD setup: class = expression): content
labels = (angle, gaze, identity). ``class_by="identity"``: content labels = (angle, gaze,
expression). Each content label is an index into the sorted values found, listed in
``meta["content_values"]`` (angles sorted numerically).

RaFD portraits are 681x1024 (W x H); they are centre-cropped to a square. The reference
code crops around a dlib face detection instead; face alignment belongs to the faces
plugin's preprocessing, not to this reader.

Licence: RaFD is for non-commercial scientific research by registered users only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lordfx.errors import InputError, UsageError

from .base import ImageDataset
from .images import check_size, is_image_file, read_image_files

logger = logging.getLogger(__name__)

NAME_RE = re.compile(
    r"^Rafd(?P<angle>\d+)_(?P<identity>\d+)_(?P<ethnicity>[A-Za-z]+)_(?P<gender>[A-Za-z]+)"
    r"_(?P<expression>[A-Za-z]+)_(?P<gaze>[A-Za-z]+)$",
    re.IGNORECASE,
)
CLASS_BY = ("expression", "identity")
LICENCE = "RaFD: non-commercial scientific research by registered users only"


def parse_rafd_name(path: Path) -> dict[str, str] | None:
    """The fields of a RaFD file name (lower-cased words, digits as written), or None."""
    m = NAME_RE.match(path.stem)
    if m is None:
        return None
    fields = m.groupdict()
    return {k: v if k in ("angle", "identity") else v.lower() for k, v in fields.items()}


def load_rafd(
    root: Path,
    image_size: int,
    channels: int,
    *,
    class_by: str = "expression",
    angles: Sequence[int] | None = None,
    skip_bad: bool = False,
) -> ImageDataset:
    """RaFD images, class = expression or identity; ``angles`` keeps only those cameras.

    Shape: images (N, S, S, C) uint8, class_ids (N,), content_labels (N, 3).
    """
    check_size(image_size, channels)
    if class_by not in CLASS_BY:
        raise UsageError(f"class_by must be one of {list(CLASS_BY)}, got {class_by!r}")
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "no such folder (expected RaFD images)")
    files, records = _scan(root, angles)
    if not files:
        raise InputError(root, "no RaFD-named images (Rafd<angle>_<id>_..._<gaze>.jpg) found")
    other = "identity" if class_by == "expression" else "expression"
    content_names = ("angle", "gaze", other)
    values = {
        name: sorted({r[name] for r in records}, key=_sort_key)
        for name in (class_by, *content_names)
    }
    index = {name: {v: i for i, v in enumerate(vals)} for name, vals in values.items()}
    images, kept = read_image_files(files, image_size, channels, skip_bad=skip_bad)
    kept_records = [records[i] for i in kept]
    class_ids = np.array([index[class_by][r[class_by]] for r in kept_records], dtype=np.int64)
    content = np.array(
        [[index[n][r[n]] for n in content_names] for r in kept_records], dtype=np.int64
    ).reshape(len(kept_records), len(content_names))
    return ImageDataset(
        name="rafd",
        images=images,
        class_ids=class_ids,
        class_names=tuple(values[class_by]),
        content_labels=content,
        content_names=content_names,
        meta={
            "source": str(root),
            "reader": "rafd",
            "class_by": class_by,
            "content_values": {n: values[n] for n in content_names},
            "angles": None if angles is None else [int(a) for a in angles],
            "licence": LICENCE,
        },
    )


def _scan(root: Path, angles: Sequence[int] | None) -> tuple[list[Path], list[dict[str, str]]]:
    wanted = None if angles is None else {int(a) for a in angles}
    files, records, odd = [], [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        fields = parse_rafd_name(path) if is_image_file(path) else None
        if fields is None:
            odd.append(path)
            continue
        if wanted is not None and int(fields["angle"]) not in wanted:
            continue
        files.append(path)
        records.append(fields)
    if odd:
        logger.warning(
            "RaFD: skipped %d file(s) not named Rafd<angle>_<id>_<ethnicity>_<gender>_"
            "<expression>_<gaze>.<image suffix>, e.g. %s",
            len(odd),
            odd[0],
        )
    return files, records


def _sort_key(value: str) -> tuple[int, int | str]:
    # "045" < "090" < "135" as numbers; words alphabetically.
    return (0, int(value)) if value.isdigit() else (1, value)
