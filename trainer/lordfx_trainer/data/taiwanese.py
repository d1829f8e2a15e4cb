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

``fer2013`` (a FER2013 folder, with ``fer2013_per_class`` > 0) adds that many seeded photos
of each expression from FER2013's de-duplicated train split, for expressions the posed data
barely shows (its observers named fear for 23 of 151 fear poses). They go through the same
detection and ``POSED_FRAMING`` crop (FER2013 images are tight face crops, so the crop's
margin beyond the image is edge-replicated) and, for a colour model, their grey is tiled to
RGB: colour vs grey, blur and the in-the-wild faces vary within every class alike, so they
are the content code's to carry, not the class code's. Each FER2013 photo is its own
performer ``fer:<expression>/<file stem>`` with type ``fer2013``; such performers are listed
in ``meta["never_heldout"]`` and :func:`~lordfx_trainer.data.base.split_groups` never holds
them out, so the held-out performers (and the seeded draw among them) stay those of the
posed data alone.

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
from collections.abc import Callable
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
# The seed of the FER2013 sample (fer2013_per_class photos per expression).
FER2013_SEED = 0
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
    fer2013: str = "",
    fer2013_per_class: int = 0,
    cache: bool = True,
    skip_bad: bool = False,
) -> ImageDataset:
    """The labelled front-view photos (module doc), cropped by the expressions plugin,
    plus ``fer2013_per_class`` FER2013 photos of each expression where ``fer2013`` is set.

    Shape: images (N, S, S, C) uint8, class_ids (N,) in EXPRESSIONS order, content_labels
    (N, 2) = (performer, type) indices into ``meta["content_values"]``.
    """
    check_size(image_size, channels)
    if crop not in CROPS:
        raise UsageError(f"taiwanese crop must be one of {', '.join(CROPS)}, got {crop!r}")
    if not 0.0 <= min_agreement <= 1.0:
        raise UsageError(f"taiwanese min_agreement must be in [0, 1], got {min_agreement}")
    if bool(fer2013) != (fer2013_per_class > 0):
        raise UsageError(
            "taiwanese fer2013 (a FER2013 folder) and fer2013_per_class (> 0) go together, "
            f"got fer2013={fer2013!r}, fer2013_per_class={fer2013_per_class}"
        )
    if fer2013 and crop != "face":
        raise UsageError("taiwanese fer2013 photos need crop='face' (they are framed by it)")
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
    if fer2013:
        extra, extra_fields, record = _fer2013_crops(
            Path(fer2013), fer2013_per_class, image_size, channels, cache
        )
        images = np.concatenate([images, extra])
        meta["fer2013"] = record
    else:
        extra_fields = []
    performers = sorted({f["performer"] for f in fields})
    types = sorted({f["type"] for f in fields})
    # FER2013 performers after the posed ones: the posed performers keep their indices
    performers += [f["performer"] for f in extra_fields]
    types += ["fer2013"] if extra_fields else []
    fields += extra_fields
    if extra_fields:
        meta["never_heldout"] = {"performer": [f["performer"] for f in extra_fields]}
    class_ids = np.array([EXPRESSIONS.index(LETTERS[f["letter"]]) for f in fields], np.int64)
    performer_id = {p: i for i, p in enumerate(performers)}
    type_id = {t: i for i, t in enumerate(types)}
    content = np.array(
        [[performer_id[f["performer"]], type_id[f["type"]]] for f in fields], np.int64
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


def _fer2013_crops(
    root: Path, per_class: int, image_size: int, channels: int, cache: bool
) -> tuple[np.ndarray, list[dict[str, str]], dict[str, object]]:
    """``per_class`` seeded FER2013 train photos of each expression (de-duplicated as
    :func:`~lordfx_trainer.data.fer2013.load_fer2013` does), detected and cropped like the
    posed photos; (images, their fields, a provenance record). Photos without a detected
    face are dropped and counted."""
    from lordfx.imageio import read_image

    from .fer2013 import LICENCE as FER2013_LICENCE
    from .fer2013 import _digest, dedup_indices, expression_files

    paths, labels = expression_files(root / "train")
    keep, _ = dedup_indices([_digest(p) for p in paths], labels)
    rng = np.random.default_rng([FER2013_SEED, per_class])
    chosen: list[Path] = []
    for k in range(len(EXPRESSIONS)):
        members = [paths[i] for i in keep if labels[i] == k]
        take = min(per_class, len(members))
        chosen += [members[i] for i in sorted(rng.choice(len(members), take, replace=False))]
    pre = _preprocessor(image_size, channels)
    boxes = _cached_boxes(chosen, pre, cache, skip_bad=False, key=_fer_key)
    letter_of = {name: letter for letter, name in LETTERS.items()}
    crops, fields, no_face = [], [], 0
    for path in chosen:
        box = boxes.get(_fer_key(path))
        if box is None:
            no_face += 1
            continue
        crops.append(pre.crop(read_image(path), box))
        name = path.parent.name
        fields.append(
            {"performer": f"fer:{name}/{path.stem}", "type": "fer2013", "letter": letter_of[name]}
        )
    counts = {n: sum(f["letter"] == k for f in fields) for k, n in LETTERS.items()}
    record = {
        "root": str(root),
        "split": "train",
        "dedup": True,
        "per_class": per_class,
        "seed": FER2013_SEED,
        "chosen": len(chosen),
        "no_face": no_face,
        "kept_per_class": counts,
        "colour": "grey tiled to RGB" if channels == 3 else "grey",
        "licence": FER2013_LICENCE,
    }
    logger.info("taiwanese + FER2013: %d photos added (%d without a face)", len(fields), no_face)
    empty = np.empty((0, image_size, image_size, channels), np.uint8)
    return (np.stack(crops) if crops else empty), fields, record


def posed_only(ds: ImageDataset) -> ImageDataset:
    """``ds`` without the FER2013 photos the reader added (``fer2013``): the posed photos
    alone, e.g. for a judge that must learn from the posed data only."""
    types = (ds.meta.get("content_values") or {}).get("type") or []
    if "fer2013" not in types or ds.content_labels is None:
        return ds
    column = ds.content_labels[:, ds.content_names.index("type")]
    return ds.subset(column != types.index("fer2013"))


def _fer_key(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


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
    from lordfx.imageio import read_image

    pre = _preprocessor(image_size, channels)
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


def _preprocessor(image_size: int, channels: int) -> object:
    try:
        from lordfx_expressions.preprocess import make_preprocessor
    except ImportError as exc:  # the plugin is a separate distribution
        raise UsageError(
            f"crop='face' needs the expressions plugin (lordfx_expressions): {exc}"
        ) from None
    return make_preprocessor(image_size=image_size, channels=channels)


def _cached_boxes(
    paths: list[Path],
    pre: object,
    cache: bool,
    skip_bad: bool,
    key: Callable[[Path], str] = lambda p: p.name,
) -> dict:
    """{key(path) (the file name): largest FaceBox or None (no face)}; unreadable files
    are absent.

    The cache maps each file's content digest to its box, so any subset of the photos
    (e.g. after ``min_agreement``) reuses it and only new files are detected."""
    from lordfx_faces.detect import FaceBox

    from lordfx.imageio import read_image

    digests = {}
    for path in paths:
        try:
            digests[key(path)] = hashlib.sha1(path.read_bytes()).hexdigest()
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
    missing = [p for p in paths if key(p) in digests and digests[key(p)] not in rows]
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
            del digests[key(path)]
            continue
        b = faces[0] if faces else None
        rows[digests[key(path)]] = None if b is None else [b.x, b.y, b.w, b.h, b.roll_degrees]
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
