"""GPU-session preparation: the exported dataset file (round trip, same split), fp16 weight
copies accepted by the weights provisioning, and the session helper's plan and bundle parts.
All on tiny generated data; nothing from ../shared."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from lordfx_trainer import weights as w
from lordfx_trainer.cli.export_cli import same_dataset, write_half_weights
from lordfx_trainer.data import load_dataset
from lordfx_trainer.data.base import ImageDataset
from lordfx_trainer.data.npz import read_info, read_npz, write_npz
from lordfx_trainer.train import prepare_data, resolve_config
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from lordfx.cli import build_app
from lordfx.errors import InputError

REPO = Path(__file__).resolve().parents[1]


def _dataset(n_classes: int = 5, per_class: int = 6, size: int = 8) -> ImageDataset:
    rng = np.random.default_rng(0)
    n = n_classes * per_class
    return ImageDataset(
        name="toy",
        images=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        class_ids=np.repeat(np.arange(n_classes, dtype=np.int64), per_class),
        class_names=tuple(f"c{k}é" for k in range(n_classes)),  # non-ASCII survives
        content_labels=np.tile(np.arange(per_class, dtype=np.int64), n_classes)[:, None],
        content_names=("view",),
        meta={"source": "/nowhere", "reader": "toy", "degrees": [0, 15], "nested": {"a": None}},
    )


@pytest.mark.parametrize("compression", ["lzma", "deflate"])
def test_npz_round_trip_is_identical(tmp_path, compression):
    ds = _dataset()
    path = write_npz(ds, tmp_path / "d" / "toy.npz", {"preset": "x"}, compression)
    back = read_npz(path)
    assert same_dataset(ds, back)
    assert back.images.dtype == np.uint8 and back.class_ids.dtype == np.int64
    assert back.meta == ds.meta and back.class_names == ds.class_names
    assert read_info(path)["export"] == {"preset": "x"}
    with np.load(path, allow_pickle=False) as z:  # a plain npz for numpy
        np.testing.assert_array_equal(z["images"], ds.images)
    via_reader = load_dataset("npz", tmp_path / "d", 8, 3)
    assert same_dataset(ds, via_reader)


def test_npz_without_content_labels(tmp_path):
    ds = replace(_dataset(), content_labels=None, content_names=())
    back = read_npz(write_npz(ds, tmp_path / "t.npz"))
    assert back.content_labels is None and same_dataset(ds, back)


def test_npz_reader_refuses_other_size_and_ambiguous_folders(tmp_path):
    write_npz(_dataset(), tmp_path / "a.npz")
    with pytest.raises(InputError, match="8x8x3 images"):
        load_dataset("npz", tmp_path, 16, 3)
    write_npz(_dataset(), tmp_path / "b.npz")
    with pytest.raises(InputError, match="exactly one .npz"):
        load_dataset("npz", tmp_path, 8, 3)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a lordfx dataset"):
        load_dataset("npz", tmp_path / "bad", 8, 3)


def _fake_cars(root: Path, count: int = 24) -> None:
    """Tiny Cars3D-shaped files: ``im`` uint8 (16, 16, 3, 24 azimuths, 4 elevations)."""
    root.mkdir()
    rng = np.random.default_rng(1)
    for k in range(count):
        im = rng.integers(0, 256, (16, 16, 3, 24, 4), dtype=np.uint8)
        scipy.io.savemat(root / f"car_{k:03d}_mesh.mat", {"im": im})


def test_export_cars3d_preset_gives_the_same_split(tmp_path):
    """The GPU path: export the paper preset, train on it as dataset=npz, same classes held out
    (cars3d draws through split_cars3d, npz through split_classes: the same draw)."""
    cars = tmp_path / "cars"
    _fake_cars(cars)
    out = tmp_path / "carry" / "cars.npz"
    args = [
        "export-data",
        "cars3d",
        "--data",
        str(cars),
        "--out",
        str(out),
        "--set",
        "image_size=16",
    ]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.stderr
    assert "held-out classes identical" in result.stderr

    cfg = resolve_config("cars3d", {"image_size": 16})
    train_a, held_a = prepare_data(cfg, cars)
    train_b, held_b = prepare_data(replace(cfg, dataset="npz"), out.parent)
    assert held_a.num_classes == 20 and train_a.num_classes == 4
    assert held_a.class_names == held_b.class_names
    assert train_a.class_names == train_b.class_names
    for a, b in ((train_a, train_b), (held_a, held_b)):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
        np.testing.assert_array_equal(a.content_labels, b.content_labels)
        assert a.content_names == b.content_names == ("azimuth", "elevation")
    export = read_info(out)["export"]
    assert export["split"]["heldout_class_names"] == list(held_a.class_names)
    assert export["config"]["image_size"] == 16 and export["data_path"] == str(cars.resolve())
    # the original reader's meta is kept (the split note differs only by the protocol text)
    assert read_npz(out).meta == load_dataset("cars3d", cars, 16, 3).meta


def test_export_synthetic_with_caps_matches_prepare_data(tmp_path):
    out = tmp_path / "syn" / "syn.npz"
    args = ["export-data", "synthetic-tiny", "--out", str(out), "--compression", "deflate"]
    result = CliRunner().invoke(build_app(), args)
    assert result.exit_code == 0, result.stderr
    over = {"max_classes": 3, "max_images_per_class": 5}
    cfg = resolve_config("synthetic-tiny", over)
    train_a, held_a = prepare_data(cfg, None)
    train_b, held_b = prepare_data(replace(cfg, dataset="npz"), out.parent)
    assert train_a.num_images == train_b.num_images == 15
    assert held_a.class_names == held_b.class_names
    np.testing.assert_array_equal(train_a.images, train_b.images)


def _fake_alexnet_file(path: Path) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in w.alexnet_features().state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    state = {f"features.{k}": torch.randn(s, generator=gen) * 0.1 for k, s in shapes.items()}
    state["features.0.bias"][:6] = torch.tensor(w._SPECS["alexnet"].known_bias)
    meta = {"lordfx": json.dumps({"name": "alexnet", "source": "test"})}
    save_file(state, str(path), metadata=meta)
    return state


def test_fp16_weights_copy_is_accepted_and_upcast(tmp_path, monkeypatch):
    monkeypatch.setenv("LORDFX_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "alexnet-features.safetensors"
    state = _fake_alexnet_file(src)
    dst = tmp_path / "carry" / "alexnet-features-fp16.safetensors"
    assert write_half_weights(src, dst, "alexnet") == dst
    half = load_file(str(dst))
    assert half["features.0.weight"].dtype == torch.float16
    assert half["features.0.bias"].dtype == torch.float32  # known values stay exact
    assert dst.stat().st_size < 0.55 * src.stat().st_size

    check = w.verify_file(dst, "alexnet")
    assert not check.sha256_recorded and check.source.startswith("fp16 copy of test")
    monkeypatch.setenv("LORDFX_ALEXNET_WEIGHTS", str(dst))
    assert w.provision("alexnet", download=False) == dst  # the env path, used as it is
    module = w.load_alexnet_features()
    assert module[0].weight.dtype == torch.float32
    torch.testing.assert_close(module[0].weight, state["features.0.weight"].half().float())
    torch.testing.assert_close(module[3].bias, state["features.3.bias"])


def _helper():
    spec = importlib.util.spec_from_file_location(
        "gpu_session", REPO / "scripts" / "gpu_session.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plan_fits_the_budget_and_honours_given_epochs(tmp_path, capsys):
    gs = _helper()
    gs.update_summary(tmp_path, "check", {"data": {"n_train": 15648}})
    bench = {"latent_images_per_s": 10000.0, "amortized_images_per_s": 8000.0}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    assert gs.main(["plan", "--out", str(tmp_path), "--budget", "300", "--safety", "0.7"]) == 0
    e1, e2 = map(int, capsys.readouterr().out.split()[-2:])
    per_pair = 15648 / 10000 + 15648 / 8000
    assert e1 == e2 == int(0.7 * 300 / per_pair)
    plan = gs.read_summary(tmp_path)["plan"]
    assert plan["predicted_compute_s"] <= 0.7 * 300
    gs.main(["plan", "--out", str(tmp_path), "--budget", "1e6", "--epochs", ""])
    assert capsys.readouterr().out.split()[-2:] == ["200", "200"]  # capped at the preset's
    gs.main(["plan", "--out", str(tmp_path), "--budget", "1", "--epochs", "1 2"])
    assert capsys.readouterr().out.split()[-2:] == ["1", "2"]


def test_bundle_parts_rejoin_into_an_fp16_bundle(tmp_path, monkeypatch):
    from lordfx.bundle import load_bundle, save_bundle
    from lordfx.nets import AmortizedModel, ModelConfig

    gs = _helper()
    cfg = ModelConfig(image_size=16, channels=3, content_dim=8, class_dim=8, width=0.25)
    model = AmortizedModel(cfg)
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    save_bundle(run / "bundle", model, {"class_names": ["a", "b"]}, torch.randn(2, 8))
    monkeypatch.setattr(gs, "PART_BYTES", 100_000)
    names = gs.bundle_parts(run, out)
    assert len(names) > 1 and all((out / n).stat().st_size <= 100_000 for n in names)
    joined = b"".join((out / n).read_bytes() for n in names)
    with tarfile.open(fileobj=io.BytesIO(joined)) as tar:
        tar.extractall(tmp_path / "back", filter="data")
    back = load_bundle(tmp_path / "back" / "bundle")
    assert back.info["dtype"] == "float16" and back.class_names == ["a", "b"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(back.model.state_dict()[k], v.half().float())


def test_gpu_run_script_parses():
    script = REPO / "scripts" / "gpu_run.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
