"""Image reading and atomic writing shared by the CLI verbs, the editing API and the trainer.

One reading policy (:func:`read_image`) for every caller:

- **Pixel limit.** An image larger than :func:`max_pixels` (default 64 MP; the
  ``LORDFX_MAX_PIXELS`` environment variable or ``lordfx --max-pixels N`` changes it) is
  refused before it is decoded, with one error naming the file, its size and the limit.
  Pillow's own decompression-bomb warning and error become that same error: no raw warning
  is printed.
- **Any decode failure** (unrecognised format, truncated data, a corrupt header, any
  exception the decoder raises) becomes one :class:`InputError` naming the file.
- **8-bit conversion** (:func:`to_8bit`): every Pillow mode becomes 8-bit grey ("L") or
  RGB, scaled rather than clipped: 16-bit samples keep their high byte (v >> 8, what
  Pillow does for 48-bit RGB PNGs and ``cv2.imread`` for 16-bit PNGs and TIFFs); CMYK uses
  libjpeg/OpenCV's formula so face detection sees the pixels ``cv2.imread`` gives; alpha
  is dropped (as ``cv2.imread(IMREAD_COLOR)`` does); 32-bit integer and float images are
  scaled by the rules in :func:`to_8bit`.
- **EXIF orientation** is applied; **animated or multi-page** files use their first frame
  and a warning says so.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lordfx.errors import InputError, UsageError

log = logging.getLogger("lordfx.imageio")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm")
SAVE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}

DEFAULT_MAX_PIXELS = 64_000_000
MAX_PIXELS_ENV = "LORDFX_MAX_PIXELS"

_max_pixels_override: int | None = None


# -- the pixel limit ------------------------------------------------------------------------
def parse_pixels(text: str) -> int:
    """``"64000000"``, ``"64M"``, ``"64MP"`` or ``"1.5G"`` → a positive pixel count."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)[pP]?\s*", str(text))
    if not m:
        raise ValueError(f"expected a pixel count such as 64000000 or 64M, got {text!r}")
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}[m.group(2).lower()]
    value = round(float(m.group(1)) * scale)
    if value < 1:
        raise ValueError(f"the pixel limit must be at least 1, got {text!r}")
    return value


def set_max_pixels(limit: int | None) -> None:
    """Set the process-wide pixel limit (``lordfx --max-pixels``); ``None`` restores the
    environment variable / default."""
    global _max_pixels_override
    if limit is not None and limit < 1:
        raise ValueError(f"the pixel limit must be at least 1, got {limit}")
    _max_pixels_override = limit


def max_pixels() -> int:
    """The pixel limit in force: :func:`set_max_pixels`, else ``$LORDFX_MAX_PIXELS``, else
    :data:`DEFAULT_MAX_PIXELS` (64 MP)."""
    if _max_pixels_override is not None:
        return _max_pixels_override
    env = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not env:
        return DEFAULT_MAX_PIXELS
    try:
        return parse_pixels(env)
    except ValueError as exc:
        raise UsageError(f"{MAX_PIXELS_ENV}: {exc}") from None


def _describe_pixels(n: int) -> str:
    return f"{n:,} pixels" + (f" ({n / 1e6:g} MP)" if n >= 1_000_000 else "")


def _too_large(path: Path, size: tuple[int, int] | None, pixels: int, limit: int) -> InputError:
    dims = f"{size[0]}×{size[1]} = " if size else ""
    return InputError(
        path,
        f"image too large: {dims}{_describe_pixels(pixels)}, over the "
        f"{_describe_pixels(limit)} limit (raise it with lordfx --max-pixels N or "
        f"{MAX_PIXELS_ENV}=N)",
    )


# Pillow warns (DecompressionBombWarning) above Image.MAX_IMAGE_PIXELS and raises above
# twice that, while opening and while loading some formats (GIF frames, TIFF tiles). While
# any read_image runs, that warning is an error, so it reaches read_image's handler instead
# of the terminal. The filter is installed by the first concurrent reader and removed by
# the last (a reference count under a lock: warnings.catch_warnings is not thread-safe
# before Python 3.14, and the trainer decodes in threads).
_bomb_filter = ("error", None, Image.DecompressionBombWarning, None, 0)
_bomb_lock = threading.Lock()
_bomb_users = 0


@contextlib.contextmanager
def _pillow_bombs_raise() -> Iterator[None]:
    global _bomb_users
    with _bomb_lock:
        if _bomb_users == 0:
            warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
        _bomb_users += 1
    try:
        yield
    finally:
        with _bomb_lock:
            _bomb_users -= 1
            if _bomb_users == 0:
                with contextlib.suppress(ValueError):
                    warnings.filters.remove(_bomb_filter)
                mutated = getattr(warnings, "_filters_mutated", None)
                if mutated is not None:
                    mutated()


def _allow_in_pillow(limit: int) -> None:
    """Pillow must not refuse what the lordfx limit allows: raise its threshold to ``limit``
    when the user asked for more than Pillow's default (about 89 MP)."""
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit


# -- reading --------------------------------------------------------------------------------
def read_image(
    path: str | os.PathLike[str], mode: str = "RGB", limit: int | None = None
) -> Image.Image:
    """Decode ``path`` fully under the reading policy (module doc) and convert to ``mode``.

    ``limit`` overrides :func:`max_pixels` for this call. Raises :class:`InputError` naming
    the file for a missing, special, empty, too large, truncated, corrupt or non-image
    file; nothing else escapes (hostile files included).
    """
    p = Path(path)
    _check_regular_file(p)
    limit = max_pixels() if limit is None else limit
    _allow_in_pillow(limit)
    try:
        with _pillow_bombs_raise(), Image.open(p) as im:
            w, h = im.size
            if w * h > limit:
                raise _too_large(p, im.size, w * h, limit)
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                log.warning("%s: %d frames (animated or multi-page); using the first", p, frames)
            im.load()  # a full decode, so truncated files fail here
            im = _exif_upright(im, p)
            return _to_mode(to_8bit(im), mode)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else limit + 1
        raise _too_large(p, None, pixels, limit) from None
    except UnidentifiedImageError:
        kind = _magic(p)
        if kind:
            raise InputError(
                p, f"cannot decode image: truncated or corrupt {kind} header"
            ) from None
        raise InputError(p, f"not an image file ({_sniff(p)})") from None
    except MemoryError:
        raise InputError(p, "not enough memory to decode this image") from None
    except Exception as exc:  # any decoder failure is this file's problem, never a traceback
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(p, f"cannot decode image: truncated or corrupt ({detail})") from None


def _check_regular_file(p: Path) -> None:
    try:
        st = p.stat()
    except FileNotFoundError:
        if p.is_symlink():
            raise InputError(p, f"broken symbolic link (to {os.readlink(p)})") from None
        raise InputError(p, "no such file") from None
    except OSError as exc:  # a symlink loop, a permission problem, a name too long...
        if exc.errno == errno.ELOOP:
            raise InputError(p, "symbolic link loop (links to itself)") from None
        raise InputError(p, f"cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(p, "is a folder, not an image")
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block open() forever
        raise InputError(p, "not a regular file (a device, FIFO or socket)")
    if st.st_size == 0:
        raise InputError(p, "empty file (0 bytes)")


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
)


def _magic(p: Path) -> str | None:
    """The image format a file's first bytes claim, if any."""
    try:
        with p.open("rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((name for sig, name in _MAGIC if head.startswith(sig)), None)


def _sniff(p: Path) -> str:
    """What a file Pillow cannot identify looks like, for the error message."""
    try:
        with p.open("rb") as fh:
            head = fh.read(512)
    except OSError:
        return "unreadable"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "an HTML page; was it saved from a web page instead of the image?"
    if text.startswith(b"<?xml") or text.startswith(b"<svg"):
        return "XML/SVG text; lordfx reads raster images only"
    if head and all(b in b"\t\n\r\x0c" or 32 <= b < 127 or b >= 128 for b in head):
        return "a text file"
    return "unrecognised format"


def _exif_upright(im: Image.Image, p: Path) -> Image.Image:
    try:
        return ImageOps.exif_transpose(im)
    except Exception as exc:  # a corrupt EXIF block must not lose the picture
        log.warning("%s: ignoring unreadable EXIF orientation (%s)", p, exc)
        return im


def to_8bit(im: Image.Image) -> Image.Image:
    """Any Pillow mode → 8-bit ``"L"`` (grey sources) or ``"RGB"`` (colour sources).

    - 1, L, LA, La, P/PA with a grey palette stay grey; alpha is dropped (the stored colour
      is kept, as ``cv2.imread(IMREAD_COLOR)`` does); P and PA use their palette.
    - I;16, I;16L, I;16B, I;16N (16-bit grey): v >> 8 (scaled, never clipped).
    - I (32-bit integer): values within 0–65535 are 16-bit data (v >> 8); otherwise the
      image's own min–max range is stretched to 0–255.
    - F (float): values within [0, 1] are scaled by 255; otherwise the min–max range is
      stretched to 0–255; NaN becomes 0.
    - CMYK: R = (255 − K) − (C·(255 − K) >> 8), the same for G/M and B/Y (libjpeg/OpenCV).
    - YCbCr, LAB, HSV, RGBA, RGBa, RGBX: Pillow's conversion to RGB.
    """
    mode = im.mode
    if mode in ("L", "RGB"):
        return im
    if mode in ("1", "LA"):
        return im.convert("L")
    if mode == "La":
        return Image.fromarray(np.ascontiguousarray(np.asarray(im)[:, :, 0]))
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        # P with transparency → RGBA first: Pillow warns on a direct P → RGB conversion.
        return im.convert("RGBA" if has_alpha else "RGB").convert("RGB")
    if mode.startswith("I;16"):
        arr = np.asarray(im).astype(np.uint16, copy=False)
        return Image.fromarray((arr >> 8).astype(np.uint8))
    if mode == "I":
        arr = np.asarray(im).astype(np.int64)
        if arr.size and arr.min() >= 0 and arr.max() <= 65535:
            return Image.fromarray((arr >> 8).astype(np.uint8))
        return Image.fromarray(_stretch(arr))
    if mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if arr.size and arr.min() >= 0.0 and arr.max() <= 1.0:
            return Image.fromarray(np.round(arr * 255.0).astype(np.uint8))
        return Image.fromarray(_stretch(arr))
    if mode == "CMYK":
        cmyk = np.asarray(im).astype(np.int32)
        nk = 255 - cmyk[:, :, 3:4]
        rgb = nk - ((cmyk[:, :, :3] * nk) >> 8)
        return Image.fromarray(rgb.astype(np.uint8), "RGB")
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ValueError(f"unsupported image mode {mode} ({exc})") from None


def _stretch(arr: np.ndarray) -> np.ndarray:
    """Shape: (H, W) numbers → (H, W) uint8, min → 0 and max → 255 (constant → 0)."""
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.round((arr - lo) * 255.0 / (hi - lo)).astype(np.uint8)


def _to_mode(im: Image.Image, mode: str) -> Image.Image:
    """8-bit L/RGB → ``mode`` (grey → RGB tiles; RGB → L is ITU-R 601 luma)."""
    return im if im.mode == mode else im.convert(mode)


# -- writing --------------------------------------------------------------------------------
def check_output_path(out: Path, inputs: list[Path]) -> None:
    """Refuse, as a usage error (exit 2) before any work, an output file that cannot be
    written: unsupported format, a parent that is not a folder or is not writable, an
    existing folder in its place, or one of the inputs."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"{out}: is a folder; give an output file name")
    suffix = out.suffix.lower()
    if suffix not in SAVE_FORMATS:
        valid = ", ".join(sorted(SAVE_FORMATS))
        raise UsageError(
            f"{out}: unsupported output format {suffix or '(none)'}; use one of {valid}"
        )
    check_writable_dir(out.parent, for_path=out)
    for src in inputs:
        if _same_file(out, src):
            raise UsageError(f"{out}: output would overwrite the input {src}; choose another -o")


def check_writable_dir(folder: Path, for_path: Path | None = None) -> None:
    """``folder`` exists as a writable folder, or can be created: its nearest existing
    ancestor is a writable folder. Otherwise a :class:`UsageError` naming it."""
    named = for_path if for_path is not None else folder
    probe = Path(folder)
    while True:
        if probe.exists() or probe.is_symlink():
            break
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.is_symlink() and not probe.exists():
        raise UsageError(f"{named}: cannot write there: {probe} is a broken symbolic link")
    if not probe.is_dir():
        raise UsageError(f"{named}: cannot write there: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{named}: cannot write there: folder {probe} is not writable")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def write_image_atomic(image: Image.Image, path: str | os.PathLike[str]) -> Path:
    """Write ``image`` to ``path`` via a temporary file and an atomic rename.

    An interruption (Ctrl-C, SIGTERM turned into an exception by the batch runner, a full
    disk) removes the temporary file: ``path`` is either complete or absent.
    """
    out = Path(path)
    fmt = SAVE_FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise InputError(out, f"unsupported output format {out.suffix or '(none)'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    except OSError as exc:
        raise InputError(out, f"cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
            image.save(fh, format=fmt, **kwargs)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get normal file modes
        os.replace(tmp, out)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InputError(out, f"cannot write ({exc.strerror or exc})") from None
        raise
    return out


def iter_images(folder: Path) -> list[Path]:
    """Every visible regular file below ``folder`` (recursive, sorted), images and
    non-images alike, following symbolic links to folders once (see
    :func:`lordfx.batch.walk`, which also reports what it leaves out)."""
    from lordfx.batch import walk

    return [e.path for e in walk(folder) if e.kind == "file"]
