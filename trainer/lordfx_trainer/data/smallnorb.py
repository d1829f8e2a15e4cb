"""SmallNORB (LeCun, Huang & Bottou, CVPR 2004) from its official binary files.

Files (optionally ``.gz``): ``smallnorb-<...>-{training,testing}-{dat,cat,info}.mat``.
``dat`` is uint8 (N, 2, 96, 96) stereo pairs (only the left camera, index 0, is used);
``cat`` is int32 (N,) category 0..4 (animal, human, airplane, truck, car); ``info`` is
int32 (N, 4) = instance 0..9, elevation 0..8, azimuth 0,2,..,34 (stored as index 0..17),
lighting 0..5. Training and testing parts hold different instances (5 each per
category), so reading both gives all 50 objects.

Two configurations, named as in the LORD paper's Table 1:

* ``smallnorb``: class = object (category, instance), 50 classes; content = (elevation,
  azimuth, lighting).
* ``smallnorb-poses``: class = (category, instance, lighting), 300 classes; content =
  (elevation, azimuth): lighting is merged into the class so content is pose only.

Source of these definitions: the LORD paper (§5 / appendix) as summarised in this
project's brief; they could not be confirmed from the authors' code. The reference code
(avivga/lord and avivga/lord-pytorch ``dataset.py``) ships a single SmallNorb reader with
class = (category, instance, elevation, lighting, camera) and content = azimuth only; pass
``class_factors=("category", "instance", "elevation", "lighting")`` to reproduce it.

The binary format ("NORB binary matrix"): little-endian int32 magic (0x1E3D4C55 uint8,
0x1E3D4C54 int32, 0x1E3D4C56 int16, 0x1E3D4C51 float32, 0x1E3D4C53 float64), int32 ndim,
max(ndim, 3) int32 dims (only the first ndim count), then the data in C order.

Licence: SmallNORB is free for research; cite LeCun et al. 2004.
"""

from __future__ import annotations

import gzip
import logging
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lordfx.errors import InputError, UsageError

from .base import ImageDataset
from .images import check_size, to_canonical

logger = logging.getLogger(__name__)

NORB_DTYPES = {
    0x1E3D4C55: np.dtype("u1"),
    0x1E3D4C54: np.dtype("<i4"),
    0x1E3D4C56: np.dtype("<i2"),
    0x1E3D4C51: np.dtype("<f4"),
    0x1E3D4C53: np.dtype("<f8"),
}
CATEGORIES = ("animal", "human", "airplane", "truck", "car")
FACTORS = ("category", "instance", "elevation", "azimuth", "lighting")
FACTOR_SIZES = {"category": 5, "instance": 10, "elevation": 9, "azimuth": 18, "lighting": 6}
CONTENT_ORDER = ("elevation", "azimuth", "lighting")
PARTS = ("training", "testing")
LICENCE = "SmallNORB (LeCun et al. 2004): free for research; cite the paper"


def read_norb_matrix(path: Path) -> np.ndarray:
    """Read one NORB binary matrix (``.mat`` or ``.mat.gz``); InputError names the file.

    Shape: as stored, e.g. dat (N, 2, 96, 96) uint8, cat (N,) int32, info (N, 4) int32.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise InputError(path, f"cannot read ({exc})") from None
    if len(raw) < 20:
        raise InputError(path, "too short for a NORB binary matrix header")
    magic, ndim = struct.unpack_from("<ii", raw, 0)
    magic &= 0xFFFFFFFF
    if magic not in NORB_DTYPES:
        raise InputError(path, f"bad magic number 0x{magic:08X} (not a NORB binary matrix)")
    if not 1 <= ndim <= 16:
        raise InputError(path, f"implausible number of dimensions {ndim}")
    stored = max(ndim, 3)
    header = 8 + 4 * stored
    dims = struct.unpack_from(f"<{stored}i", raw, 8)[:ndim]
    dtype = NORB_DTYPES[magic]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if any(d < 0 for d in dims) or len(raw) != expected:
        raise InputError(
            path, f"size {len(raw)} bytes does not match header dims {dims} ({expected} bytes)"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def find_part_files(root: Path, part: str) -> dict[str, Path]:
    """The ``dat``/``cat``/``info`` files of ``part`` ("training" or "testing") in root."""
    found = {}
    for kind in ("dat", "cat", "info"):
        matches = sorted(root.glob(f"smallnorb-*-{part}-{kind}.mat")) + sorted(
            root.glob(f"smallnorb-*-{part}-{kind}.mat.gz")
        )
        if len(matches) != 1:
            problem = "no" if not matches else f"{len(matches)}"
            raise InputError(
                root / f"smallnorb-*-{part}-{kind}.mat",
                f"{problem} matching files (need exactly one, optionally .gz)",
            )
        found[kind] = matches[0]
    return found


def _read_part(root: Path, part: str, image_size: int, channels: int) -> tuple[np.ndarray, ...]:
    """Left-camera images and a (N, 5) factor table in FACTORS order."""
    files = find_part_files(root, part)
    dat, cat, info = (read_norb_matrix(files[k]) for k in ("dat", "cat", "info"))
    n = dat.shape[0]
    if dat.dtype != np.uint8 or dat.ndim != 4 or dat.shape[1] != 2:
        raise InputError(files["dat"], f"expected uint8 (N, 2, H, W), got {dat.dtype} {dat.shape}")
    if cat.shape != (n,) or cat.dtype.kind != "i":
        raise InputError(files["cat"], f"expected int ({n},), got {cat.dtype} {cat.shape}")
    if info.shape != (n, 4) or info.dtype.kind != "i":
        raise InputError(files["info"], f"expected int ({n}, 4), got {info.dtype} {info.shape}")
    factors = np.empty((n, 5), dtype=np.int64)
    factors[:, 0] = cat
    factors[:, 1] = info[:, 0]
    factors[:, 2] = info[:, 1]
    factors[:, 3] = info[:, 2] // 2  # stored as 0, 2, .., 34 (x10 degrees)
    factors[:, 4] = info[:, 3]
    _check_factors(factors, info, files)
    images = np.empty((n, image_size, image_size, channels), dtype=np.uint8)
    for i in range(n):
        images[i] = to_canonical(dat[i, 0], image_size, channels)
    return images, factors


def _check_factors(factors: np.ndarray, info: np.ndarray, files: dict[str, Path]) -> None:
    if np.any(info[:, 2] % 2):
        raise InputError(files["info"], "odd azimuth value (expected 0, 2, .., 34)")
    for j, name in enumerate(FACTORS):
        col = factors[:, j]
        if col.size and (col.min() < 0 or col.max() >= FACTOR_SIZES[name]):
            where = files["cat"] if name == "category" else files["info"]
            raise InputError(
                where,
                f"{name} values [{col.min()}, {col.max()}] outside [0, {FACTOR_SIZES[name]})",
            )


def load_smallnorb(
    root: Path,
    image_size: int,
    channels: int,
    *,
    class_factors: Sequence[str] = ("category", "instance"),
    parts: Sequence[str] = PARTS,
) -> ImageDataset:
    """The ``smallnorb`` configuration (class = object) or any other split of factors.

    ``class_factors`` name the factors that make up the class; every other factor except
    category/instance becomes a content label, in the order (elevation, azimuth,
    lighting). Class names look like ``animal-04`` or ``animal-04-lighting3``.

    Shape: both parts -> images (48600, S, S, C) uint8, content_labels (48600, K).
    """
    check_size(image_size, channels)
    root = Path(root)
    class_factors = tuple(class_factors)
    _check_options(class_factors, tuple(parts))
    if not root.is_dir():
        raise InputError(root, "no such folder (expected the SmallNORB .mat files)")
    chunks = [_read_part(root, part, image_size, channels) for part in parts]
    images = np.concatenate([c[0] for c in chunks])
    factors = np.concatenate([c[1] for c in chunks])
    class_cols = [FACTORS.index(f) for f in FACTORS if f in class_factors]
    keys, class_ids = np.unique(factors[:, class_cols], axis=0, return_inverse=True)
    content_names = tuple(f for f in CONTENT_ORDER if f not in class_factors)
    content = factors[:, [FACTORS.index(f) for f in content_names]]
    poses = class_factors == ("category", "instance", "lighting")
    return ImageDataset(
        name="smallnorb-poses" if poses else "smallnorb",
        images=images,
        class_ids=class_ids.reshape(-1).astype(np.int64),
        class_names=tuple(_class_name(k, [FACTORS[c] for c in class_cols]) for k in keys),
        content_labels=np.ascontiguousarray(content, dtype=np.int64),
        content_names=content_names,
        meta={
            "source": str(root),
            "reader": "smallnorb",
            "parts": list(parts),
            "camera": "left",
            "class_factors": [FACTORS[c] for c in class_cols],
            "azimuth_degrees": [20 * a for a in range(18)],
            "elevation_degrees": [30 + 5 * e for e in range(9)],
            "licence": LICENCE,
        },
    )


def load_smallnorb_poses(
    root: Path, image_size: int, channels: int, *, parts: Sequence[str] = PARTS
) -> ImageDataset:
    """The ``smallnorb-poses`` configuration: class = (category, instance, lighting),
    content = (elevation, azimuth). Shape: as :func:`load_smallnorb`, K = 2."""
    return load_smallnorb(
        root, image_size, channels, class_factors=("category", "instance", "lighting"), parts=parts
    )


def _check_options(class_factors: tuple[str, ...], parts: tuple[str, ...]) -> None:
    unknown = [f for f in class_factors if f not in FACTORS]
    if unknown or not class_factors:
        raise UsageError(f"class_factors {list(class_factors)}: choose from {list(FACTORS)}")
    if set(CONTENT_ORDER) <= set(class_factors):
        raise UsageError("class_factors leave no content factor (elevation/azimuth/lighting)")
    if not parts or any(p not in PARTS for p in parts) or len(set(parts)) != len(parts):
        raise UsageError(f"parts {list(parts)}: choose one or both of {list(PARTS)}")


def _class_name(key: np.ndarray, factor_names: list[str]) -> str:
    bits = []
    for value, name in zip(key.tolist(), factor_names, strict=True):
        if name == "category":
            bits.append(CATEGORIES[value])
        elif name == "instance":
            bits.append(f"{value:02d}")
        else:
            bits.append(f"{name}{value}")
    return "-".join(bits)
