"""Animated outputs of ``lordfx cars turntable``: GIF (Pillow) or MP4 (OpenCV), atomically.

MP4 is written with OpenCV's bundled FFmpeg and the ``mp4v`` codec (MPEG-4 Part 2): it
works offline with opencv-python-headless, plays in VLC, mpv, QuickTime and ffmpeg-based
players, but not in most web browsers (they need H.264, which the pip wheels cannot encode
here: ``avc1`` fails to open). Use GIF for the web. Pillow merges a GIF frame identical to
the one before it into that frame's duration, so a model that draws two neighbouring views
alike gives fewer GIF frames over the same total time; MP4 keeps every frame.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from lordfx.errors import InputError, LordfxError

ANIMATION_SUFFIXES = (".gif", ".mp4")


def check_animation_path(out: Path, inputs: list[Path]) -> None:
    """Refuse an output that is not .gif/.mp4 or would overwrite an input."""
    if out.suffix.lower() not in ANIMATION_SUFFIXES:
        raise InputError(
            out, f"unsupported animation format {out.suffix or '(none)'}; use .gif or .mp4"
        )
    for src in inputs:
        if out.exists() and src.exists() and os.path.samefile(out, src):
            raise InputError(out, "output would overwrite an input file; choose another -o")


def write_animation(frames: list[Image.Image], out: Path, fps: float) -> Path:
    """Write ``frames`` (equal-size RGB images) as an endlessly looping GIF or an MP4."""
    out = Path(out)
    suffix = out.suffix.lower()
    if not frames:
        raise LordfxError("no frames to write")
    if fps <= 0:
        raise LordfxError(f"fps must be positive, got {fps}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=suffix, dir=out.parent)
    os.close(fd)
    try:
        if suffix == ".gif":
            _write_gif(frames, Path(tmp), fps)
        elif suffix == ".mp4":
            _write_mp4(frames, Path(tmp), fps, out)
        else:
            raise InputError(out, f"unsupported animation format {suffix}; use .gif or .mp4")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def _write_gif(frames: list[Image.Image], path: Path, fps: float) -> None:
    rgb = [f.convert("RGB") for f in frames]
    rgb[0].save(
        path,
        format="GIF",
        save_all=True,
        append_images=rgb[1:],
        duration=max(20, round(1000 / fps)),  # GIF delays are in 10 ms; browsers floor at 20
        loop=0,
        optimize=False,  # keep every frame full-size: viewers and frame counts stay simple
    )


def _write_mp4(frames: list[Image.Image], path: Path, fps: float, out: Path) -> None:
    import cv2

    w, h = frames[0].size
    if w % 2 or h % 2:
        raise InputError(out, f"MP4 needs an even frame size, got {w}x{h}; choose an even --size")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise InputError(
            out, "this OpenCV build cannot write MP4 (mp4v codec unavailable); use .gif"
        )
    try:
        for frame in frames:
            writer.write(np.asarray(frame.convert("RGB"))[:, :, ::-1].copy())  # OpenCV: BGR
    finally:
        writer.release()
    if path.stat().st_size == 0:
        raise InputError(out, "OpenCV wrote an empty MP4 (codec failure); use .gif")
