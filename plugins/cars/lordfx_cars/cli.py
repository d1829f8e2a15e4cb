"""``lordfx cars view|turntable|where``: named viewpoints of a car render.

Results come at the model's size (64²); ``--size N`` upscales them with Lanczos for display.
Heavy imports (torch) happen inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from lordfx.errors import InputError, LordfxError

#: Cars3D's views (trainer data/cars3d.py: azimuth index a is 15·a°, elevation index e is
#: 6·e°), for --help; the bundle's own view bank is what the commands use and check against.
CARS3D_AZIMUTHS = tuple(15 * a for a in range(24))
CARS3D_ELEVATIONS = (0, 6, 12, 18)

VALUES = (
    f"Cars3D views: azimuth {', '.join(map(str, CARS3D_AZIMUTHS))}°; "
    f"elevation {', '.join(map(str, CARS3D_ELEVATIONS))}°. Other angles use the nearest view."
)
SIZE_HELP = "Upscale results to SIZE x SIZE pixels (Lanczos) [default: the model's size, 64]."

app = typer.Typer(
    name="cars",
    help="Cars3D viewpoints by name: view, turntable, where.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _editor() -> Any:
    import lordfx
    from lordfx.host import get_host

    get_host().domain("cars").require_bundle()  # "no trained model yet" before any work
    editor = lordfx.load("cars")
    editor.views  # noqa: B018 - fail early, naming the bundle, when it has no view bank
    return editor


@app.command("view", help=f"The car of IMAGE seen from --azimuth/--elevation. {VALUES}")
def view_command(
    image: Path = typer.Argument(..., help="Car image (or folder of images)."),
    azimuth: float = typer.Option(..., "--azimuth", "-a", help="Degrees (wraps at 360)."),
    elevation: float = typer.Option(..., "--elevation", "-e", help="Degrees."),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Output file, or output folder when IMAGE is a folder [default: IMAGE_az<A>_el<E>.*].",
    ),
    size: int | None = typer.Option(None, "--size", min=1, help=SIZE_HELP),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Batch: keep existing outputs."
    ),
) -> None:
    from lordfx.batch import check_source, plan_batch, run_plan
    from lordfx.host import get_host
    from lordfx_cars.views import ViewBank

    check_source(image)  # names the file (and a broken symbolic link)
    # The view and every output are decided before the model loads (bank file only).
    chosen, rounded = ViewBank.from_dir(get_host().domain("cars").require_bundle()).nearest(
        azimuth, elevation
    )
    if rounded:
        typer.echo(
            f"lordfx: note: no view at azimuth {azimuth:g}°, elevation {elevation:g}°; "
            f"using the nearest: {chosen.label()}",
            err=True,
        )

    plan = plan_batch(image, output, f"az{chosen.azimuth:g}_el{chosen.elevation:g}")
    editor = _editor()

    def process(path: Path):  # noqa: ANN202
        return editor.render_views(path, [chosen], size)[0]

    report = run_plan(plan, process, skip_existing)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@app.command("turntable")
def turntable_command(
    image: Path = typer.Argument(..., help="Car image."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help=".gif or .mp4 [default: IMAGE_turntable.gif in the cwd]."
    ),
    elevation: float | None = typer.Option(
        None,
        "--elevation",
        "-e",
        help="Degrees (nearest of 0, 6, 12, 18) [default: the image's own, as `where` reads it].",
    ),
    fps: float = typer.Option(12.0, "--fps", min=0.1, max=100.0, help="Frames per second."),
    size: int | None = typer.Option(None, "--size", min=1, help=SIZE_HELP),
) -> None:
    """The car of IMAGE at every azimuth (24 frames for Cars3D), starting from the image's
    own view, as an animated GIF or an MP4 (codec mp4v: plays in VLC/ffmpeg players, not in
    most browsers)."""
    from lordfx_cars.media import check_animation_path, write_animation

    if image.is_dir():
        raise InputError(image, "is a folder; turntable takes one image")
    if not image.exists():
        raise InputError(image, "no such file")
    out = output or Path(f"{image.stem}_turntable.gif")
    check_animation_path(out, [image])
    editor = _editor()
    if elevation is not None and elevation not in editor.views.elevations:
        nearest = editor.views.nearest(0, elevation)[0].elevation
        typer.echo(
            f"lordfx: note: no views at elevation {elevation:g}°; using the nearest: {nearest:g}°",
            err=True,
        )
    frames = editor.turntable(image, elevation=elevation, size=size)
    write_animation(frames, out, fps)
    typer.echo(str(out))


@app.command("where")
def where_command(
    image: Path = typer.Argument(..., help="Car image (or folder of images)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image on stdout."),
) -> None:
    """The (azimuth, elevation) the model reads from IMAGE: the view bank's entry nearest to
    the image's content code."""
    from lordfx.imageio import iter_images

    if not image.exists():
        raise InputError(image, "no such file or folder")
    editor = _editor()
    files = iter_images(image) if image.is_dir() else [image]
    if not files:
        raise InputError(image, "folder contains no files")
    failed = 0
    for path in files:
        try:
            view = editor.where(path)
        except LordfxError as exc:
            if not image.is_dir():
                raise
            failed += 1
            typer.echo(f"lordfx: error: {exc}", err=True)
            continue
        row = {"image": str(path), **view.as_dict()}
        typer.echo(json.dumps(row) if as_json else f"{path}: {view.label()}")
    if failed:
        typer.echo(f"lordfx: error: {failed} of {len(files)} files failed", err=True)
        raise typer.Exit(1)
