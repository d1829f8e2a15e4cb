"""``lordfx train``: resolve the config, prepare the data, run both stages, keep the run."""

from __future__ import annotations

import logging
import shutil
from dataclasses import fields
from pathlib import Path
from typing import Any

from lordfx.errors import LordfxError, UsageError
from lordfx_trainer.config import TrainConfig, apply_overrides
from lordfx_trainer.presets import find_preset, read_preset

log = logging.getLogger("lordfx.trainer")


def resolve_config(preset: str, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults → preset TOML → CLI overrides (DESIGN §8.1)."""
    path = find_preset(preset)
    cfg = apply_overrides(TrainConfig(), read_preset(path), source=str(path))
    return apply_overrides(cfg, overrides, source="--set")


def data_options(cfg: TrainConfig) -> dict[str, Any]:
    """The dataset reader's options a config sets (``data_*`` keys that are not defaults)."""
    options: dict[str, Any] = {}
    if cfg.data_exclude:
        options["exclude"] = cfg.data_exclude
    if cfg.data_min_agreement:
        options["min_agreement"] = cfg.data_min_agreement
    if cfg.data_fer2013 or cfg.data_fer2013_per_class:
        options["fer2013"] = cfg.data_fer2013
        options["fer2013_per_class"] = cfg.data_fer2013_per_class
    return options


def prepare_data(cfg: TrainConfig, data_path: Path | None) -> tuple[Any, Any]:
    """Load the dataset and split off held-out classes, or held-out groups of a content
    label such as performers (seeded; recorded in ``meta``)."""
    from lordfx_trainer.data import load_dataset
    from lordfx_trainer.data.base import split_classes

    if cfg.dataset != "synthetic" and data_path is None:
        raise UsageError(f"dataset {cfg.dataset!r} needs --data PATH")
    ds = load_dataset(cfg.dataset, data_path, cfg.image_size, cfg.channels, **data_options(cfg))
    if cfg.dataset == "cars3d" and cfg.num_heldout_classes == 20:
        from lordfx_trainer.data.cars3d import split_cars3d

        train, heldout = split_cars3d(ds, seed=cfg.split_seed)
    elif cfg.num_heldout_classes > 0:
        train, heldout = split_classes(ds, num_heldout=cfg.num_heldout_classes, seed=cfg.split_seed)
    elif cfg.num_heldout_groups > 0:
        from lordfx_trainer.data.base import split_groups

        try:
            train, heldout = split_groups(
                ds, cfg.heldout_group, cfg.num_heldout_groups, seed=cfg.split_seed
            )
        except ValueError as exc:
            raise UsageError(f"heldout_group: {exc}") from None
    else:
        train, heldout = ds, None
    if cfg.max_classes and train.num_classes > cfg.max_classes:
        train = train.select_classes(list(range(cfg.max_classes)))
    if cfg.max_images_per_class:
        train = cap_images_per_class(train, cfg.max_images_per_class, seed=cfg.split_seed)
    return train, heldout


def cap_images_per_class(ds: Any, cap: int, seed: int) -> Any:
    """At most ``cap`` images of each class, drawn with a seeded RNG (original order kept)."""
    import numpy as np

    rng = np.random.default_rng([seed, 7])
    keep = []
    for k in range(ds.num_classes):
        members = np.flatnonzero(ds.class_ids == k)
        if len(members) > cap:
            members = np.sort(rng.choice(members, size=cap, replace=False))
        keep.append(members)
    from dataclasses import replace

    out = ds.subset(np.sort(np.concatenate(keep)))
    return replace(out, meta=out.meta | {"max_images_per_class": cap})


# Keys that only shape stage 2 (or logging, or the machine it runs on): a run may take its
# stage 1 from another run (``--stage1-from``) when every other key is the same.
STAGE2_KEYS = frozenset(
    {
        "amortized_epochs",
        "encoder_lr",
        "amortized_generator_lr",
        "class_code_weight",
        "content_code_weight",
        "content_target_group",
        "encoder_augment",
        "encoder_standardise",
        "amortized_grad_clip",
        "amortized_minutes",
        "log_every",
        "checkpoint_every",
        "grid_every",
        "curve_every",
        "device",
        "precision",
        "memory_format",
    }
)


def start_run(
    cfg: TrainConfig, run_dir: Path, data_path: Path | None, stage1_from: Path | None = None
) -> Path | None:
    """A new run in ``run_dir`` (which must not exist: runs are never overwritten).

    ``stage1_from``: a finished stage 1 of another run to start stage 2 from (its config must
    equal ``cfg`` outside :data:`STAGE2_KEYS`, its data split the same); recorded in
    config.json as ``stage1_from``.
    """
    from lordfx_trainer.run import Run

    source = stage1_source(cfg, stage1_from) if stage1_from is not None else None
    record = {"stage1_from": str(stage1_from.resolve())} if stage1_from is not None else {}
    train, heldout = create_run(cfg, run_dir, data_path, record)
    try:
        run = Run(cfg, run_dir, train, heldout)
        if source is not None:  # --stage1-from given
            latent_file, source_extra = source
            check_split(stage1_from, source_extra, train, heldout)
            run.start_stage2_from(latent_file)
    except LordfxError:
        shutil.rmtree(run_dir)  # nothing trained yet: leave no half-made run behind
        raise
    return run.fit()


def stage1_source(cfg: TrainConfig, source: Path) -> tuple[Path, dict[str, Any]]:
    """``source``'s stage-1 model file and its recorded run info (for :func:`check_split`),
    after checking that its stage 1 is what ``cfg`` would train (every key outside
    :data:`STAGE2_KEYS` equal)."""
    from lordfx_trainer.run import read_run_config

    latent_file = source / "latent.safetensors"
    if not latent_file.is_file():
        raise LordfxError(f"{source}: no latent.safetensors (stage 1 not finished there)")
    old, extra = read_run_config(source)
    differ = [
        f"{k} {getattr(old, k)!r} there, {getattr(cfg, k)!r} here"
        for k in (f.name for f in fields(cfg))
        if k not in STAGE2_KEYS and getattr(old, k) != getattr(cfg, k)
    ]
    if differ:
        raise UsageError(
            f"--stage1-from {source}: stage 1 ran with other settings: " + "; ".join(differ)
        )
    return latent_file, extra


def create_run(
    cfg: TrainConfig, run_dir: Path, data_path: Path | None, record: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    """Make the run directory and its config.json (plus ``record``'s keys); returns the
    (train, heldout) data."""
    from lordfx_trainer.run import write_run_config

    if run_dir.exists():
        raise LordfxError(
            f"{run_dir}: run directory already exists; continue it with --resume "
            f"or choose another --out (existing runs are never overwritten)"
        )
    train, heldout = prepare_data(cfg, data_path)
    run_dir.mkdir(parents=True)
    extra = {
        "data_path": str(data_path.resolve()) if data_path else None,
        "train": train.meta | {"num_images": train.num_images, "num_classes": train.num_classes},
        "heldout": None if heldout is None else heldout.meta | {"num_classes": heldout.num_classes},
        **(record or {}),
    }
    write_run_config(run_dir, cfg, extra)
    log.info(
        "run %s: %s (%s), %d images of %d classes",
        run_dir,
        cfg.dataset,
        cfg.ablation,
        train.num_images,
        train.num_classes,
    )
    return train, heldout


def resume_run(run_dir: Path) -> Path | None:
    """Continue a killed run exactly where its last checkpoint left it."""
    from lordfx_trainer.run import STATE_FILE, Run

    if not (run_dir / STATE_FILE).is_file():
        raise LordfxError(f"{run_dir}: no {STATE_FILE} to resume from")
    cfg, train, heldout = reload_run(run_dir)
    run = Run(cfg, run_dir, train, heldout)
    run.load_checkpoint()
    return run.fit()


def reload_run(run_dir: Path) -> tuple[TrainConfig, Any, Any]:
    """A run's config and its data re-created as recorded (checked against config.json)."""
    from lordfx_trainer.run import read_run_config

    cfg, extra = read_run_config(run_dir)
    data_path = Path(extra["data_path"]) if extra.get("data_path") else None
    train, heldout = prepare_data(cfg, data_path)
    check_split(run_dir, extra, train, heldout)
    return cfg, train, heldout


def check_heldout_names(where: Any, recorded: list[str] | None, heldout: Any) -> None:
    """The re-created held-out classes must be the ``recorded`` ones (when any were recorded);
    a clear error naming ``where`` (a run directory or a bundle) otherwise."""
    now = None if heldout is None else list(heldout.class_names)
    if recorded is not None and list(recorded) != now:
        raise LordfxError(
            f"{where}: the re-created held-out classes {now} differ from the recorded "
            f"{recorded} (dataset or reader changed since training)"
        )


def check_split(run_dir: Path, extra: dict[str, Any], train: Any, heldout: Any) -> None:
    """The re-created data must be the recorded one (same held-out classes, same training set)."""
    recorded = ((extra.get("heldout") or {}).get("split") or {}).get("heldout_class_names")
    check_heldout_names(run_dir, recorded, heldout)
    groups = ((extra.get("heldout") or {}).get("split") or {}).get("heldout_groups")
    now_groups = None if heldout is None else heldout.meta.get("split", {}).get("heldout_groups")
    if groups is not None and groups != now_groups:
        raise LordfxError(
            f"{run_dir}: the re-created held-out groups {now_groups} differ from the recorded "
            f"{groups} (dataset or reader changed since training)"
        )
    rec = extra.get("train") or {}
    for key, value in (("num_images", train.num_images), ("num_classes", train.num_classes)):
        if key in rec and rec[key] != value:
            raise LordfxError(
                f"{run_dir}: the re-created training set has {key} = {value}, the run recorded "
                f"{rec[key]} (dataset or reader changed since training)"
            )
