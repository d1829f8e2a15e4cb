"""Hostile input (issue 15): a corpus the suite generates itself, run through ``swap-pose``
and ``expression`` in folder and single-file mode with the shipped models, plus one test
per finding of the issue.

Every case has a documented outcome: ``written`` (an output with the batch output-name
rule), ``failed`` (one ``lordfx: error: PATH: ...`` line containing the given words, exit
1) or ``ignored`` (one ``lordfx: info: PATH: ...`` line, not a failure). Nothing may print a
traceback or a raw Python warning, and the inputs must be byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lordfx.cli import build_app

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
ASTRONAUT, HOPPER = EXAMPLES / "astronaut.jpg", EXAMPLES / "grace_hopper.jpg"
LORDFX = Path(sys.executable).with_name("lordfx")

runner = CliRunner()


# -- building the corpus --------------------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` × ``height`` RGB pixels (a bomb: the
    data is one empty zlib stream)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b""))
        + _chunk(b"IEND", b"")
    )


def _face() -> Image.Image:
    """The example astronaut photo at 260×260 (the face is about 53 px wide: detected,
    and small enough to keep the corpus fast)."""
    with Image.open(ASTRONAUT) as im:
        return im.convert("RGB").resize((260, 260), Image.Resampling.LANCZOS)


def _grey16(rgb: Image.Image) -> Image.Image:
    """A 16-bit grey photo whose high bytes are ``rgb``'s luma (v·257: full 16-bit range)."""
    grey = np.asarray(rgb.convert("L")).astype(np.uint16) * 257
    return Image.fromarray(grey)


@dataclass(frozen=True)
class Case:
    rel: str  # path below the corpus folder
    outcome: str  # "written", "failed" or "ignored"
    words: str = ""  # must appear in the file's error / info line
    output: str | None = None  # the output's relative path when written (batch name rule)
    single: bool = True  # also run on its own (single-file mode)


def build_corpus(root: Path) -> list[Case]:
    """Write the hostile corpus under ``root``; returns each case with its expected outcome."""
    root.mkdir(parents=True)
    face = _face()
    cases: list[Case] = []

    def add(rel: str, outcome: str, words: str = "", output: str | None = None, **kw) -> Path:
        if outcome == "written" and output is None:
            output = rel
        cases.append(Case(rel, outcome, words, output, **kw))
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    face.save(add("good.jpg", "written"), quality=92)
    face.save(add("with space.jpg", "written"), quality=92)
    face.save(add("ünïcødé 写真.jpg", "written"), quality=92)
    face.save(add("sub/deeper/nested.jpg", "written"), quality=92)
    face.save(add("UPPER.JPG", "written"), quality=92)  # suffix kept as it is
    _grey16(face).save(add("grey16.png", "written"))
    face.convert("L").save(add("grey8.jpg", "written"), quality=92)
    face.convert("CMYK").save(add("cmyk.jpg", "written"), quality=92)
    face.convert("P", palette=Image.Palette.ADAPTIVE).save(add("palette.png", "written"))
    pal = face.convert("P", palette=Image.Palette.ADAPTIVE)
    pal.save(add("palette_transparent.png", "written"), transparency=0)
    rgba = face.convert("RGBA")
    rgba.putalpha(200)
    rgba.save(add("rgba.png", "written"))
    la = face.convert("LA")
    la.save(add("grey_alpha.png", "written"))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    face.transpose(Image.Transpose.ROTATE_90).save(
        add("exif_rotated.jpg", "written"), quality=92, exif=exif.tobytes()
    )
    fl = np.asarray(face.convert("L"), dtype=np.float32) / 255.0
    Image.fromarray(fl, "F").save(add("float.tif", "written", output="float.png"))
    small = face.resize((160, 160))
    frames = [small, small.transpose(Image.Transpose.FLIP_LEFT_RIGHT), small.rotate(10)]
    frames[0].save(
        add("animated.gif", "written", output="animated.png"),
        save_all=True,
        append_images=frames[1:],
        duration=100,
        loop=0,
    )
    # Failures, each named with its problem.
    add("bomb_40000.png", "failed", "image too large").write_bytes(png_declaring(40000, 40000))
    add("bomb_10000.png", "failed", "image too large").write_bytes(png_declaring(10000, 10000))
    add("over_limit_9000.png", "failed", "9000×9000").write_bytes(png_declaring(9000, 9000))
    full = (root / "good.jpg").read_bytes()
    add("truncated.jpg", "failed", "truncated or corrupt").write_bytes(full[: len(full) // 3])
    good_png = (root / "palette.png").read_bytes()
    add("truncated.png", "failed", "truncated or corrupt").write_bytes(good_png[:200])
    add("zero_bytes.jpg", "failed", "empty file").write_bytes(b"")
    add("header_only.png", "failed", "truncated or corrupt").write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 64, 8, 2, 0, 0, 0))
    )
    add("header_only.jpg", "failed", "truncated or corrupt").write_bytes(full[:600])
    add("page.jpg", "failed", "HTML page").write_text(
        "<!DOCTYPE html><html><body>403 Forbidden</body></html>\n"
    )
    add("notes.png", "failed", "a text file").write_text("this is not a picture\n")
    add("README.txt", "failed", "not an image file").write_text("photos from the trip\n")
    Image.new("RGB", (1, 1), (200, 150, 120)).save(add("one_pixel.png", "failed", "no face"))
    Image.fromarray(np.full((2, 3000, 3), 128, np.uint8)).save(
        add("wide_3000x2.png", "failed", "no face")
    )
    Image.fromarray(np.full((3000, 2, 3), 128, np.uint8)).save(
        add("tall_2x3000.png", "failed", "no face")
    )
    ramp = np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (200, 1))
    Image.fromarray(ramp).save(add("no_face.png", "failed", "no face"))
    # Links, hidden and special entries.
    os.symlink("does-not-exist.jpg", add("dangling.jpg", "failed", "broken symbolic link"))
    os.symlink("self_loop.jpg", add("self_loop.jpg", "failed", "symbolic link loop"))
    os.symlink("good.jpg", add("link_to_good.jpg", "written"))
    os.symlink(".", add("sub/loop", "ignored", "symbolic link loop", single=False))
    face.save(add(".hidden.jpg", "ignored", "hidden", single=False))
    os.mkfifo(add("fifo.jpg", "failed", "not a regular file"))
    return cases


def _fingerprint(root: Path) -> dict[str, object]:
    """Every entry below ``root`` (links not followed): file hashes, link targets, modes."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = p.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mode)
            else:
                out[rel] = ("other", stat.S_IFMT(st.st_mode))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, list[Case]]:
    root = tmp_path_factory.mktemp("hostile") / "in"
    return root, build_corpus(root)


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> Path:
    """swap-pose's REF: the example Grace Hopper photo, small (fast to detect)."""
    path = tmp_path_factory.mktemp("ref") / "hopper.jpg"
    with Image.open(HOPPER) as im:
        im.convert("RGB").resize((220, 258), Image.Resampling.LANCZOS).save(path, quality=92)
    return path


def _args(verb: str, src: Path, out: Path, ref: Path) -> list[str]:
    if verb == "swap-pose":
        return ["swap-pose", str(src), str(ref), "-o", str(out)]
    return ["expression", str(src), "--to", "happy", "-o", str(out)]


VERBS = ("expression", "swap-pose")


def _clean(result) -> None:  # noqa: ANN001 - click's Result
    """No traceback, no raw warning: every stderr line is a one-line lordfx message."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    for line in result.stderr.splitlines():
        assert line.startswith("lordfx: "), line
    for raw in ("Traceback", "Warning:", "warnings.warn(", "DecompressionBomb"):
        assert raw not in result.stderr + result.stdout


def _lines(result, level: str, path: Path) -> list[str]:  # noqa: ANN001
    return [ln for ln in result.stderr.splitlines() if ln.startswith(f"lordfx: {level}: {path}: ")]


def test_corpus_has_at_least_30_cases(corpus):
    _, cases = corpus
    assert len(cases) >= 30
    assert {c.outcome for c in cases} == {"written", "failed", "ignored"}


@pytest.mark.parametrize("verb", VERBS)
def test_corpus_folder_mode(corpus, ref, tmp_path, verb):
    root, cases = corpus
    before = _fingerprint(root)
    out = tmp_path / "out"
    result = runner.invoke(build_app(), _args(verb, root, out, ref))
    _clean(result)
    assert result.exit_code == 1, result.output  # failures in the corpus: exit 1
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    expected = sorted(c.output for c in cases if c.outcome == "written")
    assert written == expected
    assert sorted(result.stdout.split("\n")[:-1]) == sorted(str(out / w) for w in expected)
    for case in cases:
        path = root / case.rel
        if case.outcome == "failed":
            (line,) = _lines(result, "error", path)
            assert case.words in line, line
        elif case.outcome == "ignored":
            (line,) = _lines(result, "info", path)
            assert case.words in line, line
    # The animated GIF says it used the first frame; the summary names every count.
    assert _lines(result, "warning", root / "animated.gif")
    summary = [ln for ln in result.stderr.splitlines() if f"{root}: " in ln and "written" in ln]
    failed = sum(c.outcome == "failed" for c in cases)
    assert len(summary) == 1 and f"{len(expected)} written" in summary[0]
    assert f"{failed} failed" in summary[0]
    assert not list(out.rglob(".*.tmp"))
    assert _fingerprint(root) == before


@pytest.mark.parametrize("verb", VERBS)
def test_corpus_single_file_mode(corpus, ref, tmp_path, verb):
    root, cases = corpus
    before = _fingerprint(root)
    for i, case in enumerate(c for c in cases if c.single):
        src = root / case.rel
        out = tmp_path / f"{i}.png"
        result = runner.invoke(build_app(), _args(verb, src, out, ref))
        _clean(result)
        if case.outcome == "written":
            assert result.exit_code == 0, (case, result.output)
            assert result.stdout.strip() == str(out) and out.is_file()
            with Image.open(out) as im, Image.open(src) as orig:
                upright = (orig.height, orig.width) if case.rel == "exif_rotated.jpg" else orig.size
                assert im.size == upright and im.mode == "RGB"
        else:
            assert result.exit_code == 1, (case, result.output)
            assert result.stderr.startswith(f"lordfx: error: {src}: ")
            assert len(result.stderr.splitlines()) == 1, result.stderr
            assert case.words in result.stderr, (case, result.stderr)
            assert not out.exists()
    assert _fingerprint(root) == before
    assert not list(tmp_path.glob(".*.tmp"))
