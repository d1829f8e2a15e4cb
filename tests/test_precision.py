"""bf16 autocast and channels_last train the same maths as fp32 contiguous (the fp32 path is
the reference the faster settings are checked against).

Stated tolerances, one training step on the same batch from the same initialisation:

- bf16 vs fp32: losses within 2e-2 relative; gradients (all parameters as one vector) cosine
  > 0.99. Adam's first update is lr·g/(|g|+eps) ≈ lr·sign(g), so elements whose gradient is
  within bf16 rounding of zero flip sign: its update cosine is lower (0.95-0.98 measured
  here) and is checked > 0.9.
- channels_last vs contiguous (fp32): losses within 1e-5 relative. Gradients: with the
  pixel L1 loss within 1e-5 of the largest gradient element (5.6e-7 measured); with the VGG
  loss within 1e-3 in relative L2 norm (2.3e-4 measured at batch 2). The VGG loss is
  piecewise linear (ReLU masks, max-pool argmax, L1 signs), so its gradient jumps wherever
  a 1e-7 rounding difference in the forward pass moves an element across a kink; the
  contiguous fp32 gradient differs from an fp64 one by the same amount (2.6e-4 to 5.8e-4
  measured), so this is fp32 rounding, not a layout error. Adam updates are not compared
  at 1e-5 for the sign reason above.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lordfx_trainer.loop import DeviceData, make_optimizer
from lordfx_trainer.losses import PixelL1Loss, VGGPerceptualLoss
from lordfx_trainer.models import LatentModel
from lordfx_trainer.steps import amortized_step, latent_step
from lordfx_trainer.weights import vgg16_features
from torch.nn import functional as F

from lordfx.nets import AmortizedModel, ModelConfig

CPU = torch.device("cpu")
BATCH, CLASSES = 8, 4


def one_step(stage, loss_fn, size, bf16=False, channels_last=False, batch=BATCH):
    """Loss, gradients and Adam update of one training step, as flat fp32 vectors."""
    cfg = ModelConfig(image_size=size, width=0.125, content_dim=16, class_dim=16)
    images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    data = DeviceData(images, np.arange(batch) % CLASSES, CPU, channels_last)
    b = data.batch(torch.arange(batch))
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if stage == "latent":
        model = LatentModel(cfg, CLASSES, batch).to(memory_format=fmt)
        groups = model.param_groups(1e-3, 1e-2)
        noise = torch.Generator().manual_seed(0)
        losses = lambda: latent_step(model, b, loss_fn, 1.0, 1e-3, "clean", noise)  # noqa: E731
    else:
        model = AmortizedModel(cfg).to(memory_format=fmt)
        groups = [{"params": model.parameters(), "lr": 1e-3}]
        targets = torch.Generator().manual_seed(1)
        t_class = 0.05 * torch.randn(CLASSES, cfg.class_dim, generator=targets)
        t_content = 0.05 * torch.randn(batch, cfg.content_dim, generator=targets)
        losses = lambda: amortized_step(model, b, loss_fn, t_class, t_content, 10.0, 10.0)  # noqa: E731
    opt = make_optimizer(groups, CPU)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = losses()["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    opt.step()
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    return float(loss.detach()), grads, after - before


def cosine(a, b):
    return float(F.cosine_similarity(a.double(), b.double(), dim=0))


def make_loss(name):
    if name == "l1":
        return PixelL1Loss()
    torch.manual_seed(0)
    # the VGG runs in bf16 here as it does on GPUs/AMX CPUs (on AVX2 CPUs training keeps it fp32)
    return VGGPerceptualLoss(vgg16_features(), cpu_bf16=True)


@pytest.mark.parametrize(
    ("stage", "loss_name", "size"),
    [("latent", "l1", 16), ("amortized", "l1", 16), ("latent", "vgg", 32)],
)  # the VGG path is the same in both stages: one stage keeps the test fast
def test_bf16_step_agrees_with_fp32(stage, loss_name, size):
    batch = 2 if loss_name == "vgg" else BATCH  # emulated bf16 convolutions are slow on AVX2
    loss_fn = make_loss(loss_name)
    loss32, grad32, update32 = one_step(stage, loss_fn, size, batch=batch)
    loss16, grad16, update16 = one_step(stage, loss_fn, size, bf16=True, batch=batch)
    assert abs(loss16 - loss32) <= 2e-2 * abs(loss32)
    assert cosine(grad16, grad32) > 0.99
    assert cosine(update16, update32) > 0.9


@pytest.mark.parametrize("stage", ["latent", "amortized"])
def test_channels_last_step_agrees_with_contiguous(stage):
    loss_fn = PixelL1Loss()
    loss_a, grad_a, _ = one_step(stage, loss_fn, 16)
    loss_b, grad_b, _ = one_step(stage, loss_fn, 16, channels_last=True)
    assert abs(loss_b - loss_a) <= 1e-5 * abs(loss_a)
    assert float((grad_b - grad_a).abs().max()) <= 1e-5 * float(grad_a.abs().max())


def test_channels_last_vgg_loss_agrees_with_contiguous():
    torch.manual_seed(0)
    loss_fn = VGGPerceptualLoss(vgg16_features())
    loss_a, grad_a, _ = one_step("latent", loss_fn, 32, batch=2)
    loss_b, grad_b, _ = one_step("latent", loss_fn, 32, batch=2, channels_last=True)
    assert abs(loss_b - loss_a) <= 1e-5 * abs(loss_a)
    assert float((grad_b - grad_a).norm()) <= 1e-3 * float(grad_a.norm())
