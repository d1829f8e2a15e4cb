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
import shutil
import signal
import stat
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import lordfx
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


# -- the six findings of the issue, each with a test that failed before the fix ------------
def test_finding1_bomb_in_a_folder_is_one_error_and_the_batch_goes_on(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a_bomb.png").write_bytes(png_declaring(40000, 40000))
    _face().save(src / "b_good.jpg", quality=92)
    result = runner.invoke(
        build_app(), ["expression", str(src), "--to", "sad", "-o", str(tmp_path / "o")]
    )
    _clean(result)
    assert result.exit_code == 1
    assert (tmp_path / "o" / "b_good.jpg").is_file()
    (line,) = _lines(result, "error", src / "a_bomb.png")
    assert (
        "image too large: 1,600,000,000 pixels (1600 MP), over the 64,000,000 pixels (64 MP) limit"
        in line
    )
    assert "1 written" in result.stderr and "1 failed" in result.stderr


def test_finding2_16bit_grey_portrait_is_scaled_not_clipped(tmp_path):
    from lordfx_faces.preprocess import make_preprocessor

    from lordfx.imageio import read_image

    path = tmp_path / "grey16.png"
    _grey16(_face()).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    grey = np.asarray(read_image(path, "L"))
    assert np.array_equal(grey, np.asarray(_face().convert("L")))  # (v·257) >> 8 == v
    assert len(make_preprocessor().detect(read_image(path))) >= 1
    result = runner.invoke(
        build_app(), ["expression", str(path), "--to", "happy", "-o", str(tmp_path / "o.png")]
    )
    _clean(result)
    assert result.exit_code == 0, result.output


def test_finding3_symlink_loop_and_dangling_link_are_reported(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    _face().save(src / "sub" / "good.jpg", quality=92)
    os.symlink("..", src / "sub" / "up")  # a loop back to the input folder
    os.symlink("gone.jpg", src / "dangling.jpg")
    result = runner.invoke(
        build_app(), ["expression", str(src), "--to", "happy", "-o", str(tmp_path / "o")]
    )
    _clean(result)
    assert result.exit_code == 1  # the dangling link is a file that failed
    assert "broken symbolic link (to gone.jpg)" in _lines(result, "error", src / "dangling.jpg")[0]
    assert "symbolic link loop" in _lines(result, "info", src / "sub" / "up")[0]
    assert [p.name for p in (tmp_path / "o").rglob("*.jpg")] == ["good.jpg"]  # once


@pytest.fixture
def no_model_load(monkeypatch):
    """Fails the test if a verb loads a model (outputs must be checked first)."""

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("a model was loaded before the outputs were checked")

    monkeypatch.setattr(lordfx, "load", refuse)


def test_finding4_output_parent_is_a_file_is_a_usage_error_before_the_model(
    tmp_path, ref, no_model_load
):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "o.png"
    for args in (_args("swap-pose", ASTRONAUT, out, ref), _args("expression", ASTRONAUT, out, ref)):
        result = runner.invoke(build_app(), args)
        _clean(result)
        assert result.exit_code == 2
        assert (
            result.stderr
            == f"lordfx: error: {out}: cannot write there: {tmp_path / 'afile'} is not a folder\n"
        )


def test_finding5_pillow_bomb_warning_never_reaches_the_terminal(tmp_path, monkeypatch):
    import warnings

    # A 500×500 photo is over a lowered Pillow threshold (200,000) but under 2× it: Pillow
    # would warn, as it does for a real 12,000 × 12,000 photo at its default threshold.
    path = tmp_path / "big.jpg"
    with Image.open(ASTRONAUT) as im:
        im.convert("RGB").resize((500, 500)).save(path, quality=92)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ok = runner.invoke(
            build_app(),
            [
                "--max-pixels",
                "1M",
                "expression",
                str(path),
                "--to",
                "happy",
                "-o",
                str(tmp_path / "ok.png"),
            ],
        )
        refused = runner.invoke(
            build_app(),
            [
                "--max-pixels",
                "240000",
                "expression",
                str(path),
                "--to",
                "happy",
                "-o",
                str(tmp_path / "no.png"),
            ],
        )
    for result in (ok, refused):
        _clean(result)
    assert ok.exit_code == 0 and (tmp_path / "ok.png").is_file()
    assert refused.exit_code == 1
    assert refused.stderr == (
        f"lordfx: error: {path}: image too large: 500×500 = 250,000 pixels, over the "
        "240,000 pixels limit (raise it with lordfx --max-pixels N or LORDFX_MAX_PIXELS=N)\n"
    )
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def _recipe_box(path: Path):  # noqa: ANN202
    """shared/data/README.md, celeba_faces steps 1-5, written out independently."""
    import cv2

    grey = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY)
    clf = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    short = min(grey.shape)
    for neighbours, frac in ((5, 0.10), (3, 0.05)):
        m = int(np.floor(frac * short + 0.5))
        found = clf.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=neighbours, minSize=(m, m))
        if len(found):
            return max((tuple(b) for b in np.asarray(found).tolist()), key=lambda b: b[2] * b[3])
    return None


def _variants(photo: Path, folder: Path) -> list[Path]:
    """The same photo as 16-bit grey PNG, CMYK JPEG, EXIF-rotated JPEG, palette and RGBA PNG."""
    import cv2

    with Image.open(photo) as im:
        rgb = im.convert("RGB")
    grey16 = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
    out = [
        folder / f"{photo.stem}_{k}"
        for k in ("g16.png", "cmyk.jpg", "rot.jpg", "p.png", "rgba.png")
    ]
    cv2.imwrite(str(out[0]), grey16)
    rgb.convert("CMYK").save(out[1], quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.transpose(Image.Transpose.ROTATE_90).save(out[2], quality=95, exif=exif.tobytes())
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(out[3])
    rgb.convert("RGBA").save(out[4])
    return out


def _plugin_box(path: Path):  # noqa: ANN202
    """The faces plugin's chosen box: lordfx's reader, then its detector (the roll
    estimate, which does not move the box, is left out for speed)."""
    from lordfx_faces.detect import detect_faces

    from lordfx.imageio import read_image

    faces = detect_faces(np.asarray(read_image(path)), estimate_roll=False)
    return (faces[0].x, faces[0].y, faces[0].w, faces[0].h) if faces else None


def test_finding6_face_boxes_match_the_recipe_on_photo_variants(tmp_path):
    """The example photo in the modes that used to differ (16-bit grey: no face at all;
    CMYK: boxes 1 px off), plus EXIF-rotated, palette and RGBA."""
    for path in [ASTRONAUT, *_variants(ASTRONAUT, tmp_path)]:
        box = _recipe_box(path)
        assert box is not None and _plugin_box(path) == box, path


@pytest.mark.slow
def test_finding6_face_boxes_are_the_celeba_faces_recipe(shared_data, tmp_path):
    wild, crops = shared_data / "celeba_wild_samples", shared_data / "celeba_faces"
    photos = [
        wild / line.split()[0]
        for line in (wild / "identities.txt").read_text().splitlines()
        if line.strip() and (crops / line.split()[0]).is_file()
    ]
    assert len(photos) == 100
    checked = list(photos)
    for photo in photos[:6]:  # the same photos in other modes: 16-bit, CMYK, EXIF, ...
        checked += _variants(photo, tmp_path)
    for path in checked:
        box = _recipe_box(path)
        assert box is not None, f"{path}: the recipe finds no face"
        assert _plugin_box(path) == box, path


# -- outputs are checked before any work ----------------------------------------------------
def _read_only_dir(path: Path) -> str | None:
    """Make ``path`` unwritable even for root, or say why not (the test is then skipped):
    permission bits for a normal user; ``chattr +i`` (immutable) for root."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        return None
    chattr = shutil.which("chattr")
    if chattr and subprocess.run([chattr, "+i", str(path)], capture_output=True).returncode == 0:
        return None
    return "running as root, and chattr +i is not available on this filesystem"


def _writable_again(path: Path) -> None:
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o755)


def test_read_only_output_folder_is_a_usage_error_before_the_model(tmp_path, ref, no_model_load):
    ro = tmp_path / "ro"
    ro.mkdir()
    reason = _read_only_dir(ro)
    if reason:
        pytest.skip(reason)
    try:
        src = tmp_path / "in"
        src.mkdir()
        shutil.copy(ASTRONAUT, src / "a.jpg")
        for verb in VERBS:
            for source, out in ((src / "a.jpg", ro / "o.jpg"), (src, ro / "sub")):
                result = runner.invoke(build_app(), _args(verb, source, out, ref))
                _clean(result)
                assert result.exit_code == 2, result.output
                assert result.stderr == (
                    f"lordfx: error: {out}: cannot write there: folder {ro} is not writable\n"
                )
        assert not any(ro.iterdir())
    finally:
        _writable_again(ro)


def test_outputs_that_would_hit_the_inputs_are_usage_errors(tmp_path, ref, no_model_load):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(ASTRONAUT, src / "a.jpg")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, src / "sub" / "linked")
    shutil.copy(ASTRONAUT, elsewhere / "ref.jpg")
    cases = [
        (_args("expression", src / "a.jpg", src / "a.jpg", ref), "would overwrite the input"),
        (_args("swap-pose", src / "a.jpg", ref, ref), "would overwrite the input"),
        (_args("expression", src, src / "out", ref), "inside the input folder"),
        (_args("expression", src, src, ref), "inside the input folder"),
        (_args("expression", src, elsewhere / "out", ref), "inside the input folder"),
        (_args("expression", src, src / "a.jpg", ref), "must be a folder"),
        (_args("expression", src / "a.jpg", tmp_path / "o.tif", ref), "unsupported output format"),
        (_args("expression", src / "a.jpg", tmp_path, ref), "is a folder"),
        # swap-pose over a folder whose mirrored output would replace REF:
        (
            ["swap-pose", str(src), str(tmp_path / "o2" / "a.jpg"), "-o", str(tmp_path / "o2")],
            "would overwrite the input",
        ),
    ]
    (tmp_path / "o2").mkdir()
    shutil.copy(ASTRONAUT, tmp_path / "o2" / "a.jpg")
    before = _fingerprint(tmp_path)
    for args, words in cases:
        result = runner.invoke(build_app(), args)
        _clean(result)
        assert result.exit_code == 2, (args, result.output)
        assert len(result.stderr.splitlines()) == 1 and words in result.stderr, (
            args,
            result.stderr,
        )
    assert _fingerprint(tmp_path) == before


# -- model files ----------------------------------------------------------------------------
class _Boom:
    """Unpickling this would create a marker file: proof that nothing is unpickled."""

    marker: Path

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


@pytest.fixture
def bundle(tmp_path) -> Path:
    import torch

    from lordfx.bundle import save_bundle
    from lordfx.nets import AmortizedModel, ModelConfig

    torch.manual_seed(0)
    model = AmortizedModel(ModelConfig(image_size=32, channels=3, width=0.25))
    return save_bundle(tmp_path / "b", model, {}, class_codes=torch.zeros(2, 256))


def _edit_config(bundle: Path, **changes) -> None:  # noqa: ANN003
    import json

    info = json.loads((bundle / "config.json").read_text())
    for key, value in changes.items():
        if key == "architecture" and isinstance(value, dict):  # merged; others replaced
            info[key] = {**info[key], **value}
        else:
            info[key] = value
    (bundle / "config.json").write_text(json.dumps(info))


def _hashes(bundle: Path) -> dict[str, str]:
    from lordfx.bundle import sha256

    return {p.name: sha256(p) for p in bundle.glob("*.safetensors")}


def _refused(bundle: Path, file: str, words: str) -> None:
    from lordfx.bundle import load_bundle
    from lordfx.errors import InputError

    with pytest.raises(InputError) as err:
        load_bundle(bundle)
    assert str(err.value.path) == str(bundle / file) and words in err.value.problem, str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_bundle_sha256_mismatch(bundle):
    data = bytearray((bundle / "model.safetensors").read_bytes())
    data[-3] ^= 0x55
    (bundle / "model.safetensors").write_bytes(bytes(data))
    _refused(bundle, "model.safetensors", "sha256 mismatch")


@pytest.mark.parametrize("protocol", [2, 5])
def test_bundle_pickle_renamed_safetensors_is_never_unpickled(bundle, tmp_path, protocol):
    import pickle

    boom = _Boom()
    boom.marker = tmp_path / "unpickled"
    (bundle / "model.safetensors").write_bytes(pickle.dumps({"w": boom}, protocol=protocol))
    # The attacker also fixed the hash: only the format check stands in the way.
    _edit_config(bundle, files=_hashes(bundle))
    _refused(bundle, "model.safetensors", "a Python pickle")
    assert not boom.marker.exists()


def test_bundle_torch_zip_checkpoint_is_refused(bundle):
    import torch

    torch.save({"w": torch.zeros(2)}, bundle / "model.safetensors")
    _edit_config(bundle, files=_hashes(bundle))
    _refused(bundle, "model.safetensors", "zip archive")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"architecture": {"arch": "transformer"}}, "unknown architecture 'transformer'"),
        ({"architecture": {"depth": 3}}, "unknown model config keys"),
        ({"architecture": {"width": 4096.0}}, "weights do not match the architecture"),
        ({"architecture": "paper"}, "'architecture' is missing or not a JSON object"),
        ({"format_version": 99}, "newer than this lordfx"),
        ({"format_version": 0}, "unknown bundle format version 0"),
        ({"format_version": "1"}, "format_version must be an integer"),
        ({"files": {"../../etc/passwd": "0" * 64}}, "not a file inside the bundle"),
        ({"files": {}}, "does not list model.safetensors"),
    ],
)
def test_bundle_bad_config_is_one_line_naming_it(bundle, changes, words):
    _edit_config(bundle, **changes)
    file = "model.safetensors" if "weights" in words else "config.json"
    _refused(bundle, file, words)


def test_bundle_problem_through_the_cli_is_one_line(bundle, tmp_path, monkeypatch):
    from lordfx.host import get_host

    _edit_config(bundle, architecture={"arch": "transformer"})
    dom = get_host().domain("faces")
    fields = {f: getattr(dom, f) for f in dom.__dataclass_fields__}
    monkeypatch.setitem(get_host().domains, "faces", type(dom)(**{**fields, "bundle": bundle}))
    result = runner.invoke(
        build_app(), ["swap-pose", str(ASTRONAUT), str(HOPPER), "-o", str(tmp_path / "o.jpg")]
    )
    _clean(result)
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"lordfx: error: {bundle / 'config.json'}: invalid architecture"
    )
    assert len(result.stderr.splitlines()) == 1


# -- interruption ---------------------------------------------------------------------------
def _interrupt(args: list[str], sig: int, out: Path) -> subprocess.CompletedProcess:
    """Run the CLI, send ``sig`` once its first output exists, and wait."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [str(LORDFX), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    first = proc.stdout.readline()  # blocks until the first output is written
    assert first.strip(), proc.stderr.read()
    proc.send_signal(sig)
    rest, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(args, proc.returncode, first + rest, err)


@pytest.mark.slow
@pytest.mark.skipif(not LORDFX.exists(), reason="the lordfx console script is not installed")
def test_ctrl_c_and_sigterm_leave_no_partial_output_and_resume(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    face = _face()
    for i in range(40):
        face.save(src / f"p{i:02d}.jpg", quality=92)
    out = tmp_path / "out"
    args = ["expression", str(src), "--to", "happy", "-o", str(out)]
    for sig, code, name in ((signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")):
        run = _interrupt(args + ["--skip-existing"], sig, out)
        assert run.returncode == code, run.stderr
        assert f"interrupted by {name}" in run.stderr and "Traceback" not in run.stderr
        assert "written" in run.stderr  # the summary so far
        assert not list(out.glob(".*.tmp"))
        for p in out.iterdir():  # every output that exists is complete
            with Image.open(p) as im:
                im.load()
    partial = len(list(out.iterdir()))
    assert 0 < partial < 40
    done = subprocess.run(
        [str(LORDFX), *args, "--skip-existing"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert f"{40 - partial} written, {partial} skipped" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in src.iterdir())
