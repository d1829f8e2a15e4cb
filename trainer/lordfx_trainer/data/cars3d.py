"""Cars3D (Reed et al., NIPS 2015) from its original ``car_*_mesh.mat`` files.

Each file is one car CAD model rendered from 24 azimuths x 4 elevations: ``im`` is uint8
(128, 128, 3, 24, 4) = H, W, RGB, azimuth, elevation. Class = car model (file stem,
sorted); content labels = (azimuth index, elevation index), known exactly. Azimuth index
a is 15·a degrees, elevation index e is 6·e degrees (the files' YAW_LIST / PITCH_LIST).

Licence: no licence in the original release; research use only. Never commit the files.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.io

from lordfx.errors import InputError

from .base import ImageDataset, split_classes
from .images import check_size, to_canonical

logger = logging.getLogger(__name__)

NUM_AZIMUTHS = 24
NUM_ELEVATIONS = 4
#: Paper protocol (LORD §5, following DVAN): 163 training cars, 20 held out.
NUM_HELDOUT_CARS = 20
LICENCE = "Cars3D: no licence stated in the original release; research use only"
_CACHE_VERSION = 1


def load_cars3d(
    root: Path,
    image_size: int,
    channels: int,
    *,
    cars: Sequence[str] | None = None,
    cache_dir: Path | None = None,
) -> ImageDataset:
    """Read every ``car_*_mesh.mat`` under ``root`` (or only the stems in ``cars``).

    Images are ordered car by car, then elevation, then azimuth. With ``cache_dir`` the
    resized arrays are stored as one ``.npz`` keyed by the file list, sizes and
    modification times, and reused on the next call.

    Shape: 183 files -> images (17568, S, S, C) uint8, class_ids (17568,),
    content_labels (17568, 2) = (azimuth 0..23, elevation 0..3).
    """
    check_size(image_size, channels)
    root = Path(root)
    files = _list_files(root, cars)
    key = _cache_key(files, image_size, channels)
    cache = None if cache_dir is None else Path(cache_dir) / f"cars3d-{key}.npz"
    arrays = _read_cache(cache) if cache is not None else None
    if arrays is None:
        start = time.perf_counter()
        arrays = _read_files(files, image_size, channels)
        logger.info("read %d Cars3D files in %.1fs", len(files), time.perf_counter() - start)
        if cache is not None:
            _write_cache(cache, arrays)
    images, class_ids, content = arrays
    return ImageDataset(
        name="cars3d",
        images=images,
        class_ids=class_ids,
        class_names=tuple(f.stem for f in files),
        content_labels=content,
        content_names=("azimuth", "elevation"),
        meta={
            "source": str(root),
            "reader": "cars3d",
            "azimuth_degrees": [15 * a for a in range(NUM_AZIMUTHS)],
            "elevation_degrees": [6 * e for e in range(NUM_ELEVATIONS)],
            "licence": LICENCE,
        },
    )


def split_cars3d(
    ds: ImageDataset, seed: int = 0, num_heldout: int = NUM_HELDOUT_CARS
) -> tuple[ImageDataset, ImageDataset]:
    """The paper's Cars3D protocol: (163 training cars, 20 held-out cars) for all 183.

    The LORD reference code (avivga/lord and avivga/lord-pytorch, ``lord.py
    split-classes``) draws the test classes with an *unseeded* ``np.random.choice``, so
    the paper's exact 20 cars are not recoverable. Here they are drawn by
    ``numpy.random.default_rng(seed)`` over the sorted car names; the seed and the names
    are recorded in ``meta["split"]``.
    """
    if ds.num_classes != 183:
        logger.warning("Cars3D has 183 cars; this dataset has %d", ds.num_classes)
    train, heldout = split_classes(ds, num_heldout=num_heldout, seed=seed)
    return _with_protocol(train), _with_protocol(heldout)


def _with_protocol(ds: ImageDataset) -> ImageDataset:
    note = "LORD Cars3D 163/20 protocol; held-out cars drawn by numpy default_rng(seed)"
    return replace(ds, meta={**ds.meta, "split": {**ds.meta["split"], "protocol": note}})


def _list_files(root: Path, cars: Sequence[str] | None) -> list[Path]:
    if not root.is_dir():
        raise InputError(root, "no such folder (expected the Cars3D car_*_mesh.mat files)")
    if cars is None:
        files = sorted(root.glob("car_*_mesh.mat"))
        if not files:
            raise InputError(root, "no car_*_mesh.mat files in this folder")
        return files
    files = [root / f"{Path(name).stem}.mat" for name in sorted(set(cars))]
    for f in files:
        if not f.is_file():
            raise InputError(f, "no such Cars3D file")
    return files


def _read_one(path: Path, image_size: int, channels: int) -> np.ndarray:
    """One car's 96 views. Shape: (4 elevations, 24 azimuths, S, S, C) uint8."""
    try:
        im = scipy.io.loadmat(path, variable_names=["im"]).get("im")
    except Exception as exc:  # scipy raises many types for a bad .mat; all mean "corrupt"
        raise InputError(path, f"cannot read MATLAB file ({type(exc).__name__}: {exc})") from None
    expected = (NUM_AZIMUTHS, NUM_ELEVATIONS)
    if im is None:
        raise InputError(path, "no 'im' array in this .mat file (not a Cars3D file?)")
    if im.dtype != np.uint8 or im.ndim != 5 or im.shape[2] != 3 or im.shape[3:] != expected:
        raise InputError(path, f"'im' is {im.dtype} {im.shape}, expected uint8 (H, W, 3, 24, 4)")
    out = np.empty((NUM_ELEVATIONS, NUM_AZIMUTHS, image_size, image_size, channels), np.uint8)
    for e in range(NUM_ELEVATIONS):
        for a in range(NUM_AZIMUTHS):
            out[e, a] = to_canonical(im[:, :, :, a, e], image_size, channels)
    return out


def _read_files(
    files: list[Path], image_size: int, channels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    per_car = NUM_AZIMUTHS * NUM_ELEVATIONS
    images = np.empty((len(files) * per_car, image_size, image_size, channels), np.uint8)
    workers = min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # zlib and cv2 release the GIL
        views = pool.map(lambda f: _read_one(f, image_size, channels), files)
        for i, car in enumerate(views):
            images[i * per_car : (i + 1) * per_car] = car.reshape(per_car, *car.shape[2:])
    class_ids = np.repeat(np.arange(len(files), dtype=np.int64), per_car)
    elevation, azimuth = np.divmod(np.arange(per_car, dtype=np.int64), NUM_AZIMUTHS)
    content = np.tile(np.stack([azimuth, elevation], axis=1), (len(files), 1))
    return images, class_ids, content


def _cache_key(files: list[Path], image_size: int, channels: int) -> str:
    h = hashlib.sha256(f"v{_CACHE_VERSION} {image_size} {channels}".encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()} {st.st_size} {st.st_mtime_ns}\n".encode())
    return f"{image_size}px-{channels}ch-{h.hexdigest()[:16]}"


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = (z["images"], z["class_ids"], z["content_labels"])
        logger.info("Cars3D read from cache %s", path)
        return arrays
    except Exception as exc:  # a damaged cache is rebuilt, never trusted
        logger.warning("ignoring unreadable cache %s (%s); re-reading the .mat files", path, exc)
        return None


def _write_cache(path: Path, arrays: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            images, class_ids, content = arrays
            np.savez(fh, images=images, class_ids=class_ids, content_labels=content)
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache behind
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote Cars3D cache %s", path)
