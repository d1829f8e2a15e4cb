"""The ``lordfx bench --plain`` baseline: the same maths as training, computed the way the
authors' PyTorch reference computes it (avivga/lord-pytorch, ``model/training.py`` and
``model/modules.py`` at 2721e84), so the speed-up of the optimised path is measured, not
claimed.

What the reference does, and this module copies:

- images live in host RAM as float32 (N, H, W, C), viewed as (N, C, H, W); every batch is
  collated item by item (``NamedTensorDataset`` + ``DataLoader``'s ``torch.stack``) and then
  copied to the device. The reference collates in one loader worker; here it is done in the
  main process (a worker would compete with the step for a small CPU's cores, and forks);
- fp32, contiguous memory format, no autocast, eager mode;
- the perceptual network is torchvision's whole ``vgg16()`` held in memory, run over
  ``features[0..30]`` for the prediction *and* the target; its parameters are never frozen
  (``requires_grad`` stays True), so backward also computes VGG weight gradients through both
  branches;
- Adam with per-parameter kernels (``foreach=False``) and a host sync (``loss.item()``) on
  every step.

The networks, step functions and loss *values* are ours (same generator, encoders, taps,
input normalisation and pixel weight), so a plain step and an optimised step on the same batch
and initialisation give the same losses. The reference does not run VGG16's avgpool or
classifier in its loss, so neither does this baseline (that would inflate the speed-up).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from lordfx_trainer.losses import VGGPerceptualLoss
from lordfx_trainer.steps import Batch


class HostData:
    """Float32 images in host RAM, collated per item like the reference's DataLoader."""

    def __init__(self, images: np.ndarray, class_ids: np.ndarray, device: torch.device) -> None:
        # (N, H, W, C) uint8 → float32 in [0, 1], a permuted (non-contiguous) view, as the
        # reference's ``torch.from_numpy(imgs).permute(0, 3, 1, 2)`` of a float32 array.
        self.images = torch.from_numpy(images.astype(np.float32) / 255).permute(0, 3, 1, 2)
        self.class_ids = torch.from_numpy(class_ids.astype(np.int64))
        self.device = device

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, indices: list[int]) -> Batch:
        """Shape: images (B, C, H, W) float32 on the device, contiguous."""
        items = [
            {"img": self.images[i], "class_id": self.class_ids[i], "img_id": torch.tensor(i)}
            for i in indices
        ]
        stacked = {k: torch.stack([item[k] for item in items]) for k in items[0]}
        on_device = {k: v.to(self.device) for k, v in stacked.items()}
        return Batch(on_device["img"], on_device["class_id"], on_device["img_id"])


class PlainVGGLoss(nn.Module):
    """``VGGPerceptualLoss``'s value, computed the reference's way (see the module docstring).

    Shape: pred, target (B, C, H, W) in [0, 1], C in {1, 3} → scalar.
    """

    def __init__(self, loss: VGGPerceptualLoss) -> None:
        super().__init__()
        from torchvision.models import vgg16

        device = loss.mean.device
        with torch.device("meta"):  # skip the random init of 138 M parameters
            vgg = vgg16(weights=None)
        self.vgg = vgg.to_empty(device=device).eval()  # eval, but not frozen (reference)
        # the loss's VGG is cut after its deepest tap: those layers are the ones that run
        missing, _ = self.vgg.features.load_state_dict(loss.features.state_dict(), strict=False)
        assert all(int(k.split(".")[0]) >= len(loss.features) for k in missing)
        # The reference holds the whole pretrained model; its classifier (120 M parameters)
        # is never run, so zeros stand in for its weights, written so they occupy memory.
        for p in self.vgg.classifier.parameters():
            p.data.fill_(0.0)
        self.register_buffer("mean", loss.mean.clone(), persistent=False)
        self.register_buffer("std", loss.std.clone(), persistent=False)
        self.pixel_weight = loss.pixel_weight
        self.taps = tuple(sorted(loss._taps))

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.mean) / self.std
        maps = []
        for i in range(self.taps[-1] + 1):
            x = self.vgg.features[i](x)
            if i in self.taps:
                maps.append(x)
        return maps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred_maps, target_maps = self.feature_maps(pred), self.feature_maps(target)
        loss = sum((p - t).abs().mean() for p, t in zip(pred_maps, target_maps, strict=True))
        if self.pixel_weight:
            loss = loss + self.pixel_weight * (pred - target).abs().mean()
        return loss


def plain_loss(loss_fn: nn.Module) -> nn.Module:
    """The reference-style version of ``loss_fn`` (pixel L1 has nothing to unoptimise)."""
    if isinstance(loss_fn, VGGPerceptualLoss):
        return PlainVGGLoss(loss_fn)
    return loss_fn


def plain_optimizer(groups: list[dict]) -> torch.optim.Adam:
    """Adam β=(0.5, 0.999) with per-parameter kernels, as the reference's default Adam."""
    return torch.optim.Adam(groups, betas=(0.5, 0.999), foreach=False, fused=False)


def plain_train_step(
    data: HostData,
    indices: list[int],
    losses_fn: Callable[[Batch], dict[str, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
) -> Callable[[], float]:
    """One reference-style step: collate, copy, forward, backward, Adam, ``loss.item()``."""

    def step() -> float:
        batch = data.batch(indices)
        optimizer.zero_grad()
        loss = losses_fn(batch)["loss"]
        loss.backward()
        optimizer.step()
        return loss.item()  # the reference's per-step host sync (its progress bar)

    return step
