"""Networks: the paper's shapes at 64×64, other sizes, AdaIN driven by the class code."""

from __future__ import annotations

import pytest
import torch

from lordfx.nets import AmortizedModel, Encoder, Generator, ModelConfig


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_paper_shapes_at_64():
    cfg = ModelConfig()
    g = Generator(cfg)
    widths = [m.out_features for m in g.fc if isinstance(m, torch.nn.Linear)]
    assert widths == [512, 1024, 4096]  # FC 512 → 1024 → 4096 = 256 × 4 × 4
    assert [b.conv.weight.shape for b in g.blocks] == [(256, 256, 3, 3)] * 4
    assert [m.weight.shape for m in g.modulation] == [(512, 256)] * 4  # 256 → 2·256 per layer
    assert g.head[0].weight.shape == (64, 256, 5, 5)
    assert g.head[2].weight.shape == (3, 64, 7, 7)
    e = Encoder(cfg, 128)
    convs = [m for m in e.convs if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 256, 256]
    assert convs[0].kernel_size == (7, 7) and convs[1].stride == (2, 2)
    assert [m.out_features for m in e.fc if isinstance(m, torch.nn.Linear)] == [256, 256, 128]


@pytest.mark.parametrize("size,channels", [(64, 3), (128, 3), (32, 1), (48, 1)])
def test_output_shapes_and_range(size, channels):
    cfg = ModelConfig(image_size=size, channels=channels, width=0.25)
    model = AmortizedModel(cfg)
    x = torch.rand(2, channels, size, size)
    assert model.encode_class(x).shape == (2, 256)
    assert model.encode_content(x).shape == (2, 128)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, channels, size, size)
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0


def test_class_code_drives_the_output_through_adain():
    torch.manual_seed(0)
    g = Generator(ModelConfig(image_size=32, width=0.25))
    content = torch.randn(1, 128)
    a = g(content, torch.randn(1, 256))
    b = g(content, torch.randn(1, 256))
    assert not torch.allclose(a, b)
    # same class code, same content → identical (no hidden state on the modules)
    code = torch.randn(1, 256)
    assert torch.equal(g(content, code), g(content, code))


def test_gradients_reach_generator_and_codes():
    g = Generator(ModelConfig(image_size=32, width=0.25))
    content = torch.randn(3, 128, requires_grad=True)
    class_code = torch.randn(3, 256, requires_grad=True)
    g(content, class_code).mean().backward()
    assert content.grad is not None and content.grad.abs().sum() > 0
    assert class_code.grad is not None and class_code.grad.abs().sum() > 0
    assert all(p.grad is not None for p in g.parameters())


def test_width_scales_channels():
    small, full = ModelConfig(width=0.5), ModelConfig()
    assert _count(Generator(small)) < _count(Generator(full)) / 3


def test_bad_config_and_input_shapes():
    with pytest.raises(ValueError, match="multiple of 16"):
        ModelConfig(image_size=40)
    with pytest.raises(ValueError, match="channels"):
        ModelConfig(channels=2)
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"image_size": 64, "depth": 3})
    model = AmortizedModel(ModelConfig(image_size=32, width=0.25))
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, 32, 32\)"):
        model.encode_class(torch.rand(1, 3, 64, 64))


def test_standardised_encoder_head_folds_into_the_last_layer():
    torch.manual_seed(0)
    enc = Encoder(ModelConfig(image_size=16, width=0.25), 8)
    keys = set(enc.state_dict())
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        plain = enc(x)
        mean, std = torch.randn(8), torch.rand(8) + 0.5
        enc.standardise_output(mean, std)
        scaled = enc(x)
        torch.testing.assert_close(scaled, mean + std * plain)
        enc.fold_output()
        torch.testing.assert_close(enc(x), scaled)  # same outputs, plain head
    assert torch.equal(enc.out_scale, torch.ones(8)) and torch.equal(enc.out_shift, torch.zeros(8))
    assert set(enc.state_dict()) == keys  # bundles keep their tensor list


def _fit(enc: Encoder, x: torch.Tensor, targets: torch.Tensor, steps: int) -> float:
    opt = torch.optim.Adam(enc.parameters(), lr=5e-4, betas=(0.5, 0.999))
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(enc(x), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def test_standardised_head_fits_large_codes_that_a_plain_head_does_not():
    """Stage-1 codes far larger than a fresh encoder's outputs (Cars3D class codes: std 2.7
    per dimension): in stage-2 steps, the plain head stays near the targets' variance."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 16, 16, generator=gen)
    targets = 3.0 * torch.randn(8, 16, generator=gen) + 2.0
    baseline = float(((targets - targets.mean(0)) ** 2).mean())
    cfg = ModelConfig(image_size=16, width=0.25)
    torch.manual_seed(1)
    plain = _fit(Encoder(cfg, 16), x, targets, 120)
    torch.manual_seed(1)
    enc = Encoder(cfg, 16)
    enc.standardise_output(targets.mean(0), targets.std(0))
    standardised = _fit(enc, x, targets, 120)
    assert plain > 0.5 * baseline
    assert standardised < 0.25 * baseline  # measured: plain 0.95, standardised 0.16 of it
