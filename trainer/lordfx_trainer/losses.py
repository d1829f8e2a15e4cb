"""Reconstruction losses shared by both LORD stages (DESIGN §2 "loss").

Every loss is an ``nn.Module`` whose ``forward(pred, target)`` returns a scalar tensor.
Shape: pred, target (B, C, H, W) float in [0, 1], C in {1, 3}; shapes are checked, value
ranges are not (that would cost a device sync per step).
"""

from __future__ import annotations

import torch
from torch import nn

from lordfx.errors import LordfxError
from lordfx.precision import onednn_bf16
from lordfx_trainer.weights import load_vgg16_features

# torchvision vgg16().features indices whose *outputs* are tapped (the ReLU after each conv).
VGG16_TAPS: dict[str, int] = {
    "relu1_1": 1,
    "relu1_2": 3,
    "relu2_1": 6,
    "relu2_2": 8,
    "relu3_1": 11,
    "relu3_2": 13,
    "relu3_3": 15,
    "relu4_1": 18,
    "relu4_2": 20,
    "relu4_3": 22,
    "relu5_1": 25,
    "relu5_2": 27,
    "relu5_3": 29,
    "pool5": 30,
}
#: The paper's layer set (DESIGN §2): conv1_2, conv2_2, conv3_2, conv4_3, pool5.
PAPER_LAYERS = ("relu1_2", "relu2_2", "relu3_2", "relu4_3", "pool5")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def parse_vgg_layers(text: str) -> tuple[str, ...]:
    """``"relu1_2,relu2_2"`` → the tap names, validated (unknown names list the valid ones)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in VGG16_TAPS]
    if not names or unknown:
        raise LordfxError(
            f"vgg_layers: unknown or empty layer list {text!r}; valid: {', '.join(VGG16_TAPS)}"
        )
    return names


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.ndim != 4 or pred.shape[1] not in (1, 3) or pred.shape != target.shape:
        raise LordfxError(
            f"loss wants pred and target of equal shape (B, 1|3, H, W), got "
            f"{tuple(pred.shape)} and {tuple(target.shape)}"
        )


def _l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # fp32 even under bf16 autocast: bf16 differences of nearby activations lose most digits.
    return (a.float() - b.float()).abs().mean()


class PixelL1Loss(nn.Module):
    """Mean absolute pixel difference, ``mean |pred - target|``.

    Shape: pred, target (B, C, H, W) in [0, 1], C in {1, 3} → scalar.
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar L1 loss."""
        _check_pair(pred, target)
        return _l1(pred, target)


class VGGPerceptualLoss(nn.Module):
    """LORD's perceptual loss: ``sum_l mean |phi_l(pred) - phi_l(target)|`` (+ pixel L1).

    Layers (DESIGN §2): conv1_2, conv2_2, conv3_2, conv4_3 and pool5 of ImageNet VGG16, taken
    *after* their ReLU (``PAPER_LAYERS``, the default; ``layers`` picks another set from
    ``VGG16_TAPS``, and the network is cut after the deepest one, so dropping pool5 and
    conv4_3 also drops their cost). The authors' PyTorch reference (avivga/lord-pytorch,
    ``layer_ids=(2, 7, 12, 21, 30)``) appends the conv outputs, but torchvision's next layer is
    ``ReLU(inplace=True)``, which overwrites them, so it too uses the ReLU outputs.

    Input normalisation: [0, 1] RGB is standardised with the ImageNet mean/std that torchvision's
    VGG16 was trained with. The reference feeds raw [0, 1] instead, so our feature distances
    are larger (inputs about 4.4x in scale): tune ``content_decay`` to this convention. Grey
    (C = 1) is tiled to RGB. ``pixel_weight`` adds ``w * mean |pred - target|`` on the raw
    images (the reference uses w = 1).

    The VGG is cut after pool5 (no classifier), frozen and kept in eval mode. Target features
    are computed under ``torch.no_grad()``; when no gradient is needed at all, pred and target
    share one forward pass (with a gradient, separate passes are cheaper: 5.1 s vs 6.4 s at
    B=32, 64x64 on a 2-core AVX2 CPU). Inputs are made channels_last (fp32 on that CPU: 5.1 s
    vs 6.6 s). Works under ``torch.autocast``. ``cpu_bf16``: whether the VGG honours a *CPU*
    bf16 autocast; ``None`` = only where oneDNN has bf16 convolutions (AVX-512/AMX). Without
    them a bf16 VGG step is ~15x slower than fp32 (75 s vs 5 s above), so it runs in fp32.

    Shape: pred, target (B, C, H, W) in [0, 1], C in {1, 3}, H, W >= 32 → scalar.
    """

    def __init__(
        self,
        features: nn.Sequential | None = None,
        pixel_weight: float = 0.0,
        cpu_bf16: bool | None = None,
        layers: tuple[str, ...] = PAPER_LAYERS,
    ) -> None:
        super().__init__()
        self.cpu_bf16 = onednn_bf16() if cpu_bf16 is None else cpu_bf16
        if features is None:
            features = load_vgg16_features()
        pool5 = VGG16_TAPS["pool5"]
        if len(features) <= pool5 or not isinstance(features[pool5], nn.MaxPool2d):
            raise LordfxError("VGGPerceptualLoss needs torchvision's VGG16 features (pool5 at 30)")
        self.layers = parse_vgg_layers(",".join(layers))
        self._taps = frozenset(VGG16_TAPS[n] for n in self.layers)
        self.features = features[: max(self._taps) + 1].eval().requires_grad_(False)
        self.pixel_weight = float(pixel_weight)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGPerceptualLoss:
        """Switch mode; the VGG itself always stays in eval mode."""
        super().train(mode)
        self.features.eval()
        return self

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tapped activations, shallow to deep.

        Shape: x (B, C, H, W) in [0, 1] → for the paper layers [(B, 64, H, W),
        (B, 128, H/2, W/2), (B, 256, H/4, W/4), (B, 512, H/8, W/8), (B, 512, H/32, W/32)].
        """
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        maps = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._taps:
                maps.append(x)
        return maps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar perceptual loss (plus weighted pixel L1)."""
        _check_pair(pred, target)
        if pred.device.type == "cpu" and torch.is_autocast_enabled("cpu") and not self.cpu_bf16:
            with torch.autocast("cpu", enabled=False):
                return self._loss(pred.float(), target.float())
        return self._loss(pred, target)

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and pred.requires_grad:
            # Separate passes: a joint one would also run the backward over the target half.
            with torch.no_grad():
                target_maps = self.feature_maps(target)
            pred_maps = self.feature_maps(pred)
        else:
            both = self.feature_maps(torch.cat([pred, target]))
            pred_maps = [m[: len(pred)] for m in both]
            target_maps = [m[len(pred) :] for m in both]
        loss = sum(_l1(p, t) for p, t in zip(pred_maps, target_maps, strict=True))
        if self.pixel_weight:
            loss = loss + self.pixel_weight * _l1(pred, target)
        return loss


LOSS_NAMES = ("l1", "vgg", "vgg+l1")


def build_loss(
    name: str, allow_random_weights: bool = False, vgg_layers: str = ",".join(PAPER_LAYERS)
) -> nn.Module:
    """The loss called ``name``: ``l1``, ``vgg`` or ``vgg+l1`` (pixel weight 1, as the reference).

    ``allow_random_weights`` gives the VGG random weights (tests only; logs a warning);
    ``vgg_layers`` the comma-separated taps (``VGG16_TAPS``).
    """
    if name == "l1":
        return PixelL1Loss()
    if name in ("vgg", "vgg+l1"):
        features = load_vgg16_features(allow_random=allow_random_weights)
        return VGGPerceptualLoss(
            features,
            pixel_weight=1.0 if name == "vgg+l1" else 0.0,
            layers=parse_vgg_layers(vgg_layers),
        )
    raise LordfxError(f"unknown loss {name!r}; valid: {', '.join(LOSS_NAMES)}")
