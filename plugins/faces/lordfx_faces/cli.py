"""``lordfx swap-pose``: identity of FACE, head pose and expression of REF."""

from __future__ import annotations

from pathlib import Path

import typer

from lordfx.errors import InputError, UsageError


def swap_pose_command(
    face: Path = typer.Argument(..., help="Photo (or folder of photos) whose identity to keep."),
    ref: Path | None = typer.Argument(
        None, help="Photo whose head pose and expression to take (not needed with --list-faces)."
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Output file, or output folder when FACE is a folder [default: FACE_swap-pose.*].",
    ),
    face_index: int | None = typer.Option(
        None,
        "--face",
        min=0,
        help="Which detected face to edit (see --list-faces) [default: largest].",
    ),
    list_faces: bool = typer.Option(
        False, "--list-faces", help="Print the detected faces and exit."
    ),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Batch: keep existing outputs."
    ),
    render: str = typer.Option(
        "warp",
        "--render",
        help="warp: move FACE's own pixels at the photo's resolution as the model moves its "
        "reconstruction (sharp); generate: paste the model's pixels (its resolution).",
    ),
    align: str = typer.Option(
        "auto",
        "--align",
        help="Where a tilted face's eye line comes from: haar (OpenCV's eye cascade), dlib5 "
        "(dlib's 5-point landmarks, more accurate; pip install 'lordfx-faces[landmarks]') or "
        "auto (dlib5 when installed, else haar).",
    ),
) -> None:
    """Keep the identity of FACE and take the head pose and expression of REF."""
    from lordfx.batch import check_source, plan_batch, run_plan
    from lordfx.host import get_host
    from lordfx_faces.detect import check_aligner

    check_source(face)  # names the file (and a broken symbolic link)
    check_aligner(align)
    domain = get_host().domain("faces")
    if list_faces:  # detection only: needs no trained model
        import json

        from lordfx.imageio import read_image

        pre = domain.make_preprocessor().with_align(align)
        for row in pre.list_faces(read_image(face)):
            typer.echo(json.dumps(row))
        return
    if ref is None:
        raise UsageError("missing argument REF (see 'lordfx swap-pose --help')")
    from lordfx.render import check_render

    check_render(render)
    if not ref.is_file():
        raise InputError(ref, "no such file" if not ref.exists() else "REF must be an image file")
    # Outputs are checked (a usage error) before the model is loaded.
    plan = plan_batch(face, output, "swap-pose", extra_inputs=(ref,))
    domain.require_bundle()
    import lordfx

    editor = lordfx.load("faces")
    editor.pre = editor.pre.with_align(align)
    ref_codes = editor.encode_content_file(ref)

    def process(path: Path):  # noqa: ANN202
        return editor.swap_pose_file(path, ref_codes, face_index=face_index, render=render)

    report = run_plan(plan, process, skip_existing)
    if report.exit_code:
        raise typer.Exit(report.exit_code)
