"""LPIPS (Zhang et al., CVPR 2018) with backbone weights from :mod:`lordfx_trainer.weights`.

The ``lpips`` package ships only its linear heads (``weights/v0.1/*.pth``) and downloads the
ImageNet backbone through torchvision, which fails offline. So the model is built with a random
backbone (``pnet_rand=True``) and the provisioned weights are copied into its slices.
"""

from __future__ import annotations

import logging
import warnings
from typing import Literal

import torch
from safetensors.torch import load_file
from torch import nn

from lordfx.errors import LordfxError
from lordfx_trainer.weights import provision

log = logging.getLogger(__name__)

_BACKBONES = {"alex": "alexnet", "vgg": "vgg16"}


def make_lpips(net: Literal["alex", "vgg"] = "alex") -> nn.Module:
    """LPIPS v0.1 with ImageNet ``net`` features, in eval mode and frozen.

    The paper's Table 1 numbers (DESIGN §3) use ``net="alex"``.
    """
    if net not in _BACKBONES:
        raise LordfxError(f"unknown LPIPS net {net!r}; valid: {', '.join(_BACKBONES)}")
    state = load_file(str(provision(_BACKBONES[net])))
    import lpips  # heavy (torchvision); only the trainer needs it

    with warnings.catch_warnings():
        # lpips still calls torchvision's deprecated ``pretrained=`` argument.
        warnings.filterwarnings(
            "ignore", message=".*(pretrained|weight enum)", category=UserWarning
        )
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    _load_backbone(model.net, state)
    return model.eval().requires_grad_(False)


def _load_backbone(pnet: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``features.N.*`` into lpips' slices, which keep torchvision's index N as names."""
    modules = {
        int(name): module
        for slice_ in pnet.children()
        for name, module in slice_.named_children()
        if isinstance(module, nn.Conv2d)
    }
    keys = {int(k.split(".")[1]) for k in state}
    if keys != set(modules):
        raise LordfxError(f"LPIPS backbone has convs {sorted(modules)}, weights {sorted(keys)}")
    with torch.no_grad():
        for key, tensor in state.items():
            _, index, kind = key.split(".")
            getattr(modules[int(index)], kind).copy_(tensor)


def lpips_distance(model: nn.Module, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LPIPS distance per image pair, without gradients.

    Shape: a, b (B, C, H, W) float in [0, 1], C in {1, 3} (grey is tiled to RGB) → (B,).
    LPIPS expects [-1, 1], so inputs are mapped by ``2x - 1`` here.
    """
    if a.shape != b.shape or a.ndim != 4 or a.shape[1] not in (1, 3):
        raise LordfxError(
            f"lpips_distance wants equal (B, 1|3, H, W) shapes, got {a.shape}, {b.shape}"
        )
    if a.shape[1] == 1:
        a, b = a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)
    with torch.no_grad():
        return model(a.float() * 2 - 1, b.float() * 2 - 1).flatten()
