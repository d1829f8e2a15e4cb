"""A small generic training loop: seeded epoch permutations, per-step callbacks, exact resume.

Everything that decides the next step (model, optimiser, schedule, noise RNG, epoch and
batch position) is in the checkpoint, so a run killed at any point and resumed from its
last checkpoint takes exactly the steps an uninterrupted run takes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lordfx_trainer.steps import Batch

log = logging.getLogger("lordfx.trainer")
STAGES = ("latent", "amortized")


@dataclass
class LoopState:
    stage: str = "latent"
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0  # within the stage
    elapsed_s: float = 0.0  # training time of the stage so far (for StageSpec.minutes)


class DeviceData:
    """Training images resident on the compute device as uint8, batched by indexing."""

    def __init__(
        self, images: np.ndarray, class_ids: np.ndarray, device: torch.device, channels_last: bool
    ) -> None:
        # (N, H, W, C) uint8 → (N, C, H, W) uint8 on device; 4x smaller than float32
        self.images = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(
            device
        )
        self.class_ids = torch.from_numpy(class_ids.astype(np.int64)).to(device)
        self.channels_last = channels_last
        self.device = device

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, idx: torch.Tensor) -> Batch:
        x = self.images[idx].float().div_(255)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return Batch(images=x, class_ids=self.class_ids[idx], image_ids=idx)


def epoch_permutation(n: int, seed: int, stage: str, epoch: int) -> torch.Tensor:
    """The batch order of one epoch: a pure function of (seed, stage, epoch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + STAGES.index(stage) * 10_007 + epoch)
    return torch.randperm(n, generator=g)


def make_scheduler(
    optimizer: torch.optim.Optimizer, kind: str, total_steps: int, min_lr: float
) -> torch.optim.lr_scheduler.LRScheduler:
    """Constant, or cosine per step from each group's lr down to ``min_lr`` (reference code)."""
    if kind == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    base = [g["lr"] for g in optimizer.param_groups]

    def factor(i: int) -> Callable[[int], float]:
        ratio = min_lr / base[i]
        return lambda step: (
            ratio
            + (1 - ratio)
            * 0.5
            * (1 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))
        )

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor(i) for i in range(len(base))])


def make_optimizer(groups: list[dict], device: torch.device) -> torch.optim.Adam:
    """Adam β=(0.5, 0.999) (paper A.1); foreach kernels on CPU, fused on CUDA."""
    kw: dict[str, Any] = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.Adam(groups, betas=(0.5, 0.999), **kw)


def steps_per_epoch(num_images: int, batch_size: int) -> int:
    """Batches per epoch; the last batch may be smaller (no images are dropped)."""
    return math.ceil(num_images / batch_size)


@dataclass
class StageSpec:
    """One stage to run: a step function returning named losses, and what it trains."""

    name: str
    epochs: int
    batch_size: int
    step: Callable[[Batch], dict[str, torch.Tensor]]
    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    minutes: float = 0.0  # > 0: the stage ends once it has trained this long (time budget)
    max_grad_norm: float = 0.0  # > 0: clip the global gradient norm of ``module`` per step


def run_stage(
    spec: StageSpec,
    data: DeviceData,
    state: LoopState,
    seed: int,
    autocast: Callable[[], contextlib.AbstractContextManager],
    save: Callable[[], None],
    on_log: Callable[[dict[str, float]], None],
    on_epoch_end: Callable[[int], None],
    log_every: int,
    checkpoint_every: int,
    on_step: Callable[[int], None] | None = None,
) -> None:
    """Run ``spec`` from ``state`` to the end of its epochs, checkpointing along the way.

    With ``spec.minutes`` the stage also ends at the first step boundary after that much
    training time (counted across resumes in ``state.elapsed_s``): equal wall-clock budgets
    for comparisons. Such a stop depends on the machine's speed, so it is not reproducible
    step for step; the epoch-only path stays exact.
    """
    n = len(data)
    num_steps = steps_per_epoch(n, spec.batch_size)
    sums: dict[str, torch.Tensor] = {}
    seen, t0 = 0, time.perf_counter()
    spec.module.train()
    while state.epoch < spec.epochs:
        perm = epoch_permutation(n, seed, spec.name, state.epoch).to(data.device)
        while state.step_in_epoch < num_steps:
            if spec.minutes and state.elapsed_s >= 60 * spec.minutes:
                log.info("stage %s: time budget of %g min reached at step %d (epoch %d)",
                         spec.name, spec.minutes, state.global_step, state.epoch)  # fmt: skip
                state.epoch = spec.epochs - 1  # closes below like a last epoch
                break
            step_t0 = time.perf_counter()
            b = state.step_in_epoch
            batch = data.batch(perm[b * spec.batch_size : (b + 1) * spec.batch_size])
            with autocast():
                losses = spec.step(batch)
            spec.optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            if spec.max_grad_norm > 0:  # the norm before clipping is logged as grad_norm
                norm = torch.nn.utils.clip_grad_norm_(spec.module.parameters(), spec.max_grad_norm)
                losses = {**losses, "grad_norm": norm}
            spec.optimizer.step()
            spec.scheduler.step()
            state.step_in_epoch += 1
            state.global_step += 1
            state.elapsed_s += time.perf_counter() - step_t0
            seen += batch.images.shape[0]
            for k, v in losses.items():  # stays on device: no host sync per step
                sums[k] = sums.get(k, 0) + v.detach().float()
            if state.global_step % log_every == 0:
                on_log(_summary(sums, log_every, seen, t0, state, spec))
                sums, seen, t0 = {}, 0, time.perf_counter()
            if on_step is not None:
                on_step(state.global_step)
            if state.global_step % checkpoint_every == 0:
                save()
        state.epoch += 1
        state.step_in_epoch = 0
        save()
        on_epoch_end(state.epoch)


def _summary(
    sums: dict, count: int, seen: int, t0: float, state: LoopState, spec: StageSpec
) -> dict:
    row = {k: float(v) / count for k, v in sums.items()}  # the one sync per log interval
    row.update(
        stage=spec.name,
        epoch=state.epoch,
        step=state.global_step,
        lr=spec.optimizer.param_groups[0]["lr"],
        images_per_s=seen / max(1e-9, time.perf_counter() - t0),
    )
    return row


def atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def append_jsonl(path: Path, row: dict) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def truncate_jsonl(path: Path, stage: str, step: int) -> None:
    """Drop metric rows logged after the checkpoint a resumed run restarts from."""
    if not path.exists():
        return
    order = {s: i for i, s in enumerate(STAGES)}
    keep = []
    for line in path.read_text().splitlines():
        row = json.loads(line)
        later = order[row["stage"]] > order[stage] or (row["stage"] == stage and row["step"] > step)
        if not later:
            keep.append(line)
    path.write_text("".join(k + "\n" for k in keep))
