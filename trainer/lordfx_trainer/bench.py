"""``lordfx bench PRESET``: training images/s per stage and transfer latency, measured with
the same step functions training uses, on synthetic data of the preset's shape.

Each number is the median over ``steps`` timed steps after ``warmup`` untimed ones.
"""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from lordfx.nets import AmortizedModel
from lordfx_trainer.config import TrainConfig
from lordfx_trainer.loop import DeviceData, make_optimizer
from lordfx_trainer.models import LatentModel
from lordfx_trainer.steps import amortized_step, latent_step


def _timed(fn: Any, warmup: int, steps: int, device: torch.device) -> float:
    """Median seconds per call of ``fn``."""
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _train_step(
    module: torch.nn.Module, opt: torch.optim.Optimizer, losses_fn: Any, autocast: Any
) -> Any:
    def step() -> None:
        with autocast():
            losses = losses_fn()
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        opt.step()

    return step


def bench(
    cfg: TrainConfig, steps: int = 5, warmup: int = 2, num_images: int = 512
) -> dict[str, Any]:
    """Images/s of stage 1 and stage 2 training steps and transfer latency for ``cfg``."""
    from lordfx_trainer.losses import build_loss
    from lordfx_trainer.run import resolve_device

    device = resolve_device(cfg.device)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    s, c, b = cfg.image_size, cfg.channels, cfg.batch_size
    images = rng.integers(0, 256, (num_images, s, s, c), dtype=np.uint8)
    data = DeviceData(images, np.arange(num_images) % 16, device, cfg.channels_last)
    loss_fn = build_loss(cfg.loss, allow_random_weights=True).to(device)  # speed only
    if cfg.precision == "bf16":
        autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = contextlib.nullcontext
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    batch = data.batch(torch.arange(b, device=device) % num_images)
    latent = LatentModel(cfg.model_config(), 16, num_images).to(device, memory_format=fmt)
    opt = make_optimizer(latent.param_groups(cfg.generator_lr, cfg.code_lr), device)
    step1 = _train_step(
        latent, opt, lambda: latent_step(latent, batch, loss_fn, 1.0, 1e-3, "clean"), autocast
    )
    amortized = AmortizedModel(cfg.model_config()).to(device, memory_format=fmt)
    opt2 = make_optimizer([{"params": amortized.parameters(), "lr": 1e-4}], device)
    t_class, t_content = (
        torch.zeros(16, cfg.class_dim, device=device),
        torch.zeros(num_images, cfg.content_dim, device=device),
    )
    step2 = _train_step(
        amortized,
        opt2,
        lambda: amortized_step(amortized, batch, loss_fn, t_class, t_content, 10.0, 10.0),
        autocast,
    )
    result: dict[str, Any] = {
        "config": {
            k: getattr(cfg, k)
            for k in (
                "image_size",
                "channels",
                "width",
                "batch_size",
                "loss",
                "precision",
                "channels_last",
            )
        }
    }
    result["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result["latent_images_per_s"] = b / _timed(step1, warmup, steps, device)
    result["amortized_images_per_s"] = b / _timed(step2, warmup, steps, device)
    amortized.eval()
    for n in (1, 64):
        x = data.batch(torch.arange(n, device=device) % num_images).images

        def infer(x: torch.Tensor = x) -> None:
            with torch.inference_mode(), autocast():
                amortized.transfer(x, x)

        sec = _timed(infer, warmup, steps, device)
        result[f"transfer_batch{n}_ms"] = 1000 * sec
        result[f"transfer_batch{n}_images_per_s"] = n / sec
    if device.type == "cuda":
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        result["peak_memory_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def with_overrides(cfg: TrainConfig, **kw: Any) -> TrainConfig:
    return replace(cfg, **{k: v for k, v in kw.items() if v is not None})
