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
