"""KTH human actions (Schüldt, Laptev & Caputo, ICPR 2004) as folders of video frames.

Layout accepted (frames already extracted from the videos)::

    root/<person>/<action>/**/<frame>.png|jpg|...

e.g. ``root/person01/walking/d1/0001.png``; anything below the action folder (scenario
folders d1..d4, sequence folders) is read recursively in sorted order. Class = person
(folder), content label = action (index into the sorted action names, listed in
``meta["content_values"]``). Hidden files are ignored; non-image files are skipped with
one logged warning. ``frame_step`` keeps every n-th frame of each action folder (KTH
videos are 25 fps, consecutive frames are near duplicates).

KTH frames are 160x120 grey; they are centre-cropped to 120x120 before resizing. The
LORD reference code uses one action (hand-waving) in scenario d4 with class = person.

Licence: KTH is free for non-commercial research; cite the paper.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lordfx.errors import InputError, UsageError

from .base import ImageDataset
from .images import check_size, is_image_file, read_image_files

logger = logging.getLogger(__name__)

LICENCE = "KTH actions: non-commercial research use; cite Schüldt et al. 2004"


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _frames(action_dir: Path, frame_step: int, skipped: list[Path]) -> list[Path]:
    files = []
    for path in sorted(action_dir.rglob("*")):
        rel = path.relative_to(action_dir)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        if is_image_file(path):
            files.append(path)
        else:
            skipped.append(path)
    return files[::frame_step]


def load_kth(
    root: Path,
    image_size: int,
    channels: int,
    *,
    actions: Sequence[str] | None = None,
    frame_step: int = 1,
    skip_bad: bool = False,
) -> ImageDataset:
    """Frames under ``root/<person>/<action>/``; ``actions`` keeps only those actions.

    Shape: images (N, S, S, C) uint8, class_ids (N,) person, content_labels (N, 1) action.
    """
    check_size(image_size, channels)
    if frame_step < 1:
        raise UsageError(f"frame_step must be >= 1, got {frame_step}")
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "no such folder (expected root/<person>/<action>/frames)")
    wanted = None if actions is None else set(actions)
    paths: list[Path] = []
    people: list[str] = []
    action_of: list[str] = []
    skipped: list[Path] = []
    for person_dir in _visible_dirs(root):
        for action_dir in _visible_dirs(person_dir):
            if wanted is not None and action_dir.name not in wanted:
                continue
            frames = _frames(action_dir, frame_step, skipped)
            paths += frames
            people += [person_dir.name] * len(frames)
            action_of += [action_dir.name] * len(frames)
    if skipped:
        logger.warning("KTH: skipped %d non-image file(s), e.g. %s", len(skipped), skipped[0])
    if not paths:
        raise InputError(root, "no frames found under <person>/<action>/ folders")
    if wanted is not None and wanted - set(action_of):
        raise UsageError(f"actions {sorted(wanted - set(action_of))} not found under {root}")
    images, kept = read_image_files(paths, image_size, channels, skip_bad=skip_bad)
    person_names = sorted(set(people))
    action_names = sorted(set(action_of))
    p_index = {p: i for i, p in enumerate(person_names)}
    a_index = {a: i for i, a in enumerate(action_names)}
    return ImageDataset(
        name="kth",
        images=images,
        class_ids=np.array([p_index[people[i]] for i in kept], dtype=np.int64),
        class_names=tuple(person_names),
        content_labels=np.array([[a_index[action_of[i]]] for i in kept], dtype=np.int64).reshape(
            len(kept), 1
        ),
        content_names=("action",),
        meta={
            "source": str(root),
            "reader": "kth",
            "content_values": {"action": action_names},
            "frame_step": frame_step,
            "licence": LICENCE,
        },
    )
