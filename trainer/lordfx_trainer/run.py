"""A training run: data → stage 1 (latent) → stage 2 (amortized) → bundle, resumable.

Run directory:
    config.json        resolved TrainConfig + data provenance (split seed, held-out classes)
    trainer_state.pt   latest checkpoint (model, optimiser, schedule, RNG, position)
    latent.safetensors stage-1 result (generator + codes), written when stage 1 ends
    metrics.jsonl      one row per log interval; losses.png; *_grid_*.png swap grids
    curve.jsonl        quality over training time (curve_every > 0; lordfx_trainer.curve), curve.png
    bundle/            the trained model (lordfx.bundle format)
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lordfx import precision as precision_policy
from lordfx.bundle import save_bundle
from lordfx.errors import LordfxError, UsageError
from lordfx.nets import AmortizedModel
from lordfx.precision import Precision
from lordfx_trainer import loop
from lordfx_trainer.config import TrainConfig
from lordfx_trainer.curve import TrainingCurve
from lordfx_trainer.data.base import ImageDataset
from lordfx_trainer.grids import (
    pick_grid_indices,
    plot_curve,
    plot_losses,
    save_grid,
    swap_grid,
)
from lordfx_trainer.models import LatentModel
from lordfx_trainer.steps import (
    STALLED_SATURATION,
    amortized_step,
    group_mean_targets,
    handoff,
    latent_step,
    stage1_targets,
)

log = logging.getLogger("lordfx.trainer")
STATE_FILE = "trainer_state.pt"
GRID_SIZE = 8


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_precision(cfg: TrainConfig, device: torch.device) -> Precision:
    """The run's precision and memory format (``lordfx.precision``: "auto" decides per machine)."""
    choice = precision_policy.resolve(cfg.precision, device, cfg.memory_format)
    log.info("precision %s, %s: %s", choice.dtype,
             "channels_last" if choice.channels_last else "contiguous", choice.reason)  # fmt: skip
    return choice


def record_precision(run_dir: Path, choice: Precision) -> None:
    """Write the resolved precision (and why) into config.json's "run" section; a resume that
    resolves differently (another machine) keeps the earlier choices under "precision_history"."""
    path = run_dir / "config.json"
    if not path.is_file():
        return
    data = json.loads(path.read_text())
    run = data.setdefault("run", {})
    now = choice.to_dict()
    if run.get("precision") not in (None, now):
        run.setdefault("precision_history", []).append(run["precision"])
        log.warning("%s: precision now %s (was %s)", run_dir, now, run["precision"])
    run["precision"] = now
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def stall_warning(row: dict[str, float], lr_key: str, lr: float) -> str | None:
    """The one-line warning for a log row whose generator output is saturated, else None."""
    share = row.get("saturated", 0.0)
    if share < STALLED_SATURATION:
        return None
    return (
        f"stage {row['stage']} step {row['step']}: {share:.1%} of generator output pixels are "
        "saturated (sigmoid at 0 or 1, no gradient): training has stalled; restart with a "
        f"lower learning rate, e.g. --set {lr_key}={lr / 3:.1e}"
    )


class StallGuard:
    """Stops a stage whose generator output has stayed saturated for ``steps`` steps.

    ``check`` takes each log row with its :func:`stall_warning` (None = healthy); a healthy
    row resets the count. ``steps = 0`` never stops (the warning is still logged).
    """

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.since: dict[str, int] = {}  # stage → first step of the current stalled stretch

    def check(self, row: dict[str, float], warning: str | None) -> None:
        stage, step = str(row["stage"]), int(row["step"])
        if warning is None:
            self.since.pop(stage, None)
            return
        stalled = step - self.since.setdefault(stage, step)
        if self.steps > 0 and stalled >= self.steps:
            raise LordfxError(
                f"{warning}; stopped after {stalled} stalled steps (stall_stop_steps = "
                f"{self.steps}; 0 only warns)"
            )


class Run:
    """Owns the run directory, the data on the device and both stages."""

    is_main = True  # False on the ranks of a distributed job that do not write (distributed.py)

    def __init__(
        self, cfg: TrainConfig, run_dir: Path, train: ImageDataset, heldout: ImageDataset | None
    ) -> None:
        self.cfg, self.dir = cfg, Path(run_dir)
        self.train_set, self.heldout = train, heldout
        self.device = resolve_device(cfg.device)
        self.precision = resolve_precision(cfg, self.device)
        if self.is_main:
            record_precision(self.dir, self.precision)
        if cfg.content_target_group:  # fail now, not after stage 1
            content_factor(train, cfg.content_target_group)
        self.data = loop.DeviceData(
            train.images, train.class_ids, self.device, self.precision.channels_last
        )
        self.state = loop.LoopState()
        self._stall_warned: set[str] = set()
        self._stall_guard = StallGuard(cfg.stall_stop_steps)
        self.noise = torch.Generator(device=self.device).manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        from lordfx_trainer.losses import build_loss

        self.loss_fn = build_loss(
            cfg.loss, allow_random_weights=cfg.allow_random_weights, vgg_layers=cfg.vgg_layers
        )
        self.loss_fn.to(self.device)
        self.latent = LatentModel(
            cfg.model_config(),
            train.num_classes,
            train.num_images,
            cfg.class_mode,
            cfg.content_mode,
        ).to(self.device)
        self.amortized: AmortizedModel | None = None
        self.spec = self._latent_spec()
        self.curve = (
            TrainingCurve(self.dir, train, heldout, self.device) if cfg.curve_every else None
        )

    # -- stages ----------------------------------------------------------------------------
    def _memory_format(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(memory_format=self.precision.memory_format)

    def _spec(
        self,
        name: str,
        epochs: int,
        step: Any,
        module: torch.nn.Module,
        groups: list,
        max_grad_norm: float = 0.0,
    ) -> loop.StageSpec:
        """A stage with its Adam and learning-rate schedule over all of its steps."""
        cfg = self.cfg
        opt = loop.make_optimizer(groups, self.device)
        total = epochs * loop.steps_per_epoch(len(self.data), cfg.batch_size)
        return loop.StageSpec(
            name=name,
            epochs=epochs,
            batch_size=cfg.batch_size,
            step=step,
            module=module,
            optimizer=opt,
            scheduler=loop.make_scheduler(opt, cfg.schedule, total, cfg.min_lr),
            minutes=cfg.minutes_for(name),
            max_grad_norm=max_grad_norm,
        )

    def _latent_spec(self) -> loop.StageSpec:
        cfg = self.cfg
        self._memory_format(self.latent)
        return self._spec(
            "latent",
            cfg.latent_epochs,
            lambda b: latent_step(
                self.latent,
                b,
                self.loss_fn,
                cfg.content_noise_std,
                cfg.content_decay,
                cfg.content_decay_on,
                self.noise,
            ),
            self.latent,
            self.latent.param_groups(cfg.generator_lr, cfg.code_lr, cfg.class_code_lr),
        )

    def _amortized_spec(self) -> loop.StageSpec:
        cfg = self.cfg
        torch.manual_seed(cfg.seed + 1)  # encoder init independent of how stage 1 ran
        self.amortized = AmortizedModel(cfg.model_config()).to(self.device)
        handoff(self.latent, self.amortized)
        self._memory_format(self.amortized)
        self.class_targets, self.content_targets = stage1_targets(
            self.latent, self.data.images, self.data.class_ids, cfg.batch_size
        )
        if cfg.content_target_group:
            k = content_factor(self.train_set, cfg.content_target_group)
            self.content_targets = group_mean_targets(
                self.content_targets, self.train_set.content_labels[:, k]
            )
        if cfg.encoder_standardise:
            for encoder, targets, fresh in (
                (self.amortized.class_encoder, self.class_targets, cfg.class_mode == "latent"),
                (
                    self.amortized.content_encoder,
                    self.content_targets,
                    cfg.content_mode == "latent",
                ),
            ):
                if fresh:  # an encoder handed over from an amortized stage 1 already fits
                    encoder.standardise_output(targets.mean(0), targets.std(0).clamp_min(1e-3))
        groups = [
            {"params": self.amortized.generator.parameters(), "lr": cfg.amortized_generator_lr},
            {
                "params": [
                    *self.amortized.class_encoder.parameters(),
                    *self.amortized.content_encoder.parameters(),
                ],
                "lr": cfg.encoder_lr,
            },
        ]
        return self._spec(
            "amortized",
            cfg.amortized_epochs,
            lambda b: amortized_step(
                self.amortized,  # type: ignore[arg-type]
                b,
                self.loss_fn,
                self.class_targets,
                self.content_targets,
                cfg.class_code_weight,
                cfg.content_code_weight,
                self.noise if cfg.encoder_augment else None,  # unused in stage 2 otherwise
            ),
            self.amortized,
            groups,
            max_grad_norm=cfg.amortized_grad_clip,
        )

    def start_stage2_from(self, latent_file: Path) -> None:
        """Skip stage 1: take another run's stage-1 model (``latent.safetensors``, same data
        and stage-1 config, checked by :func:`lordfx_trainer.train.start_run`) and begin stage 2
        at step 0, checkpointed, so ``--resume`` works as for any run."""
        shutil.copyfile(latent_file, self.dir / "latent.safetensors")
        self.load_latent()
        self.state = loop.LoopState(stage="amortized")
        if self.cfg.amortized_epochs > 0:
            self.spec = self._amortized_spec()
            self.save_checkpoint()

    def autocast(self) -> contextlib.AbstractContextManager:
        return self.precision.autocast(self.device.type)

    def fit(self) -> Path | None:
        """Run (or continue) both stages and write the bundle; returns its path.

        With ``amortized_epochs = 0`` (Table 3 "w/o stage 2") there are no encoders: the
        result is ``latent.safetensors`` and no bundle is written (returns ``None``).
        """
        if self.state.stage == "latent":
            self._run(self.spec)
            self.save_latent()
            self.state = loop.LoopState(stage="amortized")
            if self.cfg.amortized_epochs > 0:
                self.spec = self._amortized_spec()
                self.save_checkpoint()
        if self.state.stage == "amortized" and self.cfg.amortized_epochs > 0:
            self._run(self.spec)
        if self.is_main:
            plot_losses(self.dir / "metrics.jsonl", self.dir / "losses.png")
        if self.cfg.amortized_epochs == 0:
            log.info("no stage 2 (amortized_epochs = 0): stage-1 model in latent.safetensors")
            return None
        return self.write_bundle()

    def _run(self, spec: loop.StageSpec) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        log.info("stage %s: %d epochs of %d images", spec.name, spec.epochs, len(self.data))
        total = spec.epochs * loop.steps_per_epoch(len(self.data), spec.batch_size)
        columns = [TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn()]
        console = Console(stderr=True)
        with Progress(*columns, console=console, transient=True, disable=not self.is_main) as bar:
            self._progress = (
                bar,
                bar.add_task(spec.name, total=total, completed=self.state.global_step),
            )
            loop.run_stage(
                spec,
                self.data,
                self.state,
                self.cfg.seed,
                self.autocast,
                self.save_checkpoint,
                self._on_log,
                self._on_epoch_end,
                self.cfg.log_every,
                self.cfg.checkpoint_every,
                self._on_step,
            )

    # -- callbacks --------------------------------------------------------------------------
    def _on_log(self, row: dict[str, float]) -> None:
        loop.append_jsonl(self.dir / "metrics.jsonl", row)
        key = "generator_lr" if row["stage"] == "latent" else "encoder_lr"
        warning = stall_warning(row, key, getattr(self.cfg, key))
        if warning and row["stage"] not in self._stall_warned:
            self._stall_warned.add(row["stage"])
            log.warning("%s: %s", self.dir, warning)
        self._stall_guard.check(row, f"{self.dir}: {warning}" if warning else None)
        bar, task = self._progress
        text = f"{row['stage']} loss {row['loss']:.4f} {row['images_per_s']:.0f} img/s"
        bar.update(task, completed=row["step"], description=text)
        log.info(
            "%s epoch %d step %d loss %.4f (%.1f img/s)",
            row["stage"],
            row["epoch"],
            row["step"],
            row["loss"],
            row["images_per_s"],
        )

    def _on_epoch_end(self, epoch: int) -> None:
        if epoch % self.cfg.grid_every == 0 or epoch == self.spec.epochs:
            self.write_grid(epoch)
            plot_losses(self.dir / "metrics.jsonl", self.dir / "losses.png")
        every = self.cfg.curve_every
        if epoch == self.spec.epochs and every and self.state.global_step % every:
            self.curve_point()  # every stage ends with a point

    def _on_step(self, step: int) -> None:
        if self.cfg.curve_every and step % self.cfg.curve_every == 0:
            self.curve_point()

    def curve_point(self) -> dict | None:
        """One row of curve.jsonl for the model as it is now (lordfx_trainer.curve)."""
        if self.curve is None or not self.is_main:
            return None
        if self.state.stage == "latent":
            row = self.curve.latent_point(self.latent, self.state, self.autocast)
        else:
            row = self.curve.amortized_point(self.amortized, self.state, self.autocast)
        plot_curve(self.curve.path, self.dir / "curve.png")
        return row

    @torch.no_grad()
    def write_grid(self, epoch: int) -> Path:
        stage = self.state.stage
        if stage == "latent":
            idx = torch.from_numpy(pick_grid_indices(self.train_set.class_ids, GRID_SIZE, 0))
            idx = idx.to(self.device)
            images = self.data.batch(idx).images.float()
            model = self.latent
            model.eval()

            def transfer(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
                x_rows, x_cols = self.data.batch(rows).images, self.data.batch(cols).images
                return model.generator(
                    model.content_codes(x_cols, cols),
                    model.class_codes(x_rows, self.data.class_ids[rows]),
                )

            grid = swap_grid(transfer, idx, idx, images, images)
        else:
            images = self.grid_images()
            model = self.amortized  # type: ignore[assignment]
            model.eval()
            grid = swap_grid(model.transfer, images, images, images, images)  # type: ignore[union-attr]
        model.train()
        return save_grid(grid, self.dir / f"{stage}_grid_e{epoch:03d}.png", scale=2)

    def grid_images(self) -> torch.Tensor:
        """Held-out images (unseen classes) when there are any, else training images."""
        source = (
            self.heldout
            if self.heldout is not None and self.heldout.num_classes > 1
            else self.train_set
        )
        idx = pick_grid_indices(source.class_ids, GRID_SIZE, 1)
        x = torch.from_numpy(source.images[idx].transpose(0, 3, 1, 2).copy()).to(self.device)
        return x.float() / 255

    # -- persistence ------------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        """Everything that decides the next step (what ``trainer_state.pt`` holds)."""
        return {
            "state": asdict(self.state),
            "optimizer": self.spec.optimizer.state_dict(),
            "scheduler": self.spec.scheduler.state_dict(),
            "noise_rng": self.noise.get_state(),
            "model": self.spec.module.state_dict(),
        }

    def save_checkpoint(self) -> None:
        loop.atomic_torch_save(self.checkpoint(), self.dir / STATE_FILE)

    def load_checkpoint(self) -> None:
        path = self.dir / STATE_FILE
        self.restore(torch.load(path, map_location=self.device, weights_only=True))

    def restore(self, ckpt: dict[str, Any]) -> None:
        state = loop.LoopState(**ckpt["state"])
        if state.stage == "amortized":
            self.load_latent()
            self.spec = self._amortized_spec()
        self.state = state
        self.spec.module.load_state_dict(ckpt["model"], strict=True)
        self.spec.optimizer.load_state_dict(ckpt["optimizer"])
        self.spec.scheduler.load_state_dict(ckpt["scheduler"])
        self.noise.set_state(
            ckpt["noise_rng"].cpu() if self.device.type == "cpu" else ckpt["noise_rng"]
        )
        if self.is_main:
            loop.truncate_jsonl(self.dir / "metrics.jsonl", state.stage, state.global_step)
            if self.curve is not None:
                self.curve.truncate(state.stage, state.global_step)
        log.info(
            "resumed %s at stage %s, epoch %d, step %d",
            self.dir,
            state.stage,
            state.epoch,
            state.global_step,
        )

    def save_latent(self) -> None:
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.latent.state_dict().items()}
        save_file(tensors, str(self.dir / "latent.safetensors"))

    def load_latent(self) -> None:
        state = load_file(str(self.dir / "latent.safetensors"), device=str(self.device))
        self.latent.load_state_dict(state, strict=True)

    def write_bundle(self) -> Path:
        info = {
            "class_names": list(self.train_set.class_names),
            "training": {"config": self.cfg.to_dict(), "ablation": self.cfg.ablation},
            "data": self.train_set.meta | {"dataset": self.train_set.name},
        }
        data_path = read_run_config(self.dir)[1].get("data_path")
        if data_path:  # re-creates the held-out split once the run directory is gone
            info["training"]["data_path"] = data_path
        exported = copy.deepcopy(self.amortized)
        for encoder in (exported.class_encoder, exported.content_encoder):
            encoder.fold_output()  # the bundle's encoders are plain (lordfx.nets.Encoder)
        path = save_bundle(
            self.dir / "bundle",
            exported,
            info,  # type: ignore[arg-type]
            class_codes=self.class_targets,
            overwrite=True,
        )
        if self.train_set.content_labels is not None:  # known views (Cars3D): name them
            from lordfx_trainer.view_bank import write_run_view_bank

            write_run_view_bank(
                path, self.train_set, self.content_targets, self.amortized, self.data.images
            )
        return path


def content_factor(ds: ImageDataset, name: str) -> int:
    """The column of content factor ``name`` in ``ds.content_labels``, or a UsageError."""
    if ds.content_labels is None or name not in ds.content_names:
        known = ", ".join(ds.content_names) or "none"
        raise UsageError(
            f"content_target_group {name!r}: not a content factor of dataset {ds.name!r} "
            f"(its factors: {known})"
        )
    return ds.content_names.index(name)


def write_run_config(run_dir: Path, cfg: TrainConfig, extra: dict[str, Any]) -> None:
    (run_dir / "config.json").write_text(
        json.dumps({**cfg.to_dict(), "run": extra}, indent=2) + "\n"
    )


def read_run_config(run_dir: Path) -> tuple[TrainConfig, dict[str, Any]]:
    data = json.loads((run_dir / "config.json").read_text())
    extra = data.pop("run", {})
    return TrainConfig.from_dict(data, source=str(run_dir / "config.json")), extra
