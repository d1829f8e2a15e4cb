"""``lordfx expression``: same person, pose and lighting; another facial expression."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lordfx.errors import UsageError


def expression_command(
    image: Path | None = typer.Argument(None, help="Photo (or folder of photos) to edit."),
    to: str | None = typer.Option(None, "--to", help="Target expression (see --list)."),
    strength: float = typer.Option(
        1.0,
        "--strength",
        min=0.0,
        max=1.0,
        help="0 keeps the photo's own expression code, 1 uses the target's fully.",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Output file, or output folder when IMAGE is a folder [default: IMAGE_<to>.*].",
    ),
    face_index: int | None = typer.Option(
        None,
        "--face",
        min=0,
        help="Which detected face to edit (see --list-faces) [default: largest].",
    ),
    list_faces: bool = typer.Option(
        False, "--list-faces", help="Print the detected faces of IMAGE and exit."
    ),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Batch: keep existing outputs."
    ),
    list_names: bool = typer.Option(False, "--list", help="Print the expression names and exit."),
    replace: bool = typer.Option(
        False, "--replace", help="The same as --render generate (older spelling)."
    ),
    render: str = typer.Option(
        "warp",
        "--render",
        help="warp: move the photo's own pixels as the model's edit moves its reconstruction, "
        "plus its low-frequency change (keeps the photo's detail); generate: paste the "
        "model's face.",
    ),
) -> None:
    """Change the facial expression of IMAGE to --to NAME."""
    from lordfx.batch import check_source, plan_batch, run_plan
    from lordfx.host import get_host

    domain = get_host().domain("expressions")
    if list_names:
        for name in domain.class_names:
            typer.echo(name)
        return
    if image is None:
        raise UsageError("missing argument IMAGE (see 'lordfx expression --help')")
    if list_faces:  # detection only: needs no trained model
        _print_faces(image, domain.make_preprocessor().with_face_index(face_index))
        return
    if to is None:
        raise UsageError("missing option --to NAME; valid: " + ", ".join(domain.class_names))
    if to not in domain.class_names:
        raise UsageError(f"unknown expression {to!r}; valid: {', '.join(domain.class_names)}")
    from lordfx.render import check_render

    render = "generate" if replace else check_render(render)
    check_source(image)  # names the file (and a broken symbolic link)
    # Outputs are checked (a usage error) before the model is loaded.
    plan = plan_batch(image, output, to)
    domain.require_bundle()
    import lordfx

    editor = lordfx.load("expressions")

    def process(path: Path):  # noqa: ANN202
        return editor.set_expression_file(
            path, to, strength=strength, face_index=face_index, render=render
        )

    report = run_plan(plan, process, skip_existing)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _print_faces(image: Path, pre: Any) -> None:
    """One JSON line per face detected in ``image`` (``--list-faces``); ``read_image``
    names the file when it is missing, a folder or not an image."""
    import json

    from lordfx.imageio import read_image

    for row in pre.list_faces(read_image(image)):
        typer.echo(json.dumps(row))
