"""The reconstruction losses, with a random-weight VGG16 (allow_random=True, as tests may)."""

from __future__ import annotations

import logging

import pytest
import torch
from lordfx_trainer.losses import (
    PAPER_LAYERS,
    VGG16_TAPS,
    PixelL1Loss,
    VGGPerceptualLoss,
    build_loss,
    parse_vgg_layers,
)
from lordfx_trainer.weights import load_vgg16_features

from lordfx.errors import LordfxError

# bf16 keeps 8 mantissa bits (~0.4 % per value) but the layer means average that out: measured
# |bf16 - fp32| / fp32 <= 2e-3 on 32x32 pairs with random and with ImageNet weights.
BF16_RTOL = 1e-2


@pytest.fixture(scope="module")
def vgg() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return load_vgg16_features(allow_random=True)


@pytest.fixture
def loss(vgg) -> VGGPerceptualLoss:
    return VGGPerceptualLoss(vgg)


def _pair(channels: int = 3, size: int = 32, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(batch, channels, size, size, generator=gen)
    b = torch.rand(batch, channels, size, size, generator=gen)
    return a, b


def test_zero_for_identical_inputs(loss):
    x, _ = _pair()
    pred = x.clone().requires_grad_(True)
    assert loss(pred, x).item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():  # the joint-pass branch
        assert loss(x, x).item() == pytest.approx(0.0, abs=1e-6)


def test_positive_and_differentiable(loss):
    a, b = _pair()
    pred = a.clone().requires_grad_(True)
    value = loss(pred, b)
    assert value.ndim == 0 and value.item() > 0
    value.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    with torch.no_grad():  # joint pass without gradients gives the same number
        assert loss(a, b).item() == pytest.approx(value.item(), rel=1e-5)


def test_pixel_weight_adds_l1(vgg):
    a, b = _pair()
    plain, with_l1 = VGGPerceptualLoss(vgg), VGGPerceptualLoss(vgg, pixel_weight=2.0)
    expected = plain(a, b) + 2.0 * (a - b).abs().mean()
    assert with_l1(a, b).item() == pytest.approx(expected.item(), rel=1e-5)


def test_grey_is_tiled_to_rgb(loss):
    a, b = _pair(channels=1)
    grey = loss(a, b)
    assert grey.item() > 0
    assert grey.item() == pytest.approx(loss(a.repeat(1, 3, 1, 1), b.repeat(1, 3, 1, 1)).item())


def test_channels_last_bf16_autocast_agrees_with_fp32(vgg):
    a, b = _pair()
    reference = VGGPerceptualLoss(vgg)(a, b).item()
    a_cl, b_cl = (t.contiguous(memory_format=torch.channels_last) for t in (a, b))
    for cpu_bf16 in (True, False):  # True: the real bf16 path; False: fp32 inside autocast
        pred = a_cl.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = VGGPerceptualLoss(vgg, cpu_bf16=cpu_bf16)(pred, b_cl)
        value.backward()
        assert value.dtype == torch.float32 and torch.isfinite(pred.grad).all()
        rtol = BF16_RTOL if cpu_bf16 else 1e-5
        assert value.item() == pytest.approx(reference, rel=rtol)


def test_no_gradient_reaches_vgg(loss):
    a, b = _pair()
    loss.train()  # a training loop may call .train() on everything
    assert not loss.features.training
    pred = a.clone().requires_grad_(True)
    loss(pred, b).backward()
    params = list(loss.features.parameters())
    assert params and all(not p.requires_grad and p.grad is None for p in params)


def test_tapped_layers_are_the_documented_relu_outputs(loss):
    x, _ = _pair(size=64, batch=1)
    maps = loss.feature_maps(x)
    shapes = [tuple(m.shape) for m in maps]
    assert shapes == [
        (1, 64, 64, 64),
        (1, 128, 32, 32),
        (1, 256, 16, 16),
        (1, 512, 8, 8),
        (1, 512, 2, 2),
    ]
    assert PAPER_LAYERS == ("relu1_2", "relu2_2", "relu3_2", "relu4_3", "pool5")
    normalised = (x - loss.mean) / loss.std
    for name, got in zip(PAPER_LAYERS, maps, strict=True):
        index = VGG16_TAPS[name]
        layer = loss.features[index]
        assert isinstance(layer, torch.nn.ReLU if name != "pool5" else torch.nn.MaxPool2d)
        assert (got >= 0).all()  # post-ReLU, not the raw conv output
        torch.testing.assert_close(got, loss.features[: index + 1](normalised.clone()))
    assert len(loss.features) == VGG16_TAPS["pool5"] + 1  # truncated after pool5


def test_pixel_l1():
    a, b = _pair(channels=1)
    assert PixelL1Loss()(a, b).item() == pytest.approx((a - b).abs().mean().item())
    assert PixelL1Loss()(a, a).item() == 0.0


def test_shape_mismatch_is_an_error(loss):
    a, b = _pair()
    with pytest.raises(LordfxError, match="equal shape"):
        loss(a, b[:, :1])
    with pytest.raises(LordfxError, match="equal shape"):
        PixelL1Loss()(a[0], b[0])


def test_build_loss(caplog):
    assert isinstance(build_loss("l1"), PixelL1Loss)
    with caplog.at_level(logging.WARNING, logger="lordfx_trainer.weights"):
        vgg_l1 = build_loss("vgg+l1", allow_random_weights=True)
    assert isinstance(vgg_l1, VGGPerceptualLoss) and vgg_l1.pixel_weight == 1.0
    assert "RANDOM" in caplog.text  # random weights are never silent
    with pytest.raises(LordfxError, match=r"valid: l1, vgg, vgg\+l1"):
        build_loss("lpips")


def test_layer_set_is_a_config_choice_and_cuts_the_network(vgg):
    features = vgg
    shallow = VGGPerceptualLoss(features, layers=("relu1_2", "relu2_2"))
    assert len(shallow.features) == VGG16_TAPS["relu2_2"] + 1  # nothing deeper runs
    x, y = _pair(size=32, batch=2)
    maps = shallow.feature_maps(x)
    assert [m.shape[1] for m in maps] == [64, 128]
    full = VGGPerceptualLoss(features)
    # the two shallow terms are the first two terms of the paper loss
    expected = sum(
        (a - b).abs().mean()
        for a, b in zip(full.feature_maps(x)[:2], full.feature_maps(y)[:2], strict=True)
    )
    torch.testing.assert_close(shallow(x, y), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(LordfxError, match="valid: relu1_1"):
        parse_vgg_layers("relu1_2,conv9")
    with pytest.raises(LordfxError):
        parse_vgg_layers(" , ")
