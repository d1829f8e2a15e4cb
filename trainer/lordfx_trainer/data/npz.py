"""The canonical dataset as one ``.npz`` file: what any reader returned, prepared once.

Written by ``lordfx export-data PRESET --data PATH --out FILE.npz`` (see
:func:`write_npz`), read back by the ``npz`` reader (``--set dataset=npz --data FOLDER``,
the folder holding exactly one ``.npz``) as the very same :class:`ImageDataset`: images,
class ids and names, content labels and names, ``name`` and ``meta``. The split is not
stored as data: :func:`~lordfx_trainer.train.prepare_data` draws it again from the same
class names with the same seed, so the held-out classes are identical; the ones drawn at
export time are recorded in the file's ``export.split`` to check that.

Layout (``np.load(path, allow_pickle=False)`` reads it; members may be LZMA-compressed,
which numpy's zip reader handles):
    images          uint8 (N, S, S, C)
    class_ids       int64 (N,)
    content_labels  int64 (N, K), absent when the dataset has none
    info            0-d str: JSON {format, format_version, name, class_names,
                    content_names, meta, export}
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from lordfx.errors import InputError, UsageError

from .base import ImageDataset
from .images import check_size

FORMAT, FORMAT_VERSION = "lordfx-dataset", 1
COMPRESSIONS = {
    "lzma": zipfile.ZIP_LZMA,
    "deflate": zipfile.ZIP_DEFLATED,
    "none": zipfile.ZIP_STORED,
}


def write_npz(
    ds: ImageDataset, path: Path, export: dict[str, Any] | None = None, compression: str = "lzma"
) -> Path:
    """Write ``ds`` (and the JSON-able ``export`` provenance) to ``path``, atomically.

    ``compression``: "lzma" (smallest; Cars3D 64²: ≈ 26 MB), "deflate" (``savez_compressed``,
    ≈ 38 MB, faster to write) or "none".
    """
    if compression not in COMPRESSIONS:
        raise UsageError(f"unknown compression {compression!r}; valid: {', '.join(COMPRESSIONS)}")
    info = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": ds.name,
        "class_names": list(ds.class_names),
        "content_names": list(ds.content_names),
        "meta": ds.meta,
        "export": export or {},
    }
    arrays = {"images": ds.images, "class_ids": ds.class_ids, "info": np.array(json.dumps(info))}
    if ds.content_labels is not None:
        arrays["content_labels"] = ds.content_labels
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=COMPRESSIONS[compression]) as zf:
            for key, arr in arrays.items():  # what np.savez does, with a choice of compression
                with zf.open(f"{key}.npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, np.asanyarray(arr), allow_pickle=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_info(path: Path) -> dict[str, Any]:
    """The file's JSON record (names, meta, export provenance) without reading the images."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(str(z["info"][()]))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(path, f"not a lordfx dataset .npz ({exc})") from None
    if info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
        raise InputError(
            path,
            f"format {info.get('format')!r} v{info.get('format_version')}, "
            f"expected {FORMAT!r} v{FORMAT_VERSION} (write it again with `lordfx export-data`)",
        )
    return info


def read_npz(path: Path) -> ImageDataset:
    """The :class:`ImageDataset` stored in ``path`` (exactly as it was written)."""
    path = Path(path)
    info = read_info(path)
    with np.load(path, allow_pickle=False) as z:
        images, class_ids = z["images"], z["class_ids"]
        labels = z["content_labels"] if "content_labels" in z.files else None
    try:
        return ImageDataset(
            name=info["name"],
            images=images,
            class_ids=class_ids,
            class_names=tuple(info["class_names"]),
            content_labels=labels,
            content_names=tuple(info["content_names"]),
            meta=info["meta"],
        )
    except (KeyError, ValueError) as exc:
        raise InputError(path, f"inconsistent dataset file ({exc})") from None


def find_npz(root: Path) -> Path:
    """The one ``*.npz`` in folder ``root`` (the reader's data path), or InputError."""
    files = sorted(Path(root).glob("*.npz"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise InputError(root, f"expected exactly one .npz dataset file here, found: {found}")
    return files[0]


def load_npz(root: Path, image_size: int, channels: int) -> ImageDataset:
    """Reader ``npz``: the dataset file in folder ``root``, written by ``lordfx export-data``.

    Its images are used at the size they were prepared at: ``image_size`` and ``channels``
    must match them (no resizing here), so a preset cannot silently train on other data.

    Shape: -> images (N, image_size, image_size, channels) uint8, as stored.
    """
    check_size(image_size, channels)
    path = find_npz(root)
    ds = read_npz(path)
    if (ds.image_size, ds.channels) != (image_size, channels):
        raise InputError(
            path,
            f"holds {ds.image_size}x{ds.image_size}x{ds.channels} images, the config asks for "
            f"{image_size}x{image_size}x{channels}; export the data again at that size",
        )
    return ds
