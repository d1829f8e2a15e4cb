"""LORD networks (paper Appendix A.1): generator with AdaIN from the class code, and the
class/content encoders of stage 2. Pure ``nn.Module``s; training lives in lordfx_trainer.

All images are float tensors in [0, 1], shape (B, C, H, W) with H == W == image_size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

NUM_UPSAMPLINGS = 4  # the generator starts at image_size / 16 and doubles four times
LEAK = 0.2
ARCHS = ("paper", "tapered")
#: "tapered": output channels of the four upsampling blocks (before ``width`` scaling). The
#: paper keeps 256 channels up to the full resolution, where 3×3 and 5×5 convolutions at 64²
#: cost most of a step; here channels halve over the last two doublings (at 64²: 256 @ 8²,
#: 256 @ 16², 128 @ 32², 64 @ 64²) and the head is a 3×3 + 7×7 pair at 64 channels.
TAPERED_CHANNELS = (256, 256, 128, 64)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a LORD model. ``width`` scales every channel count (1.0 = paper).

    ``arch``: "paper" = Appendix A.1's generator; "tapered" = the same code sizes, FC stack,
    AdaIN after every upsampling convolution and encoders, with channels that shrink as the
    resolution grows (``TAPERED_CHANNELS``) and a lighter head: about 1/6 of the paper
    generator's FLOPs at 64² (``lordfx bench``, docs/performance.md).
    """

    image_size: int = 64
    channels: int = 3
    content_dim: int = 128
    class_dim: int = 256
    width: float = 1.0
    arch: str = "paper"

    def __post_init__(self) -> None:
        if self.image_size <= 0 or self.image_size % 16:
            raise ValueError(f"image_size must be a positive multiple of 16, got {self.image_size}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.width <= 0 or self.content_dim <= 0 or self.class_dim <= 0:
            raise ValueError("width, content_dim and class_dim must be positive")
        if self.arch not in ARCHS:
            raise ValueError(f"unknown architecture {self.arch!r}; valid: {', '.join(ARCHS)}")

    def ch(self, base: int) -> int:
        """A paper channel count scaled by ``width`` (at least 8)."""
        return max(8, round(base * self.width))

    def block_channels(self) -> list[int]:
        """Output channels of the four upsampling blocks (input: ``ch(256)``)."""
        if self.arch == "tapered":
            return [self.ch(c) for c in TAPERED_CHANNELS]
        return [self.ch(256)] * NUM_UPSAMPLINGS

    @property
    def start_size(self) -> int:
        return self.image_size // 2**NUM_UPSAMPLINGS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**data)  # bundles written before ``arch`` existed are "paper"


class AdaIN(nn.Module):
    """Instance norm whose per-channel scale and bias come from the class code (passed in)."""

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Shape: x (B, C, H, W); scale, bias (B, C)."""
        x = F.instance_norm(x, eps=1e-5)
        return x * scale[:, :, None, None] + bias[:, :, None, None]


class UpBlock(nn.Module):
    """Nearest upsample ×2 → conv3×3 → LeakyReLU → AdaIN."""

    def __init__(self, channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)
        self.norm = AdaIN()

    def forward(self, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.norm(F.leaky_relu(self.conv(x), LEAK), scale, bias)


class Generator(nn.Module):
    """G(content_code, class_code) → image (paper A.1).

    content → FC → FC → FC (LeakyReLU) → reshape (C0, S/16, S/16) → 4 × UpBlock with AdaIN
    driven by a linear map of the class code → conv5×5 → LeakyReLU → conv7×7 → sigmoid.
    At 64×64, width 1: FC 512 → 1024 → 4096, C0 = 256 (the paper's shapes). With
    ``cfg.arch == "tapered"`` the blocks narrow (``ModelConfig.block_channels``), each AdaIN
    layer's linear map matches its block's width, and the head is conv3×3 → conv7×7.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c0, s0 = cfg.ch(256), cfg.start_size
        flat = c0 * s0 * s0
        self.fc = nn.Sequential(
            nn.Linear(cfg.content_dim, flat // 8),
            nn.LeakyReLU(LEAK),
            nn.Linear(flat // 8, flat // 4),
            nn.LeakyReLU(LEAK),
            nn.Linear(flat // 4, flat),
            nn.LeakyReLU(LEAK),
        )
        outs = cfg.block_channels()
        ins = [c0, *outs[:-1]]
        # one linear layer per AdaIN layer: class code → (scale, bias) for its channels
        self.modulation = nn.ModuleList(nn.Linear(cfg.class_dim, 2 * c) for c in outs)
        self.blocks = nn.ModuleList(UpBlock(cin, cout) for cin, cout in zip(ins, outs, strict=True))
        if cfg.arch == "tapered":
            head = [nn.Conv2d(outs[-1], outs[-1], 3, padding=1), nn.LeakyReLU(LEAK)]
            head.append(nn.Conv2d(outs[-1], cfg.channels, 7, padding=3))
        else:
            head = [nn.Conv2d(c0, cfg.ch(64), 5, padding=2), nn.LeakyReLU(LEAK)]
            head.append(nn.Conv2d(cfg.ch(64), cfg.channels, 7, padding=3))
        self.head = nn.Sequential(*head)

    def adain_params(self, class_code: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per AdaIN layer (scale, bias), each of shape (B, that block's channels)."""
        return [tuple(m(class_code).chunk(2, dim=1)) for m in self.modulation]  # type: ignore[misc]

    def forward(self, content_code: torch.Tensor, class_code: torch.Tensor) -> torch.Tensor:
        """Shape: content_code (B, content_dim), class_code (B, class_dim) → (B, C, S, S) in [0, 1]."""
        c0, s0 = self.cfg.ch(256), self.cfg.start_size
        x = self.fc(content_code).view(-1, c0, s0, s0)
        for block, (scale, bias) in zip(self.blocks, self.adain_params(class_code), strict=True):
            x = block(x, scale, bias)
        return torch.sigmoid(self.head(x))


class Encoder(nn.Module):
    """Stage-2 encoder (paper A.1): conv7×7 → 4 × conv4×4/2 → FC 256 → FC 256 → FC out."""

    def __init__(self, cfg: ModelConfig, out_dim: int) -> None:
        super().__init__()
        chans = [cfg.ch(c) for c in (64, 128, 256, 256, 256)]
        layers: list[nn.Module] = [
            nn.Conv2d(cfg.channels, chans[0], 7, padding=3),
            nn.LeakyReLU(LEAK),
        ]
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(LEAK)]
        self.convs = nn.Sequential(*layers)
        flat = chans[-1] * cfg.start_size**2
        self.fc = nn.Sequential(
            nn.Linear(flat, cfg.ch(256)),
            nn.LeakyReLU(LEAK),
            nn.Linear(cfg.ch(256), cfg.ch(256)),
            nn.LeakyReLU(LEAK),
            nn.Linear(cfg.ch(256), out_dim),
        )
        # Output = shift + scale * FC(...): identity unless the trainer sets the stage-1
        # codes' statistics (:meth:`standardise_output`). Not in the state dict: a bundle's
        # encoders have them folded into the last layer (:meth:`fold_output`).
        self.register_buffer("out_shift", torch.zeros(out_dim), persistent=False)
        self.register_buffer("out_scale", torch.ones(out_dim), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Shape: images (B, C, S, S) in [0, 1] → (B, out_dim)."""
        return torch.addcmul(self.out_shift, self.fc(self.convs(images).flatten(1)), self.out_scale)

    @torch.no_grad()
    def standardise_output(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Predict codes as mean + std · FC(...), std and mean per dimension (out_dim,).

        Stage-1 codes can be far larger than a freshly initialised encoder's outputs (Cars3D
        at code_lr 0.1: class codes std 2.7 per dimension); Adam moves the last layer by
        about the learning rate per step, so a plain head took hundreds of steps to even
        match their mean and never separated the classes. In these units every target
        starts at the scale the head is initialised for.
        """
        self.out_shift.copy_(mean)
        self.out_scale.copy_(std)

    @torch.no_grad()
    def fold_output(self) -> None:
        """Fold shift and scale into the last linear layer (same outputs, identity buffers)."""
        last = self.fc[-1]
        assert isinstance(last, nn.Linear)
        last.weight.mul_(self.out_scale[:, None])
        last.bias.mul_(self.out_scale).add_(self.out_shift)
        self.out_shift.zero_()
        self.out_scale.fill_(1.0)


class AmortizedModel(nn.Module):
    """The stage-2 (inference) model: encoders + generator.

    Transfer (paper §3.2): x(1←2) = G(E_c(x2), E_y(x1)).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.generator = Generator(cfg)
        self.class_encoder = Encoder(cfg, cfg.class_dim)
        self.content_encoder = Encoder(cfg, cfg.content_dim)

    def check_images(self, images: torch.Tensor) -> None:
        s, c = self.cfg.image_size, self.cfg.channels
        if images.dim() != 4 or images.shape[1:] != (c, s, s):
            raise ValueError(
                f"expected images of shape (B, {c}, {s}, {s}), got {tuple(images.shape)}"
            )

    def encode_class(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        return self.class_encoder(images)

    def encode_content(self, images: torch.Tensor) -> torch.Tensor:
        self.check_images(images)
        return self.content_encoder(images)

    def decode(self, content_code: torch.Tensor, class_code: torch.Tensor) -> torch.Tensor:
        return self.generator(content_code, class_code)

    def transfer(self, class_images: torch.Tensor, content_images: torch.Tensor) -> torch.Tensor:
        """Class of ``class_images``, content of ``content_images`` (paired batch)."""
        return self.decode(self.encode_content(content_images), self.encode_class(class_images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruction through both encoders."""
        return self.transfer(images, images)
