"""precision = "auto" (lordfx.precision) and the tapered architecture (lordfx.nets).

Stated tolerance for the 50-step curve (tiny stage-1 model, 16², pixel L1, same init, same
batches, same noise): every bf16 step loss within 5 % of the fp32 one, the final losses within
3 % (measured on the 2-core AVX2 EPYC: first step 9e-6, worst step 0.25 %, final 0.12 %).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lordfx_trainer.config import TrainConfig, upgrade_legacy
from lordfx_trainer.loop import DeviceData, make_optimizer
from lordfx_trainer.losses import PixelL1Loss
from lordfx_trainer.models import LatentModel
from lordfx_trainer.steps import latent_step
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from lordfx import precision
from lordfx.bundle import load_bundle, save_bundle
from lordfx.nets import AmortizedModel, Generator, ModelConfig


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LORDFX_CACHE", str(tmp_path / "cache"))


FAST = {"fp32_contiguous_s": 1.0, "fp32_channels_last_s": 0.9}


def test_bf16_is_chosen_only_with_native_hardware_and_a_faster_probe():
    fast_bf16 = precision.decide_cpu(True, FAST | {"bf16_channels_last_s": 0.4}, "hw")
    assert (fast_bf16.dtype, fast_bf16.channels_last) == ("bf16", True)
    assert "2.25×" in fast_bf16.reason
    emulated = precision.decide_cpu(True, FAST | {"bf16_channels_last_s": 8.0}, "hw")
    assert emulated.dtype == "fp32" and "only 0.11×" in emulated.reason
    no_hw = precision.decide_cpu(False, FAST, "no bf16")
    assert no_hw.dtype == "fp32" and no_hw.channels_last  # channels_last measured faster
    contiguous = precision.decide_cpu(False, {**FAST, "fp32_channels_last_s": 1.5}, "x")
    assert not contiguous.channels_last and "contiguous faster" in contiguous.reason


def test_probe_runs_once_per_machine_and_its_verdict_is_cached(monkeypatch):
    calls = []

    def probe(native):
        calls.append(native)
        return FAST | ({"bf16_channels_last_s": 0.3} if native else {})

    monkeypatch.setattr(precision, "probe_cpu", probe)
    monkeypatch.setattr(precision, "onednn_bf16", lambda: False)
    amx = frozenset({"avx2", "amx_bf16"})
    first = precision.auto_cpu(amx)
    assert first.dtype == "bf16" and "amx_bf16" in first.reason
    assert precision.auto_cpu(amx) == first and calls == [True]
    avx2 = precision.auto_cpu(frozenset({"avx2"}))  # another machine key: probed again
    assert avx2.dtype == "fp32" and calls == [True, False]


def test_this_machine_never_gets_an_emulated_bf16():
    choice = precision.resolve("auto", "cpu")
    if not precision.cpu_has_native_bf16():
        assert choice.dtype == "fp32" and "no native bf16" in choice.reason


def test_forced_and_invalid_choices():
    assert precision.resolve("bf16", "cpu").dtype == "bf16"
    forced = precision.resolve("fp32", "cpu", "channels_last")
    assert (forced.dtype, forced.channels_last) == ("fp32", True)
    assert "forced" in forced.reason
    with pytest.raises(ValueError, match="auto, fp32, bf16"):
        precision.resolve("fp16", "cpu")
    with pytest.raises(ValueError, match="memory_format"):
        precision.resolve("auto", "cpu", "nhwc")


def test_old_run_configs_keep_their_numerics():
    old = {"precision": "fp32", "channels_last": True, "batch_size": 8}
    assert upgrade_legacy(old) == {
        "precision": "fp32",
        "memory_format": "channels_last",
        "batch_size": 8,
        "encoder_standardise": False,
    }
    cfg = TrainConfig.from_dict({"channels_last": False})
    assert (cfg.precision, cfg.memory_format) == ("fp32", "contiguous")
    assert TrainConfig().precision == "auto"


def _curve(bf16: bool, steps: int = 50) -> list[float]:
    cfg = ModelConfig(image_size=16, width=0.0625, content_dim=8, class_dim=8, arch="tapered")
    n = 32
    images = np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    data = DeviceData(images, np.arange(n) % 4, torch.device("cpu"), bf16)
    torch.manual_seed(0)
    model = LatentModel(cfg, 4, n)
    opt = make_optimizer(model.param_groups(1e-3, 1e-2), torch.device("cpu"))
    noise = torch.Generator().manual_seed(0)
    loss_fn, out = PixelL1Loss(), []
    for step in range(steps):
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(step))[:8]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = latent_step(model, data.batch(idx), loss_fn, 1.0, 1e-3, "clean", noise)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out.append(float(loss.detach()))
    return out


def test_bf16_and_fp32_training_curves_agree():
    fp32, bf16 = np.array(_curve(False)), np.array(_curve(True))
    rel = np.abs(bf16 - fp32) / fp32
    assert rel[0] <= 2e-2  # first step: same init, same batch
    assert rel.max() <= 5e-2 and rel[-1] <= 3e-2
    assert fp32[-10:].mean() < fp32[:5].mean()  # it trains


@pytest.mark.parametrize("size", [64, 128])
def test_tapered_generator_shapes_and_cost(size):
    paper = ModelConfig(image_size=size)
    tapered = ModelConfig(image_size=size, arch="tapered")
    g = Generator(tapered).eval()
    assert [b.conv.out_channels for b in g.blocks] == [256, 256, 128, 64]
    # an AdaIN after every upsampling convolution, its linear map as wide as its block
    assert [m.out_features for m in g.modulation] == [512, 512, 256, 128]
    content, cls = torch.randn(2, 128), torch.randn(2, 256)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = g(content, cls)
    assert out.shape == (2, 3, size, size) and 0 <= out.min() and out.max() <= 1
    with torch.no_grad(), FlopCounterMode(display=False) as paper_counter:
        Generator(paper).eval()(content, cls)
    assert counter.get_total_flops() < paper_counter.get_total_flops() / 4
    model = AmortizedModel(tapered)  # same encoder interface
    assert model.encode_content(torch.rand(1, 3, size, size)).shape == (1, 128)


def test_bundle_records_the_architecture(tmp_path):
    cfg = ModelConfig(image_size=32, width=0.25, content_dim=8, class_dim=8, arch="tapered")
    torch.manual_seed(0)
    model = AmortizedModel(cfg).eval()
    path = save_bundle(tmp_path / "b", model, {"class_names": ["a"]})
    back = load_bundle(path)
    assert back.model.cfg.arch == "tapered"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(back.model(x), model(x))
    with pytest.raises(ValueError, match="unknown architecture 'wide'; valid: paper, tapered"):
        ModelConfig(arch="wide")


def test_editor_runs_bf16_only_when_chosen_and_agrees_with_fp32(tmp_path, monkeypatch):
    from lordfx.api import Editor

    cfg = ModelConfig(image_size=16, width=0.125, content_dim=8, class_dim=8, arch="tapered")
    torch.manual_seed(0)
    path = save_bundle(tmp_path / "b", AmortizedModel(cfg).eval(), {"class_names": ["a"]})
    image = Image.new("RGB", (16, 16), (200, 40, 90))
    monkeypatch.setenv("LORDFX_PRECISION", "fp32")
    fp32 = Editor.from_bundle(path)
    monkeypatch.setenv("LORDFX_PRECISION", "bf16")
    bf16 = Editor.from_bundle(path)
    assert (fp32.precision.dtype, bf16.precision.dtype) == ("fp32", "bf16")
    a = np.asarray(fp32.transfer(image, image), dtype=float)
    b = np.asarray(bf16.transfer(image, image), dtype=float)
    assert a.shape == b.shape == (16, 16, 3)
    assert np.abs(a - b).max() <= 6  # 8-bit levels: bf16's 8 mantissa bits
