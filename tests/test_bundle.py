"""Bundles: save → load → identical outputs, fp16 shipping, hash verification, no overwrite."""

from __future__ import annotations

import json

import pytest
import torch

from lordfx.bundle import MODEL_FILE, load_bundle, save_bundle
from lordfx.errors import InputError, LordfxError
from lordfx.nets import AmortizedModel, ModelConfig


@pytest.fixture
def model() -> AmortizedModel:
    torch.manual_seed(0)
    return AmortizedModel(ModelConfig(image_size=32, channels=3, width=0.25)).eval()


def test_save_load_identical_outputs(tmp_path, model):
    codes = torch.randn(5, 256)
    path = save_bundle(tmp_path / "b", model, {"class_names": list("abcde")}, class_codes=codes)
    loaded = load_bundle(path)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), model(x))
    assert torch.equal(loaded.class_codes, codes)
    assert loaded.class_names == list("abcde")
    info = json.loads((path / "config.json").read_text())
    assert info["format_version"] == 1 and info["architecture"]["width"] == 0.25
    assert set(info["files"]) == {"model.safetensors", "class_codes.safetensors"}


def test_fp16_bundle_is_half_size_and_close(tmp_path, model):
    full = save_bundle(tmp_path / "f32", model, {})
    half = save_bundle(tmp_path / "f16", model, {}, half=True)
    ratio = (half / MODEL_FILE).stat().st_size / (full / MODEL_FILE).stat().st_size
    assert 0.49 < ratio < 0.52
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        diff = (load_bundle(half).model(x) - model(x)).abs().max()
    assert diff < 2e-2


def test_corrupt_weights_are_detected(tmp_path, model):
    path = save_bundle(tmp_path / "b", model, {})
    data = bytearray((path / MODEL_FILE).read_bytes())
    data[-10] ^= 0xFF
    (path / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256 mismatch"):
        load_bundle(path)


def test_existing_bundle_is_not_overwritten(tmp_path, model):
    path = save_bundle(tmp_path / "b", model, {})
    with pytest.raises(LordfxError, match="already exists"):
        save_bundle(path, model, {})
    save_bundle(path, model, {"note": "second"}, overwrite=True)
    assert json.loads((path / "config.json").read_text())["note"] == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["b"]  # no temp dirs left behind


def test_not_a_bundle_and_future_format(tmp_path, model):
    with pytest.raises(InputError, match="not a lordfx bundle"):
        load_bundle(tmp_path)
    path = save_bundle(tmp_path / "b", model, {})
    info = json.loads((path / "config.json").read_text())
    info["format_version"] = 99
    (path / "config.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="newer than this lordfx"):
        load_bundle(path)


def test_ship_command_writes_fp16_copy_with_provenance(tmp_path, model):
    from typer.testing import CliRunner

    from lordfx.cli import build_app

    src = save_bundle(
        tmp_path / "run" / "bundle", model, {"class_names": ["a"]}, torch.randn(1, 256)
    )
    dest = tmp_path / "plugin" / "model"
    result = CliRunner().invoke(build_app(), ["ship", str(src), "--to", str(dest)])
    assert result.exit_code == 0, result.output
    shipped = load_bundle(dest)
    assert shipped.info["dtype"] == "float16" and shipped.class_names == ["a"]
    assert shipped.info["shipped_from"]["files"] == load_bundle(src).info["files"]
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert (shipped.model(x) - model(x)).abs().max() < 2e-2
    again = CliRunner().invoke(build_app(), ["ship", str(src), "--to", str(dest)])
    assert again.exit_code == 1 and "already exists" in again.output
