"""``lordfx eval-expressions``: expression translation judged by a classifier trained on real
images (the paper's RaFD protocol): FER2013 runs, and posed (taiwanese) runs with performers
held out. Heavy imports inside the function."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def eval_expressions_command(
    run_dir: Path = typer.Argument(
        ..., help="A fer2013 or taiwanese run directory with a bundle/."
    ),
    classifier_epochs: int | None = typer.Option(
        None,
        "--classifier-epochs",
        help="Epochs of the judge CNN (cached in RUN_DIR/eval/) [default: 8 fer2013, "
        "40 taiwanese].",
    ),
    max_test: int = typer.Option(
        1000, "--max-test", help="Held-out test images to translate (seeded, class-stratified)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the classifier, the sample and probes."),
    yale: Path | None = typer.Option(
        None, "--yale", help="Yale Face Database folder (subjectNN.<condition> files)."
    ),
    photos: list[Path] | None = typer.Option(
        None,
        "--photo",
        help="Photo or folder to edit into every expression (repeatable): a contact sheet "
        "RUN_DIR/eval/expressions_photos.png through the plugin's preprocessing.",
    ),
    judge_fer: Path | None = typer.Option(
        None,
        "--judge-fer",
        help="Taiwanese runs: also train the judge on this FER2013 folder's train split "
        "(grey tiled to RGB, 500 per expression).",
    ),
    judge: str = typer.Option(
        "auto",
        "--judge",
        help="The expression judge: vgg-probe (linear probe on ImageNet VGG16 features), "
        "vgg-landmarks (the same + dlib's 68 landmarks), cnn (small CNN from scratch) or auto "
        "(vgg-landmarks on taiwanese runs, vgg-probe there without dlib; cnn on fer2013).",
    ),
    identity: bool = typer.Option(
        True, "--identity/--no-identity", help="dlib identity kept (taiwanese runs)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON result on stdout."),
) -> None:
    """Translate held-out images (FER2013 test, or the held-out performers of a taiwanese
    run; and Yale faces) to every expression and ask a judge trained on real images whether
    each result shows it; plus the classifier's own accuracy, reconstruction and copy-input
    baselines, y←c leakage, all beside chance, and (taiwanese) dlib identity kept.

    Writes RUN_DIR/eval_expressions.json and RUN_DIR/eval/expressions_grid.png; prints a
    markdown summary.
    """
    from lordfx.errors import UsageError
    from lordfx_trainer.evaluation.expr_report import (
        RESULT_FILE,
        ExpressionEvalSettings,
        evaluate_expressions,
    )
    from lordfx_trainer.evaluation.expr_summary import summary_markdown

    if (classifier_epochs is not None and classifier_epochs < 1) or max_test < 1:
        raise UsageError("--classifier-epochs and --max-test must be >= 1")
    settings = ExpressionEvalSettings(
        classifier_epochs=classifier_epochs,
        max_test=max_test,
        seed=seed,
        yale=str(yale) if yale is not None else None,
        photos=tuple(str(p) for p in photos or ()),
        identity=identity,
        judge_fer=str(judge_fer) if judge_fer is not None else None,
        judge=judge,
    )
    result = evaluate_expressions(run_dir, settings)
    typer.echo(f"wrote {Path(run_dir) / RESULT_FILE}", err=True)
    typer.echo(json.dumps(result, indent=2) if as_json else summary_markdown(result))
