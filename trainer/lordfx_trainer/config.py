"""Training configuration: one frozen, flat dataclass. Order: defaults → preset TOML → CLI.

Names follow the paper (DESIGN §8.9): ``content_noise_std`` (σ), ``content_decay`` (λ),
``class_code_weight``/``content_code_weight`` (α1/α2 of stage 2).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from lordfx.errors import UsageError
from lordfx.nets import ModelConfig

CodeMode = Literal["latent", "amortized"]


@dataclass(frozen=True)
class TrainConfig:
    # -- data --------------------------------------------------------------------------
    dataset: str = "synthetic"
    image_size: int = 64
    channels: int = 3
    num_heldout_classes: int = 0  # whole classes held out for evaluation (seeded)
    # Whole groups of a content label held out instead (e.g. performers of posed expressions,
    # where every class appears on both sides): the label's name and how many (seeded).
    heldout_group: str = ""
    num_heldout_groups: int = 0
    split_seed: int = 0
    max_classes: int = 0  # 0 = all; >0 keeps the first N training classes (small presets)
    max_images_per_class: int = 0  # 0 = all; >0 keeps a seeded sample per training class
    data_exclude: str = ""  # list of image paths to drop (reader's ``exclude`` option)
    # taiwanese only: drop posed photos fewer than this share of the database's observers
    # rated as the posed expression (reader option ``min_agreement``; 0 = keep all)
    data_min_agreement: float = 0.0
    # taiwanese only: a FER2013 folder and how many of its train photos per expression to
    # add (reader options ``fer2013`` / ``fer2013_per_class``; grey tiled to RGB, never held
    # out; both or neither)
    data_fer2013: str = ""
    data_fer2013_per_class: int = 0
    # -- model (paper A.1) -------------------------------------------------------------
    content_dim: int = 128
    class_dim: int = 256
    width: float = 1.0
    arch: str = "paper"  # "paper" (A.1) | "tapered" (lordfx.nets.TAPERED_CHANNELS)
    # -- stage 1: latent optimisation --------------------------------------------------
    latent_epochs: int = 200
    batch_size: int = 128
    content_noise_std: float = 1.0
    content_decay: float = 1e-3
    content_decay_on: Literal["clean", "noisy"] = "clean"
    generator_lr: float = 1e-4
    code_lr: float = 1e-3
    class_code_lr: float = 0.0  # > 0: the class codes' own learning rate (0 = code_lr)
    schedule: Literal["constant", "cosine"] = "constant"
    min_lr: float = 1e-5
    loss: str = "vgg"
    vgg_layers: str = "relu1_2,relu2_2,relu3_2,relu4_3,pool5"  # VGG16 taps of the loss (paper)
    class_mode: CodeMode = "latent"  # "amortized" = Table 3 amortized ablations
    content_mode: CodeMode = "latent"  # "amortized" = Table 3 (semi-)amortized ablations
    # -- stage 2: amortisation ---------------------------------------------------------
    amortized_epochs: int = 200  # 0 = "w/o stage 2" (test-time latent optimisation)
    encoder_lr: float = 1e-4
    amortized_generator_lr: float = 1e-4
    class_code_weight: float = 10.0
    content_code_weight: float = 10.0
    # > 0: clip each stage-2 step's global gradient norm (encoders + generator) to this. Off
    # by default (runs before this key are unchanged); shoes64-cpu's 30-epoch stage 2 at
    # encoder_lr 1e-3 diverged without it (loss 6.5 → 1.9e3 at epoch 6, runs/shoes64d)
    amortized_grad_clip: float = 0.0
    # "" = each image's own stage-1 content code is its encoder target (paper Eq. 8); a
    # content factor's name (e.g. "performer") = the mean stage-1 code of the training images
    # sharing that factor's value, so E_c learns to drop what varies within it (the class);
    # shoes: "pair" gives a photo and its edge map one target, their mean code
    content_target_group: str = ""
    # stage 2: the encoders see (and G reconstructs) randomly flipped, shifted (±6 % of the
    # side) and brightness/contrast-jittered (±10 %) images; the code targets are unchanged
    encoder_augment: bool = False
    # stage 2: each encoder predicts mean + std · FC(x) with the per-dimension mean and std
    # of its stage-1 targets (lordfx.nets.Encoder.standardise_output), folded into the last
    # layer in the bundle. Off = the plain head (run configs written before this key existed)
    encoder_standardise: bool = True
    # -- runtime -----------------------------------------------------------------------
    seed: int = 0
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # lordfx.precision: per machine
    memory_format: Literal["auto", "channels_last", "contiguous"] = "auto"
    stage_minutes: float = 0.0  # > 0: each stage also ends after this much training time
    amortized_minutes: float = -1.0  # >= 0: stage 2's own budget (0 = none); < 0: stage_minutes
    log_every: int = 50
    checkpoint_every: int = 200  # steps; a checkpoint is also written at every epoch end
    # a stage whose generator output stays saturated (run.stall_warning) this many steps is
    # stopped with an error instead of running on without gradient; 0 = only warn. A shoes
    # run with the pixel L1 loss saturated to white by step 50 and ran 45 min that way.
    stall_stop_steps: int = 300
    grid_every: int = 5  # epochs
    curve_every: int = 0  # steps; > 0: probe/held-out quality points in curve.jsonl (curve.py)
    allow_random_weights: bool = False  # VGG without ImageNet weights: explicit and recorded

    def __post_init__(self) -> None:
        checks = [
            (self.batch_size > 0, "batch_size must be positive"),
            (self.curve_every >= 0, "curve_every must be >= 0 (0 = no curve.jsonl)"),
            (self.class_code_lr >= 0, "class_code_lr must be >= 0 (0 = code_lr)"),
            (self.stage_minutes >= 0, "stage_minutes must be >= 0 (0 = no time budget)"),
            (
                self.amortized_minutes >= 0 or self.amortized_minutes == -1.0,
                "amortized_minutes must be >= 0 (-1 = same as stage_minutes)",
            ),
            (self.latent_epochs >= 0 and self.amortized_epochs >= 0, "epochs must be >= 0"),
            (self.content_noise_std >= 0 and self.content_decay >= 0, "σ and λ must be >= 0"),
            (self.class_mode in ("latent", "amortized"), "class_mode: latent | amortized"),
            (self.content_mode in ("latent", "amortized"), "content_mode: latent | amortized"),
            (self.content_decay_on in ("clean", "noisy"), "content_decay_on: clean | noisy"),
            (self.schedule in ("constant", "cosine"), "schedule: constant | cosine"),
            (self.precision in ("auto", "fp32", "bf16"), "precision: auto | fp32 | bf16"),
            (
                self.memory_format in ("auto", "channels_last", "contiguous"),
                "memory_format: auto | channels_last | contiguous",
            ),
            (self.max_images_per_class >= 0, "max_images_per_class must be >= 0"),
            (
                self.num_heldout_groups >= 0
                and bool(self.heldout_group) == (self.num_heldout_groups > 0),
                "heldout_group and num_heldout_groups > 0 go together",
            ),
            (
                not (self.num_heldout_groups and self.num_heldout_classes),
                "hold out classes or groups, not both",
            ),
            (self.log_every > 0 and self.checkpoint_every > 0, "log/checkpoint intervals > 0"),
            (self.stall_stop_steps >= 0, "stall_stop_steps >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(f"invalid config: {message}")
        self.model_config()  # validates image_size/channels/width/arch
        from lordfx_trainer.losses import parse_vgg_layers

        parse_vgg_layers(self.vgg_layers)

    def minutes_for(self, stage: str) -> float:
        """The time budget of one stage in minutes (0 = none)."""
        if stage == "amortized" and self.amortized_minutes >= 0:
            return self.amortized_minutes
        return self.stage_minutes

    def model_config(self) -> ModelConfig:
        try:
            return ModelConfig(
                image_size=self.image_size,
                channels=self.channels,
                content_dim=self.content_dim,
                class_dim=self.class_dim,
                width=self.width,
                arch=self.arch,
            )
        except ValueError as exc:
            raise UsageError(f"invalid config: {exc}") from None

    @property
    def ablation(self) -> str:
        """Which paper Table 3 variant(s) this is: "full" or the labels joined by ", "."""
        labels = []
        if self.class_mode == "amortized":
            labels.append("amortized" if self.content_mode == "amortized" else "amortized class")
        elif self.content_mode == "amortized":
            labels.append("semi-amortized")
        if self.content_noise_std == 0 and self.content_decay == 0:
            labels.append("w/o regularisation")
        if self.amortized_epochs == 0:
            labels.append("w/o stage 2")
        return ", ".join(labels) or "full"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> TrainConfig:
        return apply_overrides(cls(), upgrade_legacy(data), source)


def upgrade_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """Keys of run configs written by earlier versions, mapped to what they meant.

    ``channels_last: bool`` became ``memory_format``; such runs named their precision
    explicitly (the old default was "fp32"), so resuming them keeps their numerics.
    ``encoder_standardise`` did not exist: those runs trained plain encoder heads.
    """
    data = dict(data)
    data.setdefault("encoder_standardise", False)
    if "channels_last" in data:
        data["memory_format"] = "channels_last" if data.pop("channels_last") else "contiguous"
        data.setdefault("precision", "fp32")
    return data


def apply_overrides(cfg: TrainConfig, data: dict[str, Any], source: str) -> TrainConfig:
    """``cfg`` with ``data`` applied; unknown keys and wrong types are errors naming ``source``."""
    types = {f.name: f.type for f in fields(TrainConfig)}
    defaults = TrainConfig().to_dict()
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise UsageError(f"{source}: unknown keys {unknown}; valid keys: {', '.join(types)}")
    clean: dict[str, Any] = {}
    for key, value in data.items():
        kind = type(defaults[key])
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UsageError(f"{source}: {key} must be {kind.__name__}, got {value!r}")
        clean[key] = value
    return replace(cfg, **clean)


# Paper Table 3 variants as named overrides on top of any preset (`lordfx train P --ablation X`).
ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "amortized": {"class_mode": "amortized", "content_mode": "amortized"},
    "semi-amortized": {"content_mode": "amortized"},
    "no-reg": {"content_noise_std": 0.0, "content_decay": 0.0},
    "no-stage2": {"amortized_epochs": 0},
}


def ablation_overrides(name: str) -> dict[str, Any]:
    """The config keys of a Table 3 variant; unknown names list the valid ones."""
    if name not in ABLATIONS:
        raise UsageError(f"unknown ablation {name!r}; choose one of: {', '.join(ABLATIONS)}")
    return dict(ABLATIONS[name])


def parse_set_option(items: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs, values parsed as TOML scalars (``1e-3``, ``true``, ``"x"``)."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set takes key=value, got {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw  # bare word → string (e.g. --set loss=l1)
    return out
