"""The image-reading policy (lordfx.imageio): 8-bit conversion of every mode, the pixel
limit, Pillow's bomb checks, EXIF, animations, and one-line errors for broken files."""

from __future__ import annotations

import logging
import os
import re
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from lordfx.errors import InputError, UsageError
from lordfx.imageio import (
    DEFAULT_MAX_PIXELS,
    max_pixels,
    parse_pixels,
    read_image,
    set_max_pixels,
    to_8bit,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)


def test_16bit_grey_png_and_tiff_keep_the_high_byte_like_cv2(tmp_path):
    v = np.arange(0, 65536, 64, dtype=np.uint16).reshape(32, 32)
    for name in ("g.png", "g.tif"):
        path = tmp_path / name
        cv2.imwrite(str(path), v)
        with Image.open(path) as im:
            assert im.mode.startswith("I;16")
        got = np.asarray(read_image(path, "L"))
        assert np.array_equal(got, (v >> 8).astype(np.uint8))  # scaled, not clipped
        assert np.array_equal(got, cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    big_endian = Image.frombytes("I;16B", (32, 32), v.astype(">u2").tobytes())
    assert np.array_equal(np.asarray(to_8bit(big_endian)), (v >> 8).astype(np.uint8))


def test_cmyk_jpeg_matches_cv2_pixel_for_pixel(tmp_path):
    path = tmp_path / "c.jpg"
    Image.fromarray(RGB).convert("CMYK").save(path, quality=95)
    ours = np.asarray(read_image(path))
    theirs = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(ours, theirs)


def test_integer_and_float_modes():
    i16 = Image.fromarray(RGB[:, :, 0].astype(np.int32) * 257)
    assert i16.mode == "I"
    assert np.array_equal(np.asarray(to_8bit(i16)), RGB[:, :, 0])
    signed = Image.fromarray(np.array([[-100, 0], [100, 300]], dtype=np.int32))
    assert np.asarray(to_8bit(signed)).tolist() == [[0, 64], [128, 255]]  # stretched
    unit = Image.fromarray(np.array([[0.0, 0.5], [1.0, np.nan]], dtype=np.float32))
    assert np.asarray(to_8bit(unit)).tolist() == [[0, 128], [255, 0]]
    wide = Image.fromarray(np.array([[-1.0, 1.0], [3.0, 3.0]], dtype=np.float32))
    assert np.asarray(to_8bit(wide)).tolist() == [[0, 128], [255, 255]]
    flat = Image.fromarray(np.full((2, 2), 7.5, dtype=np.float32))
    assert np.asarray(to_8bit(flat)).tolist() == [[0, 0], [0, 0]]


@pytest.mark.parametrize(
    "mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "YCbCr", "LAB", "HSV"]
)
def test_every_pillow_mode_becomes_8bit_l_or_rgb(mode):
    src = (
        Image.fromarray(RGB).convert(mode)
        if mode != "PA"
        else Image.fromarray(RGB).convert("P").convert("PA")
    )
    out = to_8bit(src)
    assert out.mode in ("L", "RGB") and out.size == (32, 24)
    expected = {"1": "L", "L": "L", "LA": "L"}.get(mode, "RGB")
    assert out.mode == expected
    if mode in ("RGB", "RGBA", "RGBX"):
        assert np.array_equal(np.asarray(out), RGB)  # alpha dropped, colour kept
    if mode in ("YCbCr", "LAB"):
        assert np.abs(np.asarray(out).astype(int) - RGB).mean() < 3  # a colour conversion


def test_palette_with_transparency_warns_nothing(tmp_path):
    path = tmp_path / "p.png"
    Image.fromarray(RGB).convert("P").save(path, transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path).mode == "RGB"


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "r.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(RGB).transpose(Image.Transpose.ROTATE_90).save(
        path, exif=exif.tobytes(), quality=100
    )
    assert read_image(path).size == (32, 24)


def test_animation_uses_the_first_frame_and_says_so(tmp_path, caplog):
    path = tmp_path / "a.gif"
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    with caplog.at_level(logging.WARNING, logger="lordfx"):
        first = read_image(path)
    assert first.getpixel((0, 0))[0] > 200
    assert "2 frames (animated or multi-page); using the first" in caplog.text


def test_pixel_limit_parsing_env_and_override(monkeypatch):
    assert parse_pixels("64M") == parse_pixels("64MP") == 64_000_000
    assert parse_pixels("1.5g") == 1_500_000_000 and parse_pixels("1000") == 1000
    for bad in ("", "-3", "lots", "0"):
        with pytest.raises(ValueError):
            parse_pixels(bad)
    monkeypatch.delenv("LORDFX_MAX_PIXELS", raising=False)
    assert max_pixels() == DEFAULT_MAX_PIXELS == 64_000_000
    monkeypatch.setenv("LORDFX_MAX_PIXELS", "2M")
    assert max_pixels() == 2_000_000
    set_max_pixels(5)
    try:
        assert max_pixels() == 5
    finally:
        set_max_pixels(None)
    monkeypatch.setenv("LORDFX_MAX_PIXELS", "huge")
    with pytest.raises(UsageError, match="LORDFX_MAX_PIXELS"):
        max_pixels()


def test_limit_error_names_file_size_and_limit(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(RGB).save(path)
    with pytest.raises(InputError) as err:
        read_image(path, limit=700)
    assert str(err.value) == (
        f"{path}: image too large: 32×24 = 768 pixels, over the 700 pixels limit "
        "(raise it with lordfx --max-pixels N or LORDFX_MAX_PIXELS=N)"
    )
    assert read_image(path, limit=768).size == (32, 24)


def test_a_raised_limit_lifts_pillows_threshold(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # Pillow errors above 600
    path = tmp_path / "x.png"
    Image.fromarray(RGB).save(path)  # 768 pixels
    with pytest.raises(InputError, match="image too large: 768 pixels, over the 700"):
        read_image(path, limit=700)
    assert read_image(path, limit=1000).size == (32, 24)


def test_concurrent_reads_leave_the_warning_filters_as_they_were(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(RGB).save(path)
    before = list(warnings.filters)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                read_image(path)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and warnings.filters == before


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "empty file (0 bytes)"),
        (b"<!doctype html><title>404</title>", "not an image file (an HTML page"),
        (b"just words\n", "not an image file (a text file)"),
        (b"\x00\x01\x02\xfe" * 10, "not an image file (unrecognised format)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "truncated or corrupt PNG header"),
        (b"GIF89a\x01", "truncated or corrupt GIF header"),
    ],
)
def test_broken_files_are_one_line_errors(tmp_path, content, words):
    path = tmp_path / "x.jpg"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        read_image(path)
    assert err.value.path == path and words in err.value.problem
    assert len(str(err.value).splitlines()) == 1


def test_missing_special_and_linked_files(tmp_path):
    os.symlink("nowhere.png", tmp_path / "dangling.png")
    os.symlink("loop.png", tmp_path / "loop.png")
    os.mkfifo(tmp_path / "fifo.png")
    cases = {
        "missing.png": "no such file",
        "dangling.png": "broken symbolic link (to nowhere.png)",
        "loop.png": "symbolic link loop",
        "fifo.png": "not a regular file",
        ".": "is a folder",
    }
    for name, words in cases.items():
        with pytest.raises(InputError, match=re.escape(words)):
            read_image(tmp_path / name)


def test_trainer_readers_use_the_same_policy(tmp_path):
    from lordfx_trainer.data.images import read_image_files

    v = RGB[:, :, 1].astype(np.uint16) * 257
    cv2.imwrite(str(tmp_path / "a16.png"), v)
    (tmp_path / "b.png").write_bytes(b"<html>")
    images, kept = read_image_files(
        [tmp_path / "a16.png", tmp_path / "b.png"], 24, 1, skip_bad=True
    )
    assert kept == [0]
    assert np.array_equal(images[0, :, :, 0], RGB[:, 4:28, 1])  # centre crop, 16-bit scaled
    with pytest.raises(InputError, match="b.png: not an image file"):
        read_image_files([Path(tmp_path / "b.png")], 24, 1)
