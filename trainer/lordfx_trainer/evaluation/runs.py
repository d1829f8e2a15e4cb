"""A finished run, re-opened for evaluation: its config, its data split and both models.

The data are re-created with :func:`lordfx_trainer.train.prepare_data` from the run's own
config.json, and the held-out class names are checked against the ones recorded at training
time, so an evaluation can never silently score a different split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from lordfx.errors import LordfxError
from lordfx.nets import AmortizedModel
from lordfx_trainer.config import TrainConfig
from lordfx_trainer.data.base import ImageDataset
from lordfx_trainer.models import LatentModel

log = logging.getLogger("lordfx.eval")


@dataclass
class LoadedRun:
    """A run directory with its data and models on ``device`` (eval mode, frozen)."""

    dir: Path
    cfg: TrainConfig
    extra: dict[str, Any]
    train: ImageDataset
    heldout: ImageDataset | None
    latent: LatentModel
    amortized: AmortizedModel | None
    device: torch.device

    @property
    def generator(self) -> nn.Module:
        """The generator used for transfer: stage 2's fine-tuned one when there is one."""
        return self.amortized.generator if self.amortized is not None else self.latent.generator


@dataclass
class Codes:
    """Class and content codes of a set of images, and how they were obtained.

    Shape: class_codes (N, class_dim), content_codes (N, content_dim), on the run's device.
    """

    class_codes: torch.Tensor
    content_codes: torch.Tensor
    source: str


def read_config(run_dir: Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The run's TrainConfig and its ``run`` provenance; a clear error if it is no run."""
    from lordfx_trainer.run import read_run_config

    if not (run_dir / "config.json").is_file():
        raise LordfxError(f"{run_dir}: not a lordfx run directory (no config.json)")
    try:
        return read_run_config(run_dir)
    except (ValueError, KeyError) as exc:
        raise LordfxError(f"{run_dir / 'config.json'}: unreadable run config ({exc})") from None


def load_run(run_dir: Path, device: str = "auto") -> LoadedRun:
    """Open ``run_dir`` (written by ``lordfx train``) for evaluation.

    ``device`` "auto" picks CUDA when available; the run's own device setting is not used
    because evaluation often happens on another machine than training.
    """
    from lordfx.bundle import load_bundle
    from lordfx_trainer.run import resolve_device
    from lordfx_trainer.train import check_split, prepare_data

    run_dir = Path(run_dir)
    cfg, extra = read_config(run_dir)
    latent_file = run_dir / "latent.safetensors"
    if not latent_file.is_file():
        raise LordfxError(
            f"{run_dir}: stage 1 has not finished (no latent.safetensors); "
            f"continue it with `lordfx train --resume {run_dir}`"
        )
    data_path = Path(extra["data_path"]) if extra.get("data_path") else None
    train, heldout = prepare_data(cfg, data_path)
    check_split(run_dir, extra, train, heldout)
    dev = resolve_device(device)
    latent = LatentModel(
        cfg.model_config(), train.num_classes, train.num_images, cfg.class_mode, cfg.content_mode
    )
    try:
        latent.load_state_dict(load_file(str(latent_file)), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise LordfxError(f"{latent_file}: does not match the re-created data ({first})") from None
    latent.to(dev).eval().requires_grad_(False)
    amortized = None
    if cfg.amortized_epochs > 0:
        if not (run_dir / "bundle").is_dir():
            raise LordfxError(
                f"{run_dir}: stage 2 has not finished (no bundle/); "
                f"continue it with `lordfx train --resume {run_dir}`"
            )
        amortized = load_bundle(run_dir / "bundle", device=dev).model
    return LoadedRun(run_dir, cfg, extra, train, heldout, latent, amortized, dev)


def bundle_training(
    bundle_dir: Path, data: Path | None = None
) -> tuple[TrainConfig, Path, list[str] | None]:
    """What a bundle records of the run it came from: the training config, the data path
    (the run's ``--data``, or for bundles written before that was recorded the reader's
    ``source``; ``data`` overrides both) and the held-out class names (None if unrecorded).
    For evaluating a bundle whose run directory is gone."""
    from lordfx.bundle import read_bundle_config
    from lordfx_trainer.config import upgrade_legacy

    info = read_bundle_config(Path(bundle_dir))
    training = info.get("training") or {}
    recorded = training.get("config")
    source = data or training.get("data_path") or (info.get("data") or {}).get("source")
    if recorded is None or source is None:
        raise LordfxError(f"{bundle_dir}: the bundle records no training config or data source")
    cfg = TrainConfig.from_dict(upgrade_legacy(recorded), source=str(bundle_dir))
    names = ((info.get("data") or {}).get("split") or {}).get("heldout_class_names")
    return cfg, Path(source), names


def bundle_heldout(bundle_dir: Path, data: Path | None = None) -> ImageDataset | None:
    """The held-out data of the run a bundle was trained from (:func:`bundle_training`),
    re-created and checked against its recorded held-out class names."""
    from lordfx_trainer.train import check_heldout_names, prepare_data

    cfg, source, names = bundle_training(bundle_dir, data)
    _, heldout = prepare_data(cfg, source)
    check_heldout_names(bundle_dir, names, heldout)
    return heldout


def to_float(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """Shape: (N, H, W, C) uint8 → (N, C, H, W) float in [0, 1] on ``device``."""
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return x.to(device).float().div_(255)


@torch.no_grad()
def encoder_codes(model: AmortizedModel, images: torch.Tensor, batch_size: int) -> Codes:
    """Stage-2 codes E_y(x), E_c(x) of every image (paper §3.2).

    Shape: images (N, C, H, W) in [0, 1] → Codes with N rows.
    """
    class_codes, content_codes = [], []
    for x in images.split(batch_size):
        class_codes.append(model.encode_class(x).float())
        content_codes.append(model.encode_content(x).float())
    return Codes(torch.cat(class_codes), torch.cat(content_codes), "stage-2 encoders")


def optimized_codes(
    run: LoadedRun, images: torch.Tensor, steps: int, lr: float, batch_size: int, seed: int
) -> Codes:
    """Table 3 "w/o stage 2": codes of new images by test-time latent optimisation with
    the frozen stage-1 generator and the run's own reconstruction loss.

    Shape: images (N, C, H, W) in [0, 1] → Codes with N rows.
    """
    from lordfx_trainer.losses import build_loss
    from lordfx_trainer.steps import optimize_codes

    loss_fn = build_loss(run.cfg.loss, allow_random_weights=run.cfg.allow_random_weights)
    loss_fn.to(run.device)
    cfg, class_codes, content_codes, final = run.cfg, [], [], []
    for k, x in enumerate(images.split(batch_size)):
        with torch.enable_grad():
            cls, con, history = optimize_codes(
                run.latent.generator,
                x,
                loss_fn,
                cfg.content_dim,
                cfg.class_dim,
                steps,
                lr,
                seed + k,
            )
        class_codes.append(cls.float())
        content_codes.append(con.float())
        final.append(history[-1] if history else float("nan"))
    source = f"test-time optimisation ({steps} steps, lr {lr:g}, final loss {np.mean(final):.4f})"
    return Codes(torch.cat(class_codes), torch.cat(content_codes), source)


@torch.no_grad()
def stage1_codes(run: LoadedRun, batch_size: int) -> Codes:
    """Per training image: its content code c_i and the class code of its class e_{y_i}.

    Amortized ablations use their stage-1 encoders per image instead (Table 3): leakage
    is a property of what one image's code carries, so class codes are not averaged here.
    Shape: → Codes with ``run.train.num_images`` rows.
    """
    model, ids = run.latent, torch.from_numpy(run.train.class_ids).to(run.device)
    need_images = model.class_mode == "amortized" or model.content_mode == "amortized"
    if not need_images:
        return Codes(
            model.class_embedding(ids).float(),
            model.content_embedding.weight.float().clone(),
            "stage-1 latent codes",
        )
    class_codes, content_codes = [], []
    for start in range(0, run.train.num_images, batch_size):
        sl = slice(start, start + batch_size)
        x = to_float(run.train.images[sl], run.device)
        image_ids = torch.arange(start, start + x.shape[0], device=run.device)
        content_codes.append(model.content_codes(x, image_ids))
        if model.class_mode == "latent":
            class_codes.append(model.class_embedding(ids[sl]).float())
        else:
            class_codes.append(model.class_encoder(x).float())
    source = f"stage-1 codes (class: {model.class_mode}, content: {model.content_mode})"
    return Codes(torch.cat(class_codes), torch.cat(content_codes), source)


@torch.no_grad()
def generate(
    generator: nn.Module, content_codes: torch.Tensor, class_codes: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """G(content, class) in batches. Shape: (B, content_dim), (B, class_dim) → (B, C, H, W)."""
    out = [
        generator(c, y).float()
        for c, y in zip(content_codes.split(batch_size), class_codes.split(batch_size), strict=True)
    ]
    return torch.cat(out)
