"""Per-stage training steps: each takes a batch and returns a dict of named losses (plus
"saturated", the share of stuck sigmoid outputs, logged beside them; only "loss" is optimised).

Stage 1 (paper Eq. 3-4): L = ℓ(G(c_i + n, e_y), x_i) + λ‖c_i‖², n ~ N(0, σ²I).
Stage 2 (paper Eq. 5):   L = ℓ(G(E_c(x), E_y(x)), x) + α1‖E_y(x) − e_y‖² + α2‖E_c(x) − c‖²,
with e_y, c the noise-free stage-1 codes. ‖·‖² is summed over code dimensions and averaged
over the batch for the decay; the code regressions are mean squared errors per element.
With ``content_target_group`` set, c is the mean stage-1 code of the image's group
(:func:`group_mean_targets`) instead of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lordfx.nets import AmortizedModel
from lordfx_trainer.models import LatentModel


@dataclass
class Batch:
    """Shape: images (B, C, H, W) float in [0, 1]; ids (B,) int64; noise (B, content_dim).

    ``noise``: a pre-drawn stage-1 noise draw; a distributed rank passes its rows of the whole
    global batch's draw so that every rank sees the single-process noise (lordfx_trainer.distributed).
    """

    images: torch.Tensor
    class_ids: torch.Tensor
    image_ids: torch.Tensor
    noise: torch.Tensor | None = None


SATURATION_EPS = 1e-4  # sigmoid output this close to 0 or 1: gradient < 1e-4, pixel is stuck
STALLED_SATURATION = 0.999  # share of saturated output pixels that means training has died


@torch.no_grad()
def saturated_fraction(images: torch.Tensor) -> torch.Tensor:
    """Share of generator output values within SATURATION_EPS of 0 or 1 (a 0-d tensor).

    A healthy model saturates some background pixels; when (nearly) all of them are, the
    sigmoid passes no gradient and training has stalled (seen with the fully amortized
    ablation at generator_lr 1e-3). In bf16 every output above ~0.998 rounds to 1.0 and counts.
    """
    x = images.float()  # no_grad: nothing here joins the graph
    return ((x < SATURATION_EPS) | (x > 1 - SATURATION_EPS)).float().mean()


def latent_step(
    model: LatentModel,
    batch: Batch,
    loss_fn: nn.Module,
    noise_std: float,
    decay: float,
    decay_on: str,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Stage-1 losses for one batch (noise is drawn from ``generator`` for exact resume)."""
    content = model.content_codes(batch.images, batch.image_ids)
    class_code = model.class_codes(batch.images, batch.class_ids)
    noisy = content
    if noise_std > 0:
        noise = batch.noise
        if noise is None:
            noise = torch.randn(content.shape, generator=generator, device=content.device)
        noisy = content + noise_std * noise
    recon = model.generator(noisy, class_code)
    reconstruction = loss_fn(recon.float(), batch.images)
    decayed = content if decay_on == "clean" else noisy
    decay_loss = decayed.float().pow(2).sum(dim=1).mean()
    total = reconstruction + decay * decay_loss
    return {
        "loss": total,
        "reconstruction": reconstruction,
        "content_decay": decay_loss,
        "saturated": saturated_fraction(recon),
    }


def augment_images(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per image: a horizontal flip (p = ½), an integer shift of up to 6 % of the side with
    the border replicated, brightness and contrast each scaled by a factor in [0.9, 1.1].

    Shape: (B, C, S, S) float in [0, 1] → the same, a new tensor; draws from ``gen`` only.
    """
    b, _, size, _ = images.shape
    dev = gen.device
    flip = torch.rand(b, generator=gen, device=dev) < 0.5
    reach = max(1, round(0.06 * size))
    shifts = torch.randint(-reach, reach + 1, (b, 2), generator=gen, device=dev).tolist()
    gain = 0.9 + 0.2 * torch.rand(b, 2, generator=gen, device=dev).to(images.device)
    x = torch.where(flip.to(images.device)[:, None, None, None], images.flip(-1), images)
    padded = F.pad(x, (reach, reach, reach, reach), mode="replicate")
    x = torch.stack(
        [
            p[:, reach + dy : reach + dy + size, reach + dx : reach + dx + size]
            for p, (dy, dx) in zip(padded, shifts, strict=True)
        ]
    )
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * gain[:, 1, None, None, None] + mean * gain[:, 0, None, None, None]
    return x.clamp(0.0, 1.0)


def amortized_step(
    model: AmortizedModel,
    batch: Batch,
    loss_fn: nn.Module,
    class_targets: torch.Tensor,
    content_targets: torch.Tensor,
    class_weight: float,
    content_weight: float,
    augment: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Stage-2 losses; targets are indexed by class id / image id. ``augment``: a generator
    to draw :func:`augment_images` from (the encoders see and G reconstructs the augmented
    images; the code targets stay those of the originals)."""
    images = batch.images if augment is None else augment_images(batch.images, augment)
    class_code = model.class_encoder(images).float()
    content = model.content_encoder(images).float()
    recon = model.generator(content, class_code)
    reconstruction = loss_fn(recon.float(), images)
    class_reg = F.mse_loss(class_code, class_targets[batch.class_ids])
    content_reg = F.mse_loss(content, content_targets[batch.image_ids])
    total = reconstruction + class_weight * class_reg + content_weight * content_reg
    return {
        "loss": total,
        "reconstruction": reconstruction,
        "class_code": class_reg,
        "content_code": content_reg,
        "saturated": saturated_fraction(recon),
    }


def handoff(latent: LatentModel, amortized: AmortizedModel) -> None:
    """Stage 1 → 2: copy the generator (incl. AdaIN modulation) strictly (DESIGN §8.7).

    For amortized stage-1 variants the encoders are copied too, so stage 2 starts from them.
    """
    amortized.generator.load_state_dict(latent.generator.state_dict(), strict=True)
    if latent.class_mode == "amortized":
        amortized.class_encoder.load_state_dict(latent.class_encoder.state_dict(), strict=True)
    if latent.content_mode == "amortized":
        amortized.content_encoder.load_state_dict(latent.content_encoder.state_dict(), strict=True)


@torch.no_grad()
def stage1_targets(
    latent: LatentModel, images: torch.Tensor, class_ids: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise-free stage-1 codes: (num_classes, class_dim) and (num_images, content_dim).

    Shape: images uint8 (N, C, H, W) on the compute device.
    """
    if latent.class_mode == "latent" and latent.content_mode == "latent":
        return (
            latent.class_embedding.weight.detach().clone(),
            latent.content_embedding.weight.detach().clone(),
        )
    n = images.shape[0]
    content = torch.zeros(n, latent.cfg.content_dim, device=images.device)
    class_sum = torch.zeros(latent.num_classes, latent.cfg.class_dim, device=images.device)
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size), device=images.device)
        x = images[idx].float() / 255
        content[idx] = latent.content_codes(x, idx)
        if latent.class_mode == "amortized":
            class_sum.index_add_(0, class_ids[idx], latent.class_encoder(x).float())
    if latent.class_mode == "latent":
        return latent.class_embedding.weight.detach().clone(), content
    counts = torch.bincount(class_ids, minlength=latent.num_classes).clamp_min(1)
    return class_sum / counts[:, None], content


def group_mean_targets(codes: torch.Tensor, groups: np.ndarray) -> torch.Tensor:
    """Each row replaced by the mean of the rows in its group (e.g. all photos of one
    performer, whatever expression each shows).

    Shape: codes (N, D), groups (N,) int → (N, D) float32 on ``codes``' device.
    """
    from lordfx_trainer.view_bank import mean_codes

    groups = np.asarray(groups).reshape(-1, 1)
    means = mean_codes(codes, groups)  # rows in np.unique order
    _, inverse = np.unique(groups, axis=0, return_inverse=True)
    index = torch.from_numpy(inverse.reshape(-1).astype(np.int64))
    return means["codes"][index].to(codes.device)


def optimize_codes(
    generator: nn.Module,
    images: torch.Tensor,
    loss_fn: nn.Module,
    content_dim: int,
    class_dim: int,
    steps: int = 200,
    lr: float = 1e-2,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Table 3 "w/o stage 2": fit a class and a content code to each new image by latent
    optimisation with the generator frozen (one code pair per image).

    Shape: images (B, C, H, W) in [0, 1] → class codes (B, class_dim), content codes
    (B, content_dim), and the loss after every step.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    n = images.shape[0]
    content = ((torch.rand(n, content_dim, generator=g) - 0.5) * 0.1).to(images.device)
    class_code = ((torch.rand(n, class_dim, generator=g) - 0.5) * 0.1).to(images.device)
    content.requires_grad_(True)
    class_code.requires_grad_(True)
    frozen = [p.requires_grad for p in generator.parameters()]
    generator.requires_grad_(False)
    opt = torch.optim.Adam([content, class_code], lr=lr, betas=(0.5, 0.999))
    history = []
    try:
        for _ in range(steps):
            loss = loss_fn(generator(content, class_code), images)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
    finally:
        for p, flag in zip(generator.parameters(), frozen, strict=True):
            p.requires_grad_(flag)
    return class_code.detach(), content.detach(), history
