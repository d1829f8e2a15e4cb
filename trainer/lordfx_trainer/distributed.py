"""Training on several processes (torch.distributed): replicated networks, sharded content codes.

LORD learns one content code per training image next to a small generator. All-reducing the
whole content table every step would move N × content_dim gradients that are zero outside
the batch, so the table is sharded instead:

* Partition (fixed, recorded in every checkpoint): image i belongs to rank i mod world_size.
  A rank holds only its shard's content codes (a ``ShardedEmbedding``) and their Adam state;
  no content-code gradient crosses ranks.
* Batches: every rank computes the single-process epoch order (``loop.epoch_permutation``, a
  pure function of seed, stage and epoch) and trains on the images of each global batch that
  it owns. Its losses are weighted by its share of the batch (n_rank / B), so the sum over
  ranks is the single-process batch mean and the summed gradients are the single-process ones.
* Everything else (generator, class codes, encoders) is replicated: one explicit all-reduce
  (sum) of exactly those gradients per step, in a hook that runs before ``optimizer.step()``.
  A rank with no image in a batch still steps, with zero gradients (dense Adam moves every
  code each step, as in one process).
* Stage-1 noise: every rank draws the whole batch's noise from the seeded generator and uses
  its own rows, so the noise and the generator's state are those of one process.
* Checkpoints: the ranks gather the shards and rank 0 writes the single-process checkpoint
  (whole table, whole Adam state) atomically, so ``--resume`` works with any world size (the
  table is re-partitioned on load), including a plain one-process resume.
* Rank 0 alone writes metrics.jsonl, grids, losses.png, latent.safetensors and the bundle. Log
  rows hold the global losses, the global img/s and ``allreduce_share`` (the share of the
  wall time spent in the gradient all-reduce).

Not the same as one process: with ``class_mode = "amortized"`` (Table 3 amortized ablations)
the class code is averaged over the same-class images of each rank's part of the batch.

Launch: ``lordfx train ... --nproc N`` on this machine (``launch``), or
``torchrun --nproc-per-node N [--nnodes M ...] -m lordfx_trainer.distributed train ...``.
Backend: nccl on CUDA (one GPU per local rank), gloo on CPU. The processes (launcher, rank
entry point, signals, reporting a dead rank) are in ``lordfx_trainer.distributed_launch``;
its public names are re-exported here. See docs/training.md.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

from lordfx.errors import LordfxError, UsageError
from lordfx_trainer import loop
from lordfx_trainer.config import TrainConfig

# the processes (launcher, rank entry, torchrun entry) live in distributed_launch, which imports
# this module only inside its functions; its names stay importable from here
from lordfx_trainer.distributed_launch import (  # noqa: F401 (re-exported)
    TIMEOUT,
    WORKER,
    _check_devices,
    _free_port,
    launch,
    main,
    resume,
    start,
    under_torchrun,
    wanted,
    worker,
)
from lordfx_trainer.run import STATE_FILE, Run
from lordfx_trainer.steps import Batch

log = logging.getLogger("lordfx.trainer")
PARTITION = "image i -> rank i mod world_size"


@dataclass(frozen=True)
class Shard:
    """This process's place in the job and the images it owns (image i → rank i mod W)."""

    rank: int
    world_size: int
    num_images: int

    def __post_init__(self) -> None:
        if self.num_images < self.world_size:
            raise UsageError(
                f"{self.world_size} processes for {self.num_images} training images: "
                "every rank needs at least one image"
            )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def size(self, rank: int | None = None) -> int:
        """How many images ``rank`` (default: this one) owns."""
        r = self.rank if rank is None else rank
        return len(range(r, self.num_images, self.world_size))

    def take(self, full: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a per-image table. Shape: (N, ...) → (size(), ...)."""
        return full[self.rank :: self.world_size].clone()

    def mine(self, image_ids: torch.Tensor) -> torch.Tensor:
        """Positions in ``image_ids`` (global ids) of the images this rank owns."""
        return torch.nonzero(image_ids % self.world_size == self.rank).squeeze(1)

    def record(self) -> dict[str, Any]:
        sizes = [self.size(r) for r in range(self.world_size)]
        return {"world_size": self.world_size, "partition": PARTITION, "shard_sizes": sizes}


class ShardedEmbedding(nn.Embedding):
    """One rank's rows of a per-image embedding, looked up by *global* image id.

    It replaces the ``nn.Embedding`` of the same name, so the parameter keeps its name
    (``content_embedding.weight``), its parameter group and its state-dict key.
    Shape: rows (size, dim); ids (B,) global, all owned by this rank → (B, dim).
    """

    def __init__(self, rows: torch.Tensor, world_size: int) -> None:
        super().__init__(rows.shape[0], rows.shape[1], _weight=rows.detach().clone())
        self.world_size = world_size

    def forward(self, image_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(image_ids // self.world_size, self.weight)


def gather_rows(part: torch.Tensor, shard: Shard) -> torch.Tensor:
    """The whole per-image table from every rank's rows (a collective; result on every rank).

    Shape: part (shard.size(), ...) → (N, ...).
    """
    most = shard.size(0)  # rank 0 owns ceil(N / W) images, the most
    padded = part.new_zeros((most, *part.shape[1:]))
    padded[: part.shape[0]] = part
    parts = [torch.empty_like(padded) for _ in range(shard.world_size)]
    dist.all_gather(parts, padded)
    full = part.new_empty((shard.num_images, *part.shape[1:]))
    for r, rows in enumerate(parts):
        full[r :: shard.world_size] = rows[: shard.size(r)]
    return full


def _param_index(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> int:
    """The id ``optimizer.state_dict()`` gives ``param`` (its position over all groups)."""
    flat = [p for group in optimizer.param_groups for p in group["params"]]
    return next(i for i, p in enumerate(flat) if p is param)


def _map_state(state: dict | None, shape: torch.Size, fn: Callable) -> dict | None:
    """Adam's per-parameter state with ``fn`` applied to the tensors shaped like the codes."""
    if not state:
        return state
    return {k: fn(v) if torch.is_tensor(v) and v.shape == shape else v for k, v in state.items()}


class DistributedRun(Run):
    """A ``Run`` that is one rank of a job (see the module docstring for the scheme)."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        train: Any,
        heldout: Any,
        shard: Shard,
    ) -> None:
        self.shard = shard
        self.is_main = shard.is_main
        self._comm_s, self._comm_t0 = 0.0, time.perf_counter()
        super().__init__(cfg, run_dir, train, heldout)
        log.info(
            "rank %d of %d: %d of %d images (%s)",
            shard.rank,
            shard.world_size,
            shard.size(),
            shard.num_images,
            PARTITION,
        )

    # -- the sharded content table ---------------------------------------------------------
    def _sharded(self, module: nn.Module) -> tuple[str, nn.Parameter] | None:
        for name, m in module.named_modules():
            if isinstance(m, ShardedEmbedding):
                return f"{name}.weight", m.weight
        return None

    def _latent_spec(self) -> loop.StageSpec:
        emb = getattr(self.latent, "content_embedding", None)
        if emb is not None and not isinstance(emb, ShardedEmbedding):
            # built whole (same init as one process), then cut down to this rank's rows
            rows = self.shard.take(emb.weight.detach())
            self.latent.content_embedding = ShardedEmbedding(rows, self.shard.world_size)
        return super()._latent_spec()

    def _unshard_latent(self) -> None:
        """Stage 1 is over: every rank gets the whole table (stage-2 targets, latent file)."""
        emb = getattr(self.latent, "content_embedding", None)
        if isinstance(emb, ShardedEmbedding):
            full = gather_rows(emb.weight.detach(), self.shard)
            self.latent.content_embedding = nn.Embedding.from_pretrained(full, freeze=False)

    @contextlib.contextmanager
    def _whole_table(self) -> Iterator[None]:
        """The whole content table in the latent model for a while (for the swap grid)."""
        emb = getattr(self.latent, "content_embedding", None)
        if self.state.stage != "latent" or not isinstance(emb, ShardedEmbedding):
            yield
            return
        full = gather_rows(emb.weight.detach(), self.shard)
        self.latent.content_embedding = nn.Embedding.from_pretrained(full)
        try:
            yield
        finally:
            self.latent.content_embedding = emb

    # -- the step: this rank's part of the batch, then the gradient all-reduce -------------
    def _spec(
        self,
        name: str,
        epochs: int,
        step: Any,
        module: nn.Module,
        groups: list,
        max_grad_norm: float = 0.0,
    ) -> loop.StageSpec:
        spec = super()._spec(name, epochs, self._local_step(name, step), module, groups)
        sharded = self._sharded(module)
        own = [] if sharded is None else [sharded[1]]
        params = [p for group in spec.optimizer.param_groups for p in group["params"]]
        replicated = [p for p in params if not any(p is q for q in own)]
        if max_grad_norm > 0 and own:
            raise UsageError("gradient clipping of a sharded code table is not supported")

        def before_step(*_: Any) -> None:
            # clip the all-reduced (whole-batch) gradient, as one process would
            self._reduce(replicated, own)
            if max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)

        spec.optimizer.register_step_pre_hook(before_step)
        return spec

    def _local_step(self, name: str, step: Callable) -> Callable[[Batch], dict]:
        draw_noise = name == "latent" and self.cfg.content_noise_std > 0

        def local_step(batch: Batch) -> dict[str, torch.Tensor]:
            n = batch.image_ids.shape[0]
            noise = None
            if draw_noise:  # the whole batch's draw, as one process makes it
                shape = (n, self.cfg.content_dim)
                noise = torch.randn(shape, generator=self.noise, device=self.device)
            mine = self.shard.mine(batch.image_ids)
            if mine.numel() == 0:  # nothing of ours in this batch: zero gradients, still step
                return {"loss": torch.zeros((), device=self.device, requires_grad=True)}
            images = batch.images[mine]
            if batch.images.is_contiguous(memory_format=torch.channels_last):
                images = images.contiguous(memory_format=torch.channels_last)
            local = Batch(
                images=images,
                class_ids=batch.class_ids[mine],
                image_ids=batch.image_ids[mine],
                noise=None if noise is None else noise[mine],
            )
            share = mine.numel() / n
            return {k: v * share for k, v in step(local).items()}

        return local_step

    def _reduce(self, replicated: list[nn.Parameter], own: list[nn.Parameter]) -> None:
        """Sum the replicated gradients over ranks (one flat all-reduce); before Adam's step."""
        for p in (*replicated, *own):
            if p.grad is None:  # not in this rank's graph this step: a zero gradient
                p.grad = torch.zeros_like(p)
        t0 = time.perf_counter()
        flat = torch.cat([p.grad.reshape(-1) for p in replicated])
        dist.all_reduce(flat)
        for p, g in zip(replicated, flat.split([p.numel() for p in replicated]), strict=True):
            p.grad.copy_(g.view_as(p.grad))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._comm_s += time.perf_counter() - t0

    # -- callbacks: global numbers, rank 0 writes ------------------------------------------
    def _run(self, spec: loop.StageSpec) -> None:
        self._comm_s, self._comm_t0 = 0.0, time.perf_counter()
        super()._run(spec)

    def _on_log(self, row: dict[str, float]) -> None:
        # each rank's losses are weighted by its batch share: their sum is the batch mean
        fixed = {"stage", "epoch", "step", "lr", "images_per_s"}  # same on every rank
        names: list[Any] = [None] * self.shard.world_size
        dist.all_gather_object(names, sorted(set(row) - fixed))
        keys = sorted(set().union(*names))
        values = torch.tensor([row.get(k, 0.0) for k in keys], dtype=torch.float64)
        values = values.to(self.device)
        dist.all_reduce(values)
        row = {**row, **dict(zip(keys, values.tolist(), strict=True))}
        now = time.perf_counter()
        row["allreduce_share"] = self._comm_s / max(1e-9, now - self._comm_t0)
        self._comm_s, self._comm_t0 = 0.0, now
        if self.is_main:
            super()._on_log(row)

    def _on_step(self, step: int) -> None:
        if self.cfg.curve_every and step % self.cfg.curve_every == 0:
            with self._whole_table():  # a collective: every rank takes part
                if self.is_main:
                    self.curve_point()

    def _on_epoch_end(self, epoch: int) -> None:
        if epoch % self.cfg.grid_every != 0 and epoch != self.spec.epochs:
            return
        with self._whole_table():  # a collective: every rank takes part
            if self.is_main:
                super()._on_epoch_end(epoch)

    # -- persistence: one process's format, written by rank 0 ------------------------------
    def checkpoint(self) -> dict[str, Any]:
        ckpt = super().checkpoint()
        sharded = self._sharded(self.spec.module)
        if sharded is not None:
            name, param = sharded
            ckpt["model"] = {**ckpt["model"], name: gather_rows(param.detach(), self.shard)}
            index = _param_index(self.spec.optimizer, param)
            state = ckpt["optimizer"]["state"]
            gathered = _map_state(
                state.get(index), param.shape, lambda t: gather_rows(t, self.shard)
            )
            if gathered:
                ckpt["optimizer"] = {**ckpt["optimizer"], "state": {**state, index: gathered}}
        ckpt["distributed"] = self.shard.record()
        return ckpt

    def save_checkpoint(self) -> None:
        ckpt = self.checkpoint()  # a collective: every rank takes part
        if self.is_main:
            loop.atomic_torch_save(ckpt, self.dir / STATE_FILE)

    def load_checkpoint(self) -> None:
        path = self.dir / STATE_FILE
        ckpt = torch.load(path, map_location=self.device, weights_only=True)
        self.restore(self._localize(ckpt, path))

    def _localize(self, ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
        """This rank's rows of a checkpoint's content table and Adam state (re-partitioned)."""
        before = ckpt.get("distributed", {"world_size": 1})["world_size"]
        if before != self.shard.world_size:
            log.info(
                "%s: re-partitioning the content codes from %d to %d processes",
                path,
                before,
                self.shard.world_size,
            )
        sharded = self._sharded(self.spec.module)
        if ckpt["state"]["stage"] != "latent" or sharded is None:
            return ckpt
        name, param = sharded
        full = ckpt["model"][name]
        if full.shape[0] != self.shard.num_images:
            raise LordfxError(
                f"{path}: the checkpoint has {full.shape[0]} content codes, the training set "
                f"{self.shard.num_images} images (dataset or reader changed since training)"
            )
        model = {**ckpt["model"], name: self.shard.take(full)}
        index = _param_index(self.spec.optimizer, param)
        state = ckpt["optimizer"]["state"]
        local = _map_state(state.get(index), full.shape, self.shard.take)
        optimizer = ckpt["optimizer"]
        if local:
            optimizer = {**optimizer, "state": {**state, index: local}}
        return {**ckpt, "model": model, "optimizer": optimizer}

    def save_latent(self) -> None:
        self._unshard_latent()  # a collective
        if self.is_main:
            super().save_latent()

    def load_latent(self) -> None:
        emb = getattr(self.latent, "content_embedding", None)
        if isinstance(emb, ShardedEmbedding):  # stage 2 uses the whole table
            whole = nn.Embedding(self.shard.num_images, emb.embedding_dim, device=self.device)
            self.latent.content_embedding = whole
        super().load_latent()

    def _amortized_spec(self) -> loop.StageSpec:
        self._unshard_latent()
        return super()._amortized_spec()

    def write_bundle(self) -> Path:
        if self.is_main:
            return super().write_bundle()
        return self.dir / "bundle"


if __name__ == "__main__":
    main()
