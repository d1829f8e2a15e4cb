"""``lordfx eval-cars`` (named-view metrics: view LPIPS, where accuracy) and ``lordfx
view-bank`` (write a run's view bank). Light: heavy imports inside the functions."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import typer


def eval_cars_command(
    run_dir: Path = typer.Argument(
        ...,
        help="A finished run with content labels (Cars3D), or a bundle of one whose run is "
        "gone (e.g. plugins/cars/lordfx_cars/model; then --out is required).",
    ),
    bundle: Path | None = typer.Option(
        None, "--bundle", help="Bundle of that run to score [default: RUN_DIR/bundle]."
    ),
    pairs: int = typer.Option(2000, "--pairs", min=1, help="Held-out (image, view) pairs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the pairs."),
    lpips: bool = typer.Option(
        True, "--lpips/--no-lpips", help="LPIPS alex (needs `lordfx weights`); L1 always."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="JSON file to write [default: RUN_DIR/eval_cars.json]."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON result on stdout."),
) -> None:
    """On the run's held-out cars: LPIPS of `lordfx cars view` against the real render at
    the asked view (beside copying the input and transfer from a real reference render),
    and the accuracy of `lordfx cars where` (exact, ±1 azimuth step, beside chance).

    Writes RUN_DIR/eval_cars.json and turntable figures of 3 held-out cars in
    RUN_DIR/eval_cars/ (real renders above the model's spin; Cars3D pixels: do not commit)."""
    from lordfx.errors import UsageError
    from lordfx_trainer.evaluation.cars import (
        EVAL_CARS_FILE,
        CarsEvalSettings,
        evaluate_cars,
        summary_markdown,
    )
    from lordfx_trainer.evaluation.report import write_json_atomic

    if out is None and (run_dir / "model.safetensors").is_file():
        raise UsageError(f"{run_dir}: is a bundle; say where the results go with --out FILE")
    settings = CarsEvalSettings(pairs=pairs, seed=seed, lpips=lpips, device=device)
    path = out or run_dir / EVAL_CARS_FILE
    result = evaluate_cars(run_dir, settings, bundle, figures=path.with_suffix(""))
    command = ["lordfx", "eval-cars", str(run_dir), "--pairs", str(pairs), "--seed", str(seed)]
    command += (["--bundle", str(bundle)] if bundle else []) + ([] if lpips else ["--no-lpips"])
    command += ["--out", str(out)] if out else []
    result["command"] = shlex.join(command)
    write_json_atomic(result, path)
    typer.echo(f"wrote {path}", err=True)
    typer.echo(json.dumps(result, indent=2) if as_json else summary_markdown(result))


def view_bank_command(
    run_dir: Path = typer.Argument(..., help="A finished run with content labels (e.g. Cars3D)."),
    source: str = typer.Option(
        "latent",
        "--source",
        help="Codes views are rendered from: latent (stage-1 content codes) or encoder (E_c).",
    ),
    locate: str = typer.Option(
        "encoder", "--locate", help="Codes `where` compares E_c(x) with: encoder or latent."
    ),
    bundle: Path | None = typer.Option(
        None, "--bundle", help="Bundle to write into [default: RUN_DIR/bundle]."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
) -> None:
    """Write the view bank (mean content code per known view) into a run's bundle; `lordfx
    ship` carries it. Runs with content labels get one automatically when they finish."""
    from lordfx_trainer.view_bank import view_bank_for_run

    path = view_bank_for_run(run_dir, source, locate, bundle, device)  # type: ignore[arg-type]
    typer.echo(str(path))
