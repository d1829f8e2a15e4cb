"""`lordfx bench`: every measurement present and positive on a tiny preset; the plain
(reference-style) baseline computes the same maths; FLOPs are counted, not estimated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lordfx_trainer.bench_plain import HostData, PlainVGGLoss, plain_optimizer
from lordfx_trainer.bench_report import count_flops, format_report
from lordfx_trainer.loop import DeviceData
from lordfx_trainer.losses import VGGPerceptualLoss
from lordfx_trainer.weights import vgg16_features
from typer.testing import CliRunner

from lordfx.cli import build_app

TINY = Path(__file__).with_name("tiny.toml")
RATE_KEYS = [
    f"{stage}_{key}"
    for stage in ("latent", "amortized")
    for key in ("images_per_s", "flops_per_image", "gflops_per_s", "fraction_of_peak")
]
KEYS = RATE_KEYS + [
    "transfer_batch1_ms",
    "transfer_batch64_images_per_s",
    "peak_memory_mb",
    "peak_gflops",
]


def bench_json(*args):
    result = CliRunner().invoke(build_app(), ["bench", str(TINY), "--steps", "1", "--json", *args])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_bench_json_reports_both_stages_flops_and_inference():
    data = bench_json()  # peak measured by a timed matmul
    for key in KEYS:
        assert data[key] > 0, key
    assert data["config"]["image_size"] == 16 and data["device"] == "cpu"
    assert data["mode"] == "optimised" and "measured" in data["peak_source"]
    rate = data["latent_flops_per_image"] * data["latent_images_per_s"] / 1e9
    assert data["latent_gflops_per_s"] == pytest.approx(rate)


def test_bench_plain_json_has_the_keys():
    data = bench_json("--plain", "--peak-gflops", "100")
    assert data["mode"] == "plain"
    for key in KEYS:
        assert data[key] > 0, key
    assert data["peak_gflops"] == 100


def test_compare_plain_reports_speedup_and_same_losses():
    data = bench_json("--compare-plain", "--peak-gflops", "100")
    plain = data["plain"]
    for key in KEYS:
        assert plain[key] > 0, key
    for stage in ("latent", "amortized"):
        expected = data[f"{stage}_images_per_s"] / plain[f"{stage}_images_per_s"]
        assert data["speedup_vs_plain"][stage] == pytest.approx(expected)
        # same seed, batch and noise: both modes compute the same first-step loss
        assert data["first_loss_relative_difference"][stage] < 1e-5
        # pixel L1: no VGG weight gradients, so both modes execute the same FLOPs
        assert plain[f"{stage}_flops_per_image"] == data[f"{stage}_flops_per_image"]
    report = format_report(data)
    assert "speed-up vs plain" in report and report.count("plain ") >= 2


def test_plain_with_compile_is_a_usage_error():
    result = CliRunner().invoke(build_app(), ["bench", str(TINY), "--plain", "--compile"])
    assert result.exit_code == 2


def test_flop_count_is_forward_plus_backward_two_per_multiply_add():
    layer = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8, requires_grad=True)
    flops, _ = count_flops(lambda: layer(x).sum().backward())
    # forward, grad wrt input, grad wrt weight: 3 matmuls of 3x8x4 multiply-adds each
    assert flops == 3 * 2 * 3 * 8 * 4


def test_host_data_collates_the_same_batch_as_device_data():
    images = np.random.default_rng(0).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
    ids = np.arange(6) % 3
    plain = HostData(images, ids, torch.device("cpu")).batch([4, 1, 2])
    fast = DeviceData(images, ids, torch.device("cpu"), False).batch(torch.tensor([4, 1, 2]))
    assert plain.images.is_contiguous() and plain.images.dtype == torch.float32
    torch.testing.assert_close(plain.images, fast.images, rtol=0, atol=1e-7)
    assert plain.class_ids.tolist() == fast.class_ids.tolist()
    assert plain.image_ids.tolist() == [4, 1, 2]


def test_plain_vgg_loss_is_the_same_maths_computed_the_reference_way():
    torch.manual_seed(0)
    fast = VGGPerceptualLoss(vgg16_features(), pixel_weight=1.0)
    plain = PlainVGGLoss(fast)
    pred = torch.rand(2, 3, 32, 32, requires_grad=True)
    target = torch.rand(2, 3, 32, 32)
    value = fast(pred, target)
    (grad,) = torch.autograd.grad(value, pred)
    plain_value = plain(pred, target)
    (plain_grad,) = torch.autograd.grad(plain_value, pred, retain_graph=True)
    torch.testing.assert_close(plain_value, value, rtol=1e-5, atol=0)
    assert float((plain_grad - grad).norm()) <= 1e-3 * float(grad.norm())  # see test_precision
    # as in the reference, the VGG is not frozen: backward also computes its weight gradients
    plain_value.backward()
    assert plain.vgg.features[0].weight.grad is not None
    assert plain.vgg.classifier[0].weight.grad is None  # held in memory, never run
    assert not any(p.requires_grad for p in fast.parameters())


def test_plain_optimizer_uses_per_parameter_kernels():
    opt = plain_optimizer([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 1e-3}])
    assert opt.defaults["foreach"] is False and opt.defaults["betas"] == (0.5, 0.999)
