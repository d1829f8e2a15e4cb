"""Face crops from several identity-labelled sources as one class space (dataset "faces").

Each source is a folder in the celeba_faces layout (shared/data/README.md): an identity
file of ``<relative path> <identity>`` lines and the crops at those paths, all in the faces
plugin's framing (Haar box, side 2·w, centre 0.1·h below the box centre; what
``lordfx_faces.preprocess`` reproduces on photos). shared/data/celeba_faces (248 CelebA
identities) and shared/data/lfw_faces (591 LFW people) are made by one recipe, so training
on both adds identities without changing the framing. Classes are named
``<source>/<identity>`` (LFW names and CelebA numbers cannot collide, and a held-out list
says where each identity comes from); held-out identities are drawn over the union by the
usual seeded :func:`~.base.split_classes`, so both sources lose identities to evaluation.

Licences differ per source and are kept per source in ``meta["sources"]`` (the bundle's
``data`` record) and joined in ``meta["licence"]``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lordfx.errors import InputError, UsageError

from .base import ImageDataset
from .celeba import LICENCE as CELEBA_LICENCE
from .celeba import load_celeba

logger = logging.getLogger(__name__)

DEFAULT_SOURCES = "celeba_faces,lfw_faces"
# Known sources' licences (shared/data/README.md); any other source must state its own.
LICENCES = {
    "celeba_faces": CELEBA_LICENCE,
    "lfw_faces": "LFW (deep-funneled): no licence stated by its authors; news photos whose "
    "copyright stays with their photographers; research use only",
}


def load_faces(
    root: Path,
    image_size: int,
    channels: int,
    *,
    sources: str = DEFAULT_SOURCES,
    identities: str = "identities.txt",
    exclude: str | None = None,
    licences: str = "",
    min_images_per_class: int = 1,
    skip_bad: bool = False,
) -> ImageDataset:
    """The crops of every source in ``sources`` (comma-separated folders, relative to
    ``root`` unless absolute), one class per (source, identity).

    ``identities`` and ``exclude`` (e.g. nonface_suspects.txt) are read in each source
    folder; ``licences`` gives ``name=text;name=text`` for sources not in :data:`LICENCES`.
    Shape: images (N, S, S, C) uint8, class_ids (N,), content_labels None.
    """
    names = [s.strip() for s in sources.split(",") if s.strip()]
    if not names:
        raise UsageError("dataset 'faces' needs at least one source (sources='a,b')")
    if len(set(names)) != len(names):
        raise UsageError(f"dataset 'faces': duplicate sources in {sources!r}")
    extra = _parse_licences(licences)
    parts, records = [], []
    for name in names:
        folder = Path(name) if Path(name).is_absolute() else Path(root) / name
        label = folder.name
        licence = extra.get(label) or LICENCES.get(label)
        if licence is None:
            raise UsageError(
                f"dataset 'faces': no licence known for source {label!r}; give it as "
                f"licences='{label}=...' (known: {', '.join(LICENCES)})"
            )
        if not folder.is_dir():
            raise InputError(folder, "no such folder (a face-crop source of dataset 'faces')")
        ds = load_celeba(
            folder,
            image_size,
            channels,
            identities=identities,
            exclude=exclude,
            min_images_per_class=min_images_per_class,
            skip_bad=skip_bad,
        )
        parts.append((label, ds))
        records.append(
            {
                "name": label,
                "source": str(folder),
                "identities_file": ds.meta["identities_file"],
                "exclude_file": ds.meta["exclude_file"],
                "num_excluded": ds.meta["num_excluded"],
                "num_classes": ds.num_classes,
                "num_images": ds.num_images,
                "licence": licence,
            }
        )
        logger.info("faces: %s: %d images of %d identities", label, ds.num_images, ds.num_classes)
    return _merge(parts, records, root, min_images_per_class)


def _merge(
    parts: list[tuple[str, ImageDataset]], records: list[dict], root: Path, min_images: int
) -> ImageDataset:
    """One dataset: images concatenated in source order, class ids offset per source."""
    offsets = np.cumsum([0] + [ds.num_classes for _, ds in parts[:-1]])
    return ImageDataset(
        name="faces",
        images=np.concatenate([ds.images for _, ds in parts]),
        class_ids=np.concatenate(
            [ds.class_ids + off for (_, ds), off in zip(parts, offsets, strict=True)]
        ),
        class_names=tuple(f"{label}/{c}" for label, ds in parts for c in ds.class_names),
        meta={
            "source": str(root),
            "reader": "faces",
            "sources": records,
            "min_images_per_class": min_images,
            "licence": " | ".join(f"{r['name']}: {r['licence']}" for r in records),
        },
    )


def _parse_licences(text: str) -> dict[str, str]:
    """``"a=text;b=text"`` → {"a": "text", "b": "text"}."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(";"))):
        name, sep, licence = item.partition("=")
        if not sep or not name.strip() or not licence.strip():
            raise UsageError(f"dataset 'faces': licences item {item!r} is not name=text")
        out[name.strip()] = licence.strip()
    return out
