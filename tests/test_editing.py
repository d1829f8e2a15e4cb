"""The editing API on a tiny trained bundle, and the batch semantics the verbs share."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lordfx.api import Editor
from lordfx.batch import run_batch
from lordfx.errors import InputError, UsageError
from lordfx.preprocess import ResizePreprocessor

TINY = Path(__file__).with_name("tiny.toml")


@pytest.fixture(scope="module")
def editor(tmp_path_factory) -> Editor:
    from lordfx_trainer.train import resolve_config, start_run

    run = tmp_path_factory.mktemp("editing") / "run"
    start_run(resolve_config(str(TINY), {"latent_epochs": 2, "amortized_epochs": 1}), run, None)
    return Editor.from_bundle(run / "bundle")


def _photo(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_swap_content_matches_the_model(editor, tmp_path):
    a, b = _photo(tmp_path / "a.png", 0), _photo(tmp_path / "b.png", 1)
    code = editor.encode_content_file(b)
    assert code.shape == (1, 16)
    out = editor.swap_content_file(a, code)
    x_a = editor.pre.to_model(Image.open(a).convert("RGB"))[0][None]
    x_b = editor.pre.to_model(Image.open(b).convert("RGB"))[0][None]
    with torch.no_grad():
        expected = editor.model.transfer(x_a, x_b)[0]
    got = torch.from_numpy(np.array(out)).permute(2, 0, 1).float() / 255
    assert out.size == (16, 16)
    assert (got - expected).abs().max() <= 1 / 255 + 1e-6  # only the uint8 rounding differs
    assert np.array_equal(np.asarray(editor.transfer_files(a, b)), np.asarray(out))


def test_set_class_strength_zero_is_reconstruction(editor, tmp_path):
    a = _photo(tmp_path / "a.png", 2)
    name = editor.bundle.class_names[0]
    recon = np.asarray(editor.reconstruct(a))
    # render="generate": the model's pixels, so strength 0 is its reconstruction
    zero = editor.set_class_file(a, name, strength=0.0, render="generate")
    assert np.array_equal(np.asarray(zero), recon)
    full = np.asarray(editor.set_class_file(a, name, strength=1.0, render="generate"))
    assert not np.array_equal(full, recon)
    # render="warp" (the default): the edit moves the photo's own pixels, so 0 is the photo
    # (here its full-resolution centre square: a plain resize preprocessor has no paste-back)
    photo = np.asarray(Image.open(a).convert("RGB"))[:, 5:35]  # 40×30 → the middle 30×30
    assert np.array_equal(np.asarray(editor.set_class_file(a, name, strength=0.0)), photo)
    with pytest.raises(UsageError, match="unknown class 'nope'; valid: "):
        editor.set_class_file(a, "nope")
    with pytest.raises(UsageError, match=r"strength must be in \[0, 1\]"):
        editor.set_class_file(a, name, strength=1.5)
    with pytest.raises(UsageError, match="--face applies only"):
        editor.swap_content_file(a, editor.encode_content_file(a), face_index=1)


class _NoFaceBelowWidth(ResizePreprocessor):
    """Stands in for a face detector: 'finds' nothing in narrow images."""

    def to_model(self, image):
        if image.width < 35:
            raise InputError("image", "no face found")
        return super().to_model(image)


def test_batch_reports_bad_files_and_leaves_inputs_untouched(editor, tmp_path, monkeypatch):
    monkeypatch.setattr(editor, "pre", _NoFaceBelowWidth(16, 3))
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    _photo(src / "good1.png", 3)
    _photo(src / "sub" / "good2.jpg", 4)
    _photo(src / "noface.png", 5, size=(20, 30))
    (src / "notes.txt").write_text("not an image")
    truncated = _photo(src / "cut.jpg", 6).read_bytes()
    (src / "cut.jpg").write_bytes(truncated[: len(truncated) // 2])
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.rglob("*") if p.is_file()}
    code = editor.encode_content_file(src / "good1.png")
    out = tmp_path / "out"
    report = run_batch(src, out, lambda p: editor.swap_content_file(p, code), "swap")
    assert sorted(p.relative_to(out).as_posix() for p in report.written) == [
        "good1.png",
        "sub/good2.jpg",
    ]
    failed = {p.name: problem for p, problem in report.failed}
    assert set(failed) == {"noface.png", "notes.txt", "cut.jpg"}
    assert failed["noface.png"] == "no face found"
    assert "not an image" in failed["notes.txt"] and "decode" in failed["cut.jpg"]
    assert report.exit_code == 1
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.rglob("*") if p.is_file()}
    assert after == before
    again = run_batch(
        src, out, lambda p: editor.swap_content_file(p, code), "swap", skip_existing=True
    )
    assert len(again.skipped) == 2 and not again.written
    with pytest.raises(InputError, match="noface.png: no face found"):
        editor.swap_content_file(src / "noface.png", code)
