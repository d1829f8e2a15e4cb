"""Image reading and atomic writing shared by the CLI verbs and the editing API."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from lordfx.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm")
SAVE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}


def read_image(path: str | os.PathLike[str], mode: str = "RGB") -> Image.Image:
    """Decode ``path`` fully, apply its EXIF orientation and convert to ``mode``.

    Raises :class:`InputError` naming the file for a missing, unreadable, truncated or
    non-image file.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file")
    if p.is_dir():
        raise InputError(p, "is a folder, not an image")
    try:
        with Image.open(p) as im:
            im.load()  # force a full decode so truncated files fail here
            im = ImageOps.exif_transpose(im)
            return im.convert(mode)
    except UnidentifiedImageError:
        raise InputError(p, "not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(p, f"cannot decode image ({exc})") from None


def check_output_path(out: Path, inputs: list[Path]) -> None:
    """Refuse an output path that would overwrite one of the inputs."""
    suffix = out.suffix.lower()
    if suffix not in SAVE_FORMATS:
        valid = ", ".join(sorted(SAVE_FORMATS))
        raise InputError(out, f"unsupported output format {suffix or '(none)'}; use one of {valid}")
    for src in inputs:
        if out.exists() and src.exists() and os.path.samefile(out, src):
            raise InputError(out, "output would overwrite an input file; choose another -o")


def write_image_atomic(image: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Write ``image`` to ``path`` via a temporary file and an atomic rename."""
    out = Path(path)
    fmt = SAVE_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise InputError(out, f"unsupported output format {out.suffix or '(none)'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
            image.save(fh, format=fmt, **kwargs)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get normal file modes
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def iter_images(folder: Path) -> list[Path]:
    """Every file below ``folder`` (recursive, sorted), images and non-images alike.

    Non-images are returned too so that batch commands can report them instead of silently
    skipping them; hidden files and folders are ignored.
    """
    files = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not p.is_file():
            continue
        files.append(p)
    return files
