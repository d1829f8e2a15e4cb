"""File-or-folder processing shared by the editing verbs (swap-pose, expression, ...).

The rules (README, "Batch semantics"):

- A folder is walked recursively in sorted order; every entry is either processed or
  reported by name. Hidden entries (name starting with ".") are skipped, not opened and not
  descended into. Every other file is tried whatever its extension; one that is not a
  readable image fails. Symbolic links are followed once: a folder reached a second time
  (a link loop, or two links to one folder) is reported and skipped; a broken link fails.
- Outputs mirror the input tree below the output folder. A file keeps its name and suffix
  when lordfx can write that format (.jpg .jpeg .png .webp .bmp, any case); other suffixes
  are replaced by .png. Two inputs that would get one output name: the second fails.
- Outputs are checked before any work (:func:`plan_batch`, a usage error); the verbs call
  it before loading a model. Results are written atomically.
- A summary is always printed; the exit code is 1 exactly when a file failed. Ctrl-C or
  SIGTERM stops after the current file, leaves no partial output, prints the summary so far
  and exits 130 / 143; ``--skip-existing`` then resumes.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from lordfx.errors import InputError, LordfxError, UsageError
from lordfx.imageio import SAVE_FORMATS, check_output_path, check_writable_dir, write_image_atomic

log = logging.getLogger("lordfx.batch")


class Interrupted(LordfxError):
    """Ctrl-C or SIGTERM during a batch, raised after the summary was printed."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class BatchReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # existing outputs (--skip-existing)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[tuple[Path, str]] = field(default_factory=list)  # hidden, visited twice
    interrupted: str | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


# -- walking --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One entry found below an input folder. ``kind``: ``file`` (to process), ``folder``
    (entered), ``hidden`` or ``revisit`` (reported, skipped), ``broken`` / ``special`` /
    ``unreadable`` (failed)."""

    path: Path
    kind: str
    detail: str = ""


def walk(root: Path) -> list[Entry]:
    """Every entry below ``root``, depth first, names sorted; links followed once."""
    root = Path(root)
    entries: list[Entry] = []
    st = root.stat()
    seen: dict[tuple[int, int], Path] = {(st.st_dev, st.st_ino): root}
    _walk_dir(root, seen, [(st.st_dev, st.st_ino)], entries)
    return entries


def _walk_dir(
    folder: Path,
    seen: dict[tuple[int, int], Path],
    ancestors: list[tuple[int, int]],
    entries: list[Entry],
) -> None:
    try:
        names = sorted(os.listdir(folder))
    except OSError as exc:
        entries.append(Entry(folder, "unreadable", f"cannot list folder ({exc.strerror})"))
        return
    for name in names:
        path = folder / name
        if name.startswith("."):
            entries.append(Entry(path, "hidden", "hidden, skipped"))
            continue
        try:
            st = path.stat()
        except FileNotFoundError:
            if path.is_symlink():
                target = os.readlink(path)
                entries.append(Entry(path, "broken", f"broken symbolic link (to {target})"))
            else:  # removed while we walked
                entries.append(Entry(path, "broken", "vanished while the folder was read"))
            continue
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                entries.append(Entry(path, "broken", "symbolic link loop (links to itself)"))
            else:
                entries.append(Entry(path, "unreadable", f"cannot read ({exc.strerror})"))
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in ancestors:
                entries.append(
                    Entry(path, "revisit", f"symbolic link loop back to {seen[key]}, skipped")
                )
            elif key in seen:
                entries.append(
                    Entry(path, "revisit", f"same folder as {seen[key]}, already processed")
                )
            else:
                seen[key] = path
                entries.append(Entry(path, "folder"))
                _walk_dir(path, seen, [*ancestors, key], entries)
        elif stat.S_ISREG(st.st_mode):
            entries.append(Entry(path, "file"))
        else:
            entries.append(Entry(path, "special", "not a regular file (device, FIFO or socket)"))


# -- planning -------------------------------------------------------------------------------
@dataclass
class Plan:
    """What a batch will do, decided (and its outputs checked) before any model is loaded."""

    source: Path
    is_folder: bool
    output: Path  # the output file, or the output folder
    jobs: list[tuple[Path, Path]] = field(default_factory=list)  # (input, output)
    failed: list[tuple[Path, str]] = field(default_factory=list)  # known failures
    ignored: list[tuple[Path, str]] = field(default_factory=list)


def output_for(src: Path, root: Path | None, out_dir: Path, suffix: str) -> Path:
    """Where the result for ``src`` goes: mirrored below ``out_dir`` when ``root`` is a
    folder (name kept), else ``STEM_SUFFIX`` in ``out_dir``; the suffix is kept when
    lordfx writes that format, else it becomes ``.png``."""
    ext = src.suffix if src.suffix.lower() in SAVE_FORMATS else ".png"
    rel = src.relative_to(root) if root is not None else Path(src.name)
    name = rel.stem + (f"_{suffix}" if root is None else "") + ext
    return out_dir / rel.parent / name


def default_output(src: Path, suffix: str) -> Path:
    """Default output: ``STEM_SUFFIX.ext`` in the cwd for a file, ``NAME_SUFFIX/`` for a folder."""
    if src.is_dir():
        return Path(f"{src.resolve().name}_{suffix}")
    return output_for(src, None, Path("."), suffix)


def check_source(source: Path) -> None:
    """An input file or folder exists (:class:`InputError` naming it, and a broken link)."""
    try:
        os.stat(source)
    except FileNotFoundError:
        if Path(source).is_symlink():
            raise InputError(source, f"broken symbolic link (to {os.readlink(source)})") from None
        raise InputError(source, "no such file or folder") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(source, "symbolic link loop (links to itself)") from None
        raise InputError(source, f"cannot read ({exc.strerror or exc})") from None


def plan_batch(
    source: Path, output: Path | None, suffix: str, extra_inputs: tuple[Path, ...] = ()
) -> Plan:
    """Walk ``source`` and check every output path: raises :class:`InputError` for a
    missing source and :class:`UsageError` (exit 2) for an output that cannot be written,
    would overwrite an input, or lies inside the input tree."""
    source = Path(source)
    check_source(source)
    if not source.is_dir():
        out = Path(output) if output is not None else default_output(source, suffix)
        check_output_path(out, [source, *extra_inputs])
        return Plan(source, False, out, jobs=[(source, out)])

    out_dir = Path(output) if output is not None else default_output(source, suffix)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{out_dir}: output for a folder must be a folder")
    check_writable_dir(out_dir)
    entries = walk(source)
    resolved_out = out_dir.resolve()
    walked = [source] + [e.path for e in entries if e.kind == "folder"]
    for folder in (p.resolve() for p in walked):
        if resolved_out == folder or folder in resolved_out.parents:
            raise UsageError(
                f"{out_dir}: the output folder is inside the input folder {source} "
                f"(as {folder}); choose an output folder outside it"
            )
    plan = Plan(source, True, out_dir)
    extras = {p.resolve() for p in extra_inputs if p.exists()}
    taken: dict[Path, Path] = {}
    for e in entries:
        if e.kind == "folder":
            continue
        if e.kind in ("hidden", "revisit"):
            plan.ignored.append((e.path, e.detail))
        elif e.kind != "file":
            plan.failed.append((e.path, e.detail))
        else:
            dst = output_for(e.path, source, out_dir, suffix)
            if dst.resolve() in extras:
                raise UsageError(
                    f"{dst}: the output for {e.path} would overwrite the input "
                    f"{dst.resolve()}; choose another -o"
                )
            key = Path(os.path.normcase(dst))
            if key in taken:
                plan.failed.append(
                    (e.path, f"its output {dst} is already the output of {taken[key]}")
                )
                continue
            taken[key] = e.path
            plan.jobs.append((e.path, dst))
    return plan


# -- running --------------------------------------------------------------------------------
class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt."""


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):  # noqa: ANN001, ANN202, ARG001 - signal handler signature
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_plan(
    plan: Plan, process: Callable[[Path], Image.Image], skip_existing: bool = False
) -> BatchReport:
    """Apply ``process`` to every job of ``plan`` and write the results atomically.

    A single file: errors propagate (the CLI prints them as one line). A folder: each
    file's error is collected; a summary is always printed; Ctrl-C / SIGTERM stop after
    cleaning up and raise :class:`Interrupted` (exit 130 / 143) after the summary.
    """
    report = BatchReport(failed=list(plan.failed), ignored=list(plan.ignored))
    if not plan.is_folder:
        ((src, dst),) = plan.jobs
        if skip_existing and dst.exists():
            report.skipped.append(dst)
            log.info("%s: exists, skipped (--skip-existing)", dst)
            return report
        try:
            with _sigterm_raises():
                write_image_atomic(process(src), dst)
        except _Terminated:
            raise Interrupted("interrupted by SIGTERM; no partial output was left", 143) from None
        report.written.append(dst)
        print(dst, file=sys.stdout, flush=True)
        return report

    done = 0
    try:
        with _sigterm_raises(), _progress(plan) as advance:
            for src, dst in plan.jobs:
                if skip_existing and dst.exists():
                    report.skipped.append(dst)
                else:
                    _run_one(src, dst, process, report)
                done += 1
                advance()
    except KeyboardInterrupt as exc:
        term = isinstance(exc, _Terminated)
        report.interrupted = "SIGTERM" if term else "Ctrl-C (SIGINT)"
    _summarise(report, plan, done)
    if report.interrupted:
        raise Interrupted(
            f"interrupted by {report.interrupted} after {done} of {len(plan.jobs)} files; "
            "no partial output was left; rerun with --skip-existing to resume",
            143 if report.interrupted == "SIGTERM" else 130,
        )
    return report


def _run_one(
    src: Path, dst: Path, process: Callable[[Path], Image.Image], report: BatchReport
) -> None:
    try:
        write_image_atomic(process(src), dst)
    except LordfxError as exc:
        report.failed.append((src, str(exc.problem if isinstance(exc, InputError) else exc)))
        return
    except Exception as exc:  # one bad file must not lose the batch; -v shows the traceback
        log.debug("%s: unexpected error", src, exc_info=True)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        report.failed.append((src, f"unexpected error ({type(exc).__name__}: {detail})"))
        return
    report.written.append(dst)
    print(dst, file=sys.stdout, flush=True)


def run_batch(
    source: Path,
    output: Path | None,
    process: Callable[[Path], Image.Image],
    suffix: str,
    skip_existing: bool = False,
    extra_inputs: tuple[Path, ...] = (),
) -> BatchReport:
    """:func:`plan_batch` then :func:`run_plan` (verbs that load a model should plan first,
    so that output errors come before the model is loaded)."""
    return run_plan(plan_batch(source, output, suffix, extra_inputs), process, skip_existing)


@contextmanager
def _progress(plan: Plan) -> Iterator[Callable[[], None]]:
    """A transient progress bar on a terminal's stderr; nothing when stderr is a file/pipe."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(transient=True, console=console) as bar:
        task = bar.add_task(plan.source.name or str(plan.source), total=len(plan.jobs))
        yield lambda: bar.advance(task)


def _summarise(report: BatchReport, plan: Plan, done: int) -> None:
    for path, reason in sorted(report.ignored, key=lambda r: str(r[0])):
        log.info("%s: %s", path, reason)
    for path, problem in sorted(report.failed, key=lambda r: str(r[0])):
        log.error("%s: %s", path, problem)
    total = len(plan.jobs)
    not_run = total - done
    parts = [
        f"{len(report.written)} written",
        f"{len(report.skipped)} skipped (output exists)",
        f"{len(report.failed)} failed",
        f"{len(report.ignored)} not processed (hidden or visited twice)",
    ]
    if not_run:
        parts.append(f"{not_run} not reached (interrupted)")
    if not total and not report.failed:
        log.warning("%s: no files found", plan.source)
    entries = total + len(plan.failed) + len(plan.ignored)
    log.info("%s: %d entries: %s -> %s", plan.source, entries, ", ".join(parts), plan.output)
