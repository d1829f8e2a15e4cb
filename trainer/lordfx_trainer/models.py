"""The stage-1 model: generator + per-class and per-image codes (or encoders, for ablations).

Paper §3.1: every image i has a content code c_i and every class y a class code e_y,
optimised jointly with G. Table 3's amortized variants replace the latent codes by encoders
(class codes averaged within the batch over images of the same class).
"""

from __future__ import annotations

import torch
from torch import nn

from lordfx.nets import Encoder, Generator, ModelConfig

INIT_RANGE = 0.05  # embeddings init U(-0.05, 0.05) (paper A.1)


class LatentModel(nn.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        num_classes: int,
        num_images: int,
        class_mode: str = "latent",
        content_mode: str = "latent",
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.class_mode, self.content_mode = class_mode, content_mode
        self.generator = Generator(cfg)
        if class_mode == "latent":
            self.class_embedding = nn.Embedding(num_classes, cfg.class_dim)
            nn.init.uniform_(self.class_embedding.weight, -INIT_RANGE, INIT_RANGE)
        else:
            self.class_encoder = Encoder(cfg, cfg.class_dim)
        if content_mode == "latent":
            self.content_embedding = nn.Embedding(num_images, cfg.content_dim)
            nn.init.uniform_(self.content_embedding.weight, -INIT_RANGE, INIT_RANGE)
        else:
            self.content_encoder = Encoder(cfg, cfg.content_dim)
        self.num_classes = num_classes

    def class_codes(self, images: torch.Tensor, class_ids: torch.Tensor) -> torch.Tensor:
        """Shape: (B, class_dim). Amortized: E_y(x) averaged over same-class images in the batch."""
        if self.class_mode == "latent":
            return self.class_embedding(class_ids)
        codes = self.class_encoder(images).float()
        sums = torch.zeros(self.num_classes, codes.shape[1], device=codes.device)
        sums = sums.index_add(0, class_ids, codes)
        counts = torch.bincount(class_ids, minlength=self.num_classes).clamp_min(1)
        return (sums / counts[:, None])[class_ids]

    def content_codes(self, images: torch.Tensor, image_ids: torch.Tensor) -> torch.Tensor:
        """Shape: (B, content_dim), the clean (noise-free) content codes."""
        if self.content_mode == "latent":
            return self.content_embedding(image_ids)
        return self.content_encoder(images).float()

    def param_groups(
        self, generator_lr: float, code_lr: float, class_code_lr: float = 0.0
    ) -> list[dict]:
        """Generator (and encoders) at ``generator_lr``; latent codes at ``code_lr``, or the
        class codes in a group of their own at ``class_code_lr`` when it is > 0 (a class code
        gets one update per batch that holds its class: with few images per class, far fewer
        than with many)."""
        nets, codes, class_codes = [], [], []
        for name, p in self.named_parameters():
            if name == "class_embedding.weight" and class_code_lr > 0:
                class_codes.append(p)
            else:
                (codes if name.endswith("_embedding.weight") else nets).append(p)
        groups = [{"params": nets, "lr": generator_lr, "name": "networks"}]
        if codes:
            groups.append({"params": codes, "lr": code_lr, "name": "codes"})
        if class_codes:
            groups.append({"params": class_codes, "lr": class_code_lr, "name": "class codes"})
        return groups
