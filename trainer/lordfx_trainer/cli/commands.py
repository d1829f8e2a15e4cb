"""CLI commands added by the trainer plugin. Heavy imports happen inside the functions."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer


def presets_command() -> None:
    """List the training presets and what each one reproduces."""
    from lordfx_trainer.config import ABLATIONS
    from lordfx_trainer.presets import available_presets, preset_header

    for name, path in available_presets().items():
        typer.echo(f"{name:<18} {preset_header(path)}")
    typer.echo("\nTable 3 ablations, on top of any preset with --ablation NAME:")
    for name, keys in ABLATIONS.items():
        sets = " ".join(f"{k}={v}" for k, v in keys.items()) or "(the preset as is)"
        typer.echo(f"{name:<18} {sets}")


def train_command(
    preset: str | None = typer.Argument(
        None, help="Preset name (see `lordfx presets`) or a .toml file."
    ),
    data: Path | None = typer.Option(None, "--data", help="Dataset root (not for synthetic)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Run directory [default: runs/PRESET-TIME]."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config key: --set latent_epochs=5."
    ),
    resume: Path | None = typer.Option(
        None, "--resume", help="Continue the run in this directory."
    ),
    ablation: str | None = typer.Option(
        None,
        "--ablation",
        help="Paper Table 3 variant on top of the preset: full, amortized, semi-amortized, no-reg, no-stage2.",
    ),
    stage1_from: Path | None = typer.Option(
        None,
        "--stage1-from",
        help="Skip stage 1: start stage 2 from this run's finished stage 1 (same data and "
        "stage-1 settings; only stage-2 keys may differ).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config and exit."),
    nproc: int = typer.Option(
        1,
        "--nproc",
        min=1,
        help="Train on N processes of this machine (torch.distributed; docs/training.md).",
    ),
) -> None:
    """Train a LORD model: stage 1 (latent optimisation), then stage 2 (amortisation)."""
    from lordfx.errors import UsageError
    from lordfx_trainer import distributed
    from lordfx_trainer.config import ablation_overrides, parse_set_option
    from lordfx_trainer.train import resolve_config, resume_run, start_run

    if resume is not None:
        if preset is not None or set_ or data is not None or ablation is not None or stage1_from:
            raise UsageError(
                "--resume takes no PRESET, --data, --set, --ablation or --stage1-from: "
                "the run's config.json rules"
            )
        if distributed.wanted(nproc):
            bundle = distributed.resume(resume, nproc)
        else:
            bundle = resume_run(resume)
    elif preset is None:
        raise UsageError("missing argument PRESET (see `lordfx presets`) or --resume RUN_DIR")
    else:
        # --set is applied after --ablation, so it can still adjust an ablation's keys.
        overrides = ablation_overrides(ablation) if ablation else {}
        cfg = resolve_config(preset, overrides | parse_set_option(set_))
        if dry_run:
            typer.echo(json.dumps(cfg.to_dict(), indent=2))
            return
        stem = Path(preset).stem + (f"-{ablation}" if ablation else "")
        run_dir = out or Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        if distributed.wanted(nproc):
            if stage1_from is not None:
                raise UsageError("--stage1-from runs on one process (stage 2 is the short one)")
            bundle = distributed.start(cfg, run_dir, data, nproc)
        else:
            bundle = start_run(cfg, run_dir, data, stage1_from)
    typer.echo(str(bundle) if bundle else "(no bundle: stage 2 disabled)")


def weights_command(
    vgg16: Path | None = typer.Option(None, "--vgg16", help="VGG16 .pth/.safetensors to use."),
    alexnet: Path | None = typer.Option(None, "--alexnet", help="AlexNet file to use."),
    offline: bool = typer.Option(False, "--offline", help="Only local files, no downloads."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Provision and verify the ImageNet VGG16 and AlexNet weights (non-commercial terms)."""
    from lordfx_trainer.weights import provision_check

    checks = [
        provision_check("vgg16", vgg16, download=not offline),
        provision_check("alexnet", alexnet, download=not offline),
    ]
    if as_json:
        rows = [{**c.__dict__, "path": str(c.path), "known_values": "ok"} for c in checks]
        typer.echo(json.dumps(rows, indent=2))
        return
    for c in checks:
        sha = "matches the recorded value" if c.sha256_recorded else "none recorded for source"
        typer.echo(f"{c.name:<8} {c.path}")
        typer.echo(f"         source: {c.source}; shapes and known values ok")
        typer.echo(f"         sha256: {c.sha256} ({sha})")


def bench_command(
    preset: str = typer.Argument(..., help="Preset name or .toml file."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Override the preset's batch."
    ),
    precision: str | None = typer.Option(
        None, "--precision", help="auto (default: decided per machine), fp32 or bf16."
    ),
    channels_last: bool | None = typer.Option(
        None, "--channels-last/--no-channels-last", help="Force a memory format (default: auto)."
    ),
    arch: str | None = typer.Option(None, "--arch", help="paper or tapered (default: preset)."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda or auto."),
    steps: int = typer.Option(5, "--steps", min=1, help="Timed steps per measurement (median)."),
    plain: bool = typer.Option(
        False, "--plain", help="Measure only the reference-style fp32 contiguous baseline."
    ),
    compare_plain: bool = typer.Option(
        False, "--compare-plain", help="Also measure the plain baseline; print the speed-up."
    ),
    compile: bool = typer.Option(
        False, "--compile", help="torch.compile the generator and encoders (optimised path)."
    ),
    peak_gflops: float | None = typer.Option(
        None, "--peak-gflops", min=0.001, help="Hardware peak GFLOP/s (default: timed matmul)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Measure training images/s and FLOPs per stage, and transfer latency, for a preset."""
    from lordfx.errors import UsageError
    from lordfx_trainer.bench import bench, with_overrides
    from lordfx_trainer.bench_report import format_report
    from lordfx_trainer.train import resolve_config

    if plain and (compare_plain or compile):
        raise UsageError("--plain measures the baseline alone: drop --compare-plain/--compile")
    cfg = with_overrides(
        resolve_config(preset, {}),
        batch_size=batch_size,
        precision=precision,
        memory_format=None
        if channels_last is None
        else ("channels_last" if channels_last else "contiguous"),
        arch=arch,
        device=device,
    )
    result = bench(
        cfg,
        steps=steps,
        mode="plain" if plain else "optimised",
        compare_plain=compare_plain,
        compile=compile,
        peak_gflops=peak_gflops,
    )
    typer.echo(json.dumps(result, indent=2) if as_json else format_report(result))


def ship_command(
    bundle: Path = typer.Argument(..., help="A run's bundle directory (RUN/bundle)."),
    to: Path = typer.Option(
        ..., "--to", help="Destination bundle directory, e.g. a plugin's model/."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing bundle at --to."
    ),
) -> None:
    """Copy a trained bundle as fp16 safetensors (how plugins ship their models)."""
    from lordfx.bundle import load_bundle, save_bundle

    src = load_bundle(bundle)
    info = {k: v for k, v in src.info.items() if k not in ("files", "dtype", "architecture")}
    info["shipped_from"] = {"bundle": str(bundle), "files": src.info.get("files", {})}
    out = save_bundle(
        to,
        src.model,
        info,
        class_codes=src.class_codes,
        half=True,
        overwrite=overwrite,
        extras=src.extras,  # e.g. the view bank
    )
    size = sum(f.stat().st_size for f in out.iterdir())
    typer.echo(f"{out} ({size / 1e6:.2f} MB, fp16)")


def bench_edit_command(
    photo: Path = typer.Argument(..., help="The photo to edit (FACE)."),
    ref: Path = typer.Argument(..., help="The reference whose content is taken (REF)."),
    domain: str = typer.Option("faces", "--domain", help="An installed domain with a model."),
    render: str = typer.Option("warp", "--render", help="warp or generate."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed edits (median)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Time one warm swap-pose edit of PHOTO, split into read/detect/align/encode/generate/render."""
    from lordfx.render import check_render
    from lordfx_trainer.bench_edit import bench_edit, format_edit_report

    for path in (photo, ref):
        if not path.is_file():
            from lordfx.errors import InputError

            raise InputError(path, "no such file")
    result = bench_edit(domain, photo, ref, check_render(render), repeats)
    typer.echo(json.dumps(result, indent=2) if as_json else format_edit_report(result))
