"""taiwanese_expressions: posed facial expressions, class = expression, content = performer.

Layout (shared/data/taiwanese_expressions, see its README): ``images/PPTVeNN.jpg`` with
performer ``PP``, performance type ``T`` (1 theatrical, 2 Ekman FACS criteria, 3 personal
event), view ``V`` (1 = front), expression letter ``e`` (a neutral, b happy, c sad, d angry,
e disgusted, f fearful, g surprised) and serial ``NN``; 128×128 colour photos. Files whose
letter is ``0`` carry no expression and are skipped (the README lists 9). The class ids
follow FER2013's seven names and order (:data:`lordfx_trainer.data.fer2013.EXPRESSIONS`),
the names the expressions plugin uses. Content labels: (performer, type); hold performers
out with :func:`lordfx_trainer.data.base.split_groups` (config ``heldout_group =
"performer"``).

Pixels go through the expressions plugin's own face preprocessing
(:class:`lordfx_expressions.preprocess.ExpressionPreprocessor`: its ``detect`` and the
crop framing of the model's channels), so a model trained on these crops sees photos framed
the same way at edit time. ``crop="none"`` keeps the whole photo (centre square, the
canonical resize) instead. Haar detection is the slow part (~0.2 s a photo on one core);
one photo at a time; its boxes are cached per file content in ``$LORDFX_CACHE/faces`` (else
``~/.cache/lordfx/faces``). Photos without a detected face are dropped and listed in
``meta["no_face"]``.

``min_agreement`` drops posed non-neutral photos that fewer than that share of the
database's observers rated as the posed expression (``image_info.csv``, ``counterMax``
columns; neutral has no rating category and is kept).

Licence: none stated in the distribution; identifiable people, research only: never
redistribute the photos; models trained on them inherit that restriction.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from lordfx.errors import InputError, UsageError

from .base import ImageDataset
from .fer2013 import EXPRESSIONS
from .images import check_size, is_image_file, read_image_files

logger = logging.getLogger(__name__)

LICENCE = (
    "taiwanese_expressions (Frontiers in Psychology 2023, doi:10.3389/fpsyg.2023.1201145): "
    "no licence stated; photos of identifiable people, research use only, never "
    "redistributed; models trained on them are research-only"
)
NAME_RE = re.compile(
    r"^(?P<performer>\d{2})(?P<type>\d)(?P<view>\d)(?P<letter>[a-g0])(?P<serial>\d{2})$"
)
LETTERS = {
    "a": "neutral",
    "b": "happy",
    "c": "sad",
    "d": "angry",
    "e": "disgust",
    "f": "fear",
    "g": "surprise",
}
# image_info.csv's six rated categories, in its column order, as EXPRESSIONS names.
RATED = ("happy", "sad", "angry", "disgust", "fear", "surprise")
CROPS = ("face", "none")
RATINGS_FILE = "image_info.csv"
# Bump when the plugin's detect() changes what it finds: cached boxes then go stale.
BOX_CACHE_VERSION = "expressions-detect-1"


def parse_name(path: Path) -> dict[str, str] | None:
    """The fields of a taiwanese_expressions file name, or None for other names."""
    m = NAME_RE.match(path.stem)
    return None if m is None else m.groupdict()


def read_ratings(path: Path) -> dict[str, dict[str, float]]:
    """Observers' shares per rated category for each file stem (``image_info.csv``: two
    header rows, file names ending ``.tif``; the first six columns after ``EntropyVal`` are
    the ``counterMax`` shares). Shape: → {stem: {expression name: share in [0, 1]}}."""
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8-sig").splitlines()))
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
    if len(rows) < 3 or "counterMax" not in rows[0]:
        raise InputError(path, "not the database's image_info table (no counterMax column)")
    start = rows[0].index("counterMax")
    if [c.strip().lower() for c in rows[1][start : start + 6]] != [
        "happy", "sad", "angry", "disgusted", "fearful", "surprised",
    ]:  # fmt: skip
        raise InputError(path, "unexpected counterMax categories in the second header row")
    out: dict[str, dict[str, float]] = {}
    for row in rows[2:]:
        if not row or not row[0].strip():
            continue
        try:
            shares = [float(v) for v in row[start : start + 6]]
        except ValueError:
            continue  # a row without ratings
        out[Path(row[0].strip()).stem] = dict(zip(RATED, shares, strict=True))
    return out


def load_taiwanese(
    root: Path,
    image_size: int,
    channels: int,
    *,
    crop: str = "face",
    min_agreement: float = 0.0,
    cache: bool = True,
    skip_bad: bool = False,
) -> ImageDataset:
    """The labelled front-view photos (module doc), cropped by the expressions plugin.

    Shape: images (N, S, S, C) uint8, class_ids (N,) in EXPRESSIONS order, content_labels
    (N, 2) = (performer, type) indices into ``meta["content_values"]``.
    """
    check_size(image_size, channels)
    if crop not in CROPS:
        raise UsageError(f"taiwanese crop must be one of {', '.join(CROPS)}, got {crop!r}")
    if not 0.0 <= min_agreement <= 1.0:
        raise UsageError(f"taiwanese min_agreement must be in [0, 1], got {min_agreement}")
    root = Path(root)
    paths, fields, unlabelled, num_files, dropped = _select(root, min_agreement)
    meta: dict[str, object] = {
        "source": str(root),
        "reader": "taiwanese",
        "crop": crop,
        "num_files": num_files,
        "unlabelled_skipped": unlabelled,
    }
    if dropped is not None:
        meta |= {"min_agreement": min_agreement, "dropped_by_ratings": dropped}
    if crop == "face":
        images, kept, no_face = _face_crops(paths, image_size, channels, cache, skip_bad)
        meta |= {"framing": _framing_record(channels), "no_face": no_face}
    else:
        images, kept = read_image_files(paths, image_size, channels, skip_bad=skip_bad)
    fields = [fields[i] for i in kept]
    performers = sorted({f["performer"] for f in fields})
    types = sorted({f["type"] for f in fields})
    class_ids = np.array([EXPRESSIONS.index(LETTERS[f["letter"]]) for f in fields], np.int64)
    content = np.array(
        [[performers.index(f["performer"]), types.index(f["type"])] for f in fields], np.int64
    ).reshape(len(fields), 2)
    meta["content_values"] = {"performer": performers, "type": types}
    logger.info("taiwanese: %d photos of %d performers (%s)", len(fields), len(performers), crop)
    return ImageDataset(
        name="taiwanese",
        images=images,
        class_ids=class_ids,
        class_names=EXPRESSIONS,
        content_labels=content,
        content_names=("performer", "type"),
        meta=meta | {"licence": LICENCE},
    )


def labelled_paths(root: Path, min_agreement: float = 0.0) -> list[Path]:
    """The photos :func:`load_taiwanese` reads, in its order, before face detection (those
    without a detected face are then dropped and listed in ``meta["no_face"]``)."""
    return _select(Path(root), min_agreement)[0]


def _select(root: Path, min_agreement: float) -> tuple[
    list[Path], list[dict[str, str]], list[str], int, dict[str, int] | None
]:  # fmt: skip
    """(paths, fields, unlabelled names, files seen, ratings-filter counts or None)."""
    folder = root / "images" if (root / "images").is_dir() else root
    paths, fields, unlabelled = _scan(folder)
    if not paths:
        raise InputError(folder, "no taiwanese_expressions photos (PPTVeNN.jpg) found")
    num_files, dropped = len(paths) + len(unlabelled), None
    if min_agreement > 0:
        paths, fields, dropped = _filter_by_ratings(
            root / RATINGS_FILE, paths, fields, min_agreement
        )
    return paths, fields, unlabelled, num_files, dropped


def _scan(folder: Path) -> tuple[list[Path], list[dict[str, str]], list[str]]:
    paths, fields, unlabelled, odd = [], [], [], 0
    for path in sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p)):
        f = parse_name(path)
        if f is None:
            odd += 1
        elif f["letter"] == "0":
            unlabelled.append(path.name)
        else:
            paths.append(path)
            fields.append(f)
    if odd:
        logger.warning("taiwanese: skipped %d image(s) not named PPTVeNN", odd)
    if unlabelled:
        logger.info("taiwanese: skipped %d unlabelled file(s) (letter 0)", len(unlabelled))
    return paths, fields, unlabelled


def _filter_by_ratings(
    table: Path, paths: list[Path], fields: list[dict[str, str]], threshold: float
) -> tuple[list[Path], list[dict[str, str]], dict[str, int]]:
    if not table.is_file():
        raise InputError(table, "no such file (min_agreement needs the observers' ratings)")
    ratings = read_ratings(table)
    keep, dropped = [], {"low_agreement": 0, "unrated_kept": 0}
    for i, (path, f) in enumerate(zip(paths, fields, strict=True)):
        name = LETTERS[f["letter"]]
        shares = ratings.get(path.stem)
        if name == "neutral":
            keep.append(i)
        elif shares is None:
            dropped["unrated_kept"] += 1
            keep.append(i)
        elif shares[name] >= threshold:
            keep.append(i)
        else:
            dropped["low_agreement"] += 1
    return [paths[i] for i in keep], [fields[i] for i in keep], dropped


def _framing_record(channels: int) -> dict[str, object]:
    from lordfx_expressions.preprocess import make_preprocessor

    pre = make_preprocessor(channels=channels)
    return {"scale": pre.framing.scale, "drop": pre.framing.drop, "by": "lordfx_expressions"}


def _face_crops(
    paths: list[Path], image_size: int, channels: int, cache: bool, skip_bad: bool
) -> tuple[np.ndarray, list[int], list[str]]:
    """Crops of the largest face of each photo; (images, indices kept, names without face)."""
    try:
        from lordfx_expressions.preprocess import make_preprocessor
    except ImportError as exc:  # the plugin is a separate distribution
        raise UsageError(
            f"crop='face' needs the expressions plugin (lordfx_expressions): {exc}"
        ) from None
    from lordfx.imageio import read_image

    pre = make_preprocessor(image_size=image_size, channels=channels)
    boxes = _cached_boxes(paths, pre, cache, skip_bad)
    out = np.empty((len(paths), image_size, image_size, channels), np.uint8)
    kept: list[int] = []
    no_face: list[str] = []
    for i, path in enumerate(paths):
        box = boxes.get(path.name)
        if box is None:
            if path.name not in boxes:
                continue  # unreadable, skipped (skip_bad) and already logged
            no_face.append(path.name)
            continue
        out[len(kept)] = pre.crop(read_image(path), box)
        kept.append(i)
    if no_face:
        logger.warning(
            "taiwanese: no face detected in %d photo(s), dropped: %s", len(no_face), no_face
        )
    return out[: len(kept)], kept, no_face


def _cached_boxes(paths: list[Path], pre: object, cache: bool, skip_bad: bool) -> dict:
    """{file name: largest FaceBox or None (no face)}; unreadable files are absent.

    The cache maps each file's content digest to its box, so any subset of the photos
    (e.g. after ``min_agreement``) reuses it and only new files are detected."""
    from lordfx_faces.detect import FaceBox

    from lordfx.imageio import read_image

    digests = {}
    for path in paths:
        try:
            digests[path.name] = hashlib.sha1(path.read_bytes()).hexdigest()
        except OSError as exc:
            if not skip_bad:
                raise InputError(path, f"cannot read ({exc.strerror or exc})") from None
            logger.warning("skipping unreadable image %s", path)
    file = _cache_dir() / f"taiwanese-boxes-{BOX_CACHE_VERSION}.json"
    rows: dict[str, list | None] = {}
    if cache and file.is_file():
        try:
            rows = dict(json.loads(file.read_text()))
        except (OSError, ValueError, TypeError):
            logger.warning("ignoring unreadable box cache %s", file)
    missing = [p for p in paths if p.name in digests and digests[p.name] not in rows]
    if missing:
        # One photo at a time: OpenCV's cascade classifiers are not safe to share across
        # threads.
        logger.info("taiwanese: detecting faces in %d photos (cached afterwards)", len(missing))
    for path in missing:
        try:
            faces = pre.detect(read_image(path))  # type: ignore[attr-defined]
        except InputError:
            if not skip_bad:
                raise
            logger.warning("skipping unreadable image %s", path)
            del digests[path.name]
            continue
        b = faces[0] if faces else None
        rows[digests[path.name]] = None if b is None else [b.x, b.y, b.w, b.h, b.roll_degrees]
    if cache and missing:
        _write_atomic(file, json.dumps(rows))
    out = {}
    for name, digest in digests.items():
        box = rows[digest]
        out[name] = None if box is None else FaceBox(*box[:4], roll_degrees=float(box[4]))
    return out


def _cache_dir() -> Path:
    base = os.environ.get("LORDFX_CACHE")
    if base:
        return Path(base) / "faces"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lordfx" / "faces"


def _write_atomic(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:  # a cache is an optimisation: never fail the read over it
        logger.warning("cannot write the box cache %s (%s)", path, exc)
