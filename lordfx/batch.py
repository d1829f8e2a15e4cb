"""File-or-folder processing shared by the editing verbs (swap-pose, expression, ...).

A folder is walked recursively; outputs mirror its tree under the output folder. Every file
is tried; failures are collected and reported at the end, and the exit code is non-zero if
any file failed. Inputs are only ever read; outputs are written atomically.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from lordfx.errors import InputError, LordfxError
from lordfx.imageio import SAVE_FORMATS, check_output_path, iter_images, write_image_atomic

log = logging.getLogger("lordfx.batch")


@dataclass
class BatchReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def output_for(src: Path, root: Path | None, out_dir: Path, suffix: str) -> Path:
    """Where the result for ``src`` goes: mirrored below ``out_dir`` when ``root`` is a folder."""
    ext = src.suffix.lower() if src.suffix.lower() in SAVE_FORMATS else ".png"
    rel = src.relative_to(root) if root is not None else Path(src.name)
    name = rel.stem + (f"_{suffix}" if root is None else "") + ext
    return out_dir / rel.parent / name


def default_output(src: Path, suffix: str) -> Path:
    """Default output: ``STEM_SUFFIX.ext`` in the cwd for a file, ``NAME_SUFFIX/`` for a folder."""
    if src.is_dir():
        return Path(f"{src.resolve().name}_{suffix}")
    return output_for(src, None, Path("."), suffix)


def run_batch(
    source: Path,
    output: Path | None,
    process: Callable[[Path], Image.Image],
    suffix: str,
    skip_existing: bool = False,
    extra_inputs: tuple[Path, ...] = (),
) -> BatchReport:
    """Apply ``process`` to ``source`` (an image or a folder of images) and write results."""
    report = BatchReport()
    if not source.exists():
        raise InputError(source, "no such file or folder")
    if source.is_file():
        out = output or default_output(source, suffix)
        check_output_path(out, [source, *extra_inputs])
        write_image_atomic(process(source), out)
        report.written.append(out)
        print(out, file=sys.stdout, flush=True)
        return report

    out_dir = (output or default_output(source, suffix)).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "output for a folder must be a folder")
    files = [f for f in iter_images(source) if not _inside(f.resolve(), out_dir)]
    if not files:
        raise InputError(source, "folder contains no files")
    from rich.progress import Progress

    with Progress(transient=True, console=_stderr_console()) as bar:
        task = bar.add_task(f"{suffix}", total=len(files))
        for src in files:
            dst = output_for(src, source, out_dir, suffix)
            bar.advance(task)
            if skip_existing and dst.exists():
                report.skipped.append(dst)
                continue
            try:
                write_image_atomic(process(src), dst)
            except LordfxError as exc:
                report.failed.append(
                    (src, str(exc.problem if isinstance(exc, InputError) else exc))
                )
                continue
            report.written.append(dst)
            print(dst, file=sys.stdout, flush=True)
    _summarise(report, len(files))
    return report


def _inside(path: Path, folder: Path) -> bool:
    return folder == path or folder in path.parents


def _stderr_console():  # noqa: ANN202 - rich is imported lazily
    from rich.console import Console

    return Console(stderr=True)


def _summarise(report: BatchReport, total: int) -> None:
    log.info(
        "%d of %d files written, %d skipped (exist), %d failed",
        len(report.written),
        total,
        len(report.skipped),
        len(report.failed),
    )
    for src, problem in report.failed:
        log.error("%s: %s", src, problem)
