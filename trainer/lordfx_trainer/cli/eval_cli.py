"""``lordfx eval``: the paper's evaluation of finished runs. Heavy imports inside the function."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

COMPARE_FILE = "eval-compare.json"


def eval_command(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories written by `lordfx train`."),
    compare: bool = typer.Option(
        False, "--compare", help="One markdown table over all runs (reuses their eval.json)."
    ),
    pairs: int = typer.Option(2000, "--pairs", help="Held-out transfer pairs (seeded)."),
    seed: int = typer.Option(0, "--seed", help="Seed of pairs, probe splits and probes."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help=f"--compare: JSON file [default: {COMPARE_FILE} beside the runs]."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON result on stdout."),
    tto_steps: int = typer.Option(
        200, "--tto-steps", help="Test-time optimisation steps for runs without stage 2."
    ),
    lpips: bool = typer.Option(
        True, "--lpips/--no-lpips", help="LPIPS (needs `lordfx weights`); L1/SSIM always."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    recompute: bool = typer.Option(
        False, "--recompute", help="--compare: evaluate again even if eval.json is current."
    ),
) -> None:
    """Evaluate runs as in the paper: content-transfer error on held-out classes (beside
    copy/mean baselines on the same pairs) and class/content leakage, with figures.

    Writes RUN_DIR/eval.json and RUN_DIR/eval/*.png; prints the eval.json path(s).
    """
    from lordfx.errors import UsageError
    from lordfx_trainer.evaluation import EvalSettings, evaluate_run, summary_lines
    from lordfx_trainer.evaluation.compare import compare_runs
    from lordfx_trainer.evaluation.report import EVAL_FILE, write_json_atomic

    if pairs < 1 or tto_steps < 0:
        raise UsageError("--pairs must be >= 1 and --tto-steps >= 0")
    if out is not None and not compare:
        raise UsageError("--out is for --compare (each run's result goes to RUN_DIR/eval.json)")
    settings = EvalSettings(
        pairs=pairs,
        seed=seed,
        lpips=("alex", "vgg") if lpips else (),
        tto_steps=tto_steps,
        device=device,
    )
    if compare:
        data, table = compare_runs(run_dirs, settings, recompute)
        parents = [str(d.resolve().parent) for d in run_dirs]
        path = out or Path(os.path.commonpath(parents)) / COMPARE_FILE
        write_json_atomic(data, path)
        typer.echo(f"comparison JSON: {path}", err=True)
        typer.echo(json.dumps(data, indent=2) if as_json else table)
        return
    for run_dir in run_dirs:
        result = evaluate_run(run_dir, settings)
        for line in summary_lines(result):
            typer.echo(line, err=True)
        typer.echo(json.dumps(result, indent=2) if as_json else str(run_dir / EVAL_FILE))


def eval_faces_command(
    run_dir: Path = typer.Argument(
        ...,
        help="A faces run directory written by `lordfx train` (with --render: or a bundle, "
        "e.g. the shipped plugins/faces/lordfx_faces/model).",
    ),
    pairs: int = typer.Option(500, "--pairs", help="Held-out (FACE, REF) pairs (seeded)."),
    seed: int = typer.Option(0, "--seed", help="Seed of pairs, probe splits and probes."),
    lpips: bool = typer.Option(
        True, "--lpips/--no-lpips", help="LPIPS alex (needs `lordfx weights`); L1 always."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    tto_steps: int = typer.Option(
        200, "--tto-steps", help="Test-time optimisation steps for runs without stage 2."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Folder for eval_faces.json and eval_faces/ [default: RUN_DIR]."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON result on stdout."),
    render: str = typer.Option(
        "",
        "--render",
        help="Instead: swap-pose as pasted by the faces plugin, per render mode "
        "(warp,generate), on held-out crops at their own resolution; eval_faces_render.json.",
    ),
    data: Path | None = typer.Option(
        None, "--data", help="With --render: the dataset root [default: the one recorded]."
    ),
) -> None:
    """Faces metrics on held-out identities with dlib (optional extra `eval-faces`):
    identity kept (128-d descriptor), pose taken (68 landmarks), the paper's CelebA
    protocol, content→identity leakage and reconstruction LPIPS, with baselines.

    Writes RUN_DIR/eval_faces.json and RUN_DIR/eval_faces/*.png (or into --out); prints a
    markdown summary.
    """
    from lordfx.errors import UsageError
    from lordfx_trainer.evaluation.faces import (
        EVAL_FACES_FILE,
        FaceEvalSettings,
        evaluate_faces,
        summary_markdown,
    )

    if pairs < 1 or tto_steps < 0:
        raise UsageError("--pairs must be >= 1 and --tto-steps >= 0")
    if render:
        _eval_faces_render(run_dir, render, data, pairs, seed, lpips, out, as_json)
        return
    settings = FaceEvalSettings(
        pairs=pairs, seed=seed, lpips=lpips, device=device, tto_steps=tto_steps
    )
    command = ["lordfx", "eval-faces", str(run_dir), "--pairs", str(pairs), "--seed", str(seed)]
    command += ["--lpips" if lpips else "--no-lpips", "--device", device]
    command += ["--tto-steps", str(tto_steps)] + (["--out", str(out)] if out else [])
    result = evaluate_faces(run_dir, settings, command, out)
    typer.echo(f"wrote {(out or run_dir) / EVAL_FACES_FILE}", err=True)
    typer.echo(json.dumps(result, indent=2) if as_json else summary_markdown(result))


def _eval_faces_render(
    path: Path,
    render: str,
    data: Path | None,
    pairs: int,
    seed: int,
    lpips: bool,
    out: Path | None,
    as_json: bool,
) -> None:
    """``eval-faces --render``: lordfx_trainer.evaluation.face_render."""
    from lordfx_trainer.evaluation.face_render import (
        EVAL_RENDER_FILE,
        RenderEvalSettings,
        evaluate_render_modes,
        summary_markdown,
    )

    modes = tuple(m.strip() for m in render.split(",") if m.strip())
    settings = RenderEvalSettings(modes=modes, pairs=pairs, seed=seed, lpips=lpips)
    command = ["lordfx", "eval-faces", str(path), "--render", ",".join(modes)]
    command += ["--pairs", str(pairs), "--seed", str(seed), "--lpips" if lpips else "--no-lpips"]
    command += (["--data", str(data)] if data else []) + (["--out", str(out)] if out else [])
    result = evaluate_render_modes(path, data, settings, command, out)
    typer.echo(f"wrote {(out or path) / EVAL_RENDER_FILE}", err=True)
    typer.echo(json.dumps(result, indent=2) if as_json else summary_markdown(result))


def eval_faces_align_command(
    photos: Path = typer.Option(
        Path("../shared/data/celeba_wild_samples"), "--photos", help="Folder of full photos."
    ),
    align: str = typer.Option(
        "none,haar,dlib5", "--align", help="Arms: none (no roll), haar, dlib5 (comma list)."
    ),
    pairs: int = typer.Option(200, "--pairs", help="swap-pose (FACE, REF) pairs (seeded)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the pairs."),
    render: str = typer.Option("warp", "--render", help="warp or generate."),
    out: Path = typer.Option(Path("."), "--out", "-o", help="Folder for eval_faces_align.json."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON result on stdout."),
) -> None:
    """Faces alignment (issue 17): the roll from dlib's 5 points vs the Haar eye cascade vs
    none, on full photos with the shipped faces model — residual roll in the aligned crop and
    swap-pose identity/pose (needs the `eval-faces` extra). Prints a markdown table."""
    from lordfx.render import check_render
    from lordfx_trainer.evaluation.face_align import (
        EVAL_ALIGN_FILE,
        AlignEvalSettings,
        evaluate_alignment,
        summary_markdown,
    )

    check_render(render)
    arms = tuple(a.strip() for a in align.split(",") if a.strip())
    settings = AlignEvalSettings(arms=arms, pairs=pairs, seed=seed, render=render)
    command = ["lordfx", "eval-faces-align", "--photos", str(photos), "--align", ",".join(arms)]
    command += ["--pairs", str(pairs), "--seed", str(seed), "--render", render, "--out", str(out)]
    result = evaluate_alignment(photos, settings, out, command)
    typer.echo(f"wrote {out / EVAL_ALIGN_FILE}", err=True)
    typer.echo(json.dumps(result, indent=2) if as_json else summary_markdown(result))
