"""``lordfx shoes from-edges|to-edges|styles``: edge map → shoe in a chosen style, and back.

Results have the input's size. Heavy imports (torch) happen inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from lordfx.errors import InputError, UsageError

app = typer.Typer(
    name="shoes",
    help="Edge maps to shoes in a chosen style (paper Figure 5), shoes to edge maps.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _domain() -> Any:
    from lordfx.host import get_host

    return get_host().domain("shoes")


def _editor() -> Any:
    import lordfx

    _domain().require_bundle()  # "no trained model yet" before the model loads
    return lordfx.load("shoes")


@app.command("from-edges")
def from_edges_command(
    edges: Path = typer.Argument(..., help="Edge map or sketch (or a folder of them)."),
    style: Path | None = typer.Option(
        None, "--style", "-s", help="Shoe photo whose style (colour, material) to use."
    ),
    cluster: int | None = typer.Option(
        None, "--cluster", "-c", min=0, help="Style cluster number (see `lordfx shoes styles`)."
    ),
    variations: int | None = typer.Option(
        None,
        "--variations",
        "-n",
        min=1,
        help="Write one row: the normalised edge map and its shoe in the N largest styles.",
    ),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Output file, or output folder when EDGES is a folder [default: EDGES_shoe.*].",
    ),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Batch: keep existing outputs."
    ),
) -> None:
    """A shoe with the shape of EDGES in the style of --style REF or --cluster N (the
    result has EDGES' size; -v prints how a hand-drawn sketch was normalised)."""
    from lordfx.batch import check_source, plan_batch, run_plan

    chosen = sum(x is not None for x in (style, cluster, variations))
    if chosen != 1:
        raise UsageError("give exactly one of --style REF, --cluster N and --variations N")
    check_source(edges)
    if style is not None and not style.is_file():
        raise InputError(
            style, "no such file" if not style.exists() else "--style must be an image file"
        )
    if variations is not None:
        suffix = f"styles{variations}"
    else:
        suffix = "shoe" if style is not None else f"style{cluster:02d}"
    # Outputs are checked (a usage error) before the model is loaded.
    plan = plan_batch(edges, output, suffix, extra_inputs=(style,) if style is not None else ())
    editor = _editor()
    if variations is not None:

        def process(path: Path):  # noqa: ANN202
            return editor.variations(path, variations)

    else:
        code = editor.style_code(style) if style is not None else editor.cluster_code(cluster)

        def process(path: Path):  # noqa: ANN202
            return editor.from_edges(path, style=code)

    report = run_plan(plan, process, skip_existing)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@app.command("to-edges")
def to_edges_command(
    photo: Path = typer.Argument(..., help="Shoe photo (or a folder of them)."),
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Output file, or output folder when PHOTO is a folder [default: PHOTO_edges.*].",
    ),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Batch: keep existing outputs."
    ),
) -> None:
    """The edge map of a shoe photo: its shape rendered with the edge class's code."""
    from lordfx.batch import check_source, plan_batch, run_plan

    check_source(photo)
    plan = plan_batch(photo, output, "edges")
    report = run_plan(plan, _editor().to_edges, skip_existing)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@app.command("styles")
def styles_command(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
) -> None:
    """List the style clusters of the trained model (number, size, mean colour)."""
    from lordfx.bundle import read_bundle_config

    info = read_bundle_config(_domain().require_bundle())
    styles = info.get("styles") or []
    if as_json:
        typer.echo(json.dumps(styles, indent=2))
        return
    for s in styles:
        r, g, b = s["mean_rgb"]
        typer.echo(
            f"{s['id']:>3}  {s['name']}  {s['count']:>4} training photos  "
            f"mean colour #{r:02x}{g:02x}{b:02x} ({colour_name((r, g, b))})"
        )


def colour_name(rgb: tuple[int, int, int]) -> str:
    """A coarse name for a mean colour (grey levels by value, hues by 30° sectors centred
    on red at 0°; dull dark reds and oranges are browns, as shoe leather mostly is, and pale
    reds pink)."""
    import colorsys

    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    if s < 0.2 or v < 0.2:
        return "black" if v < 0.25 else "dark grey" if v < 0.5 else "grey" if v < 0.8 else "white"
    shade = "dark " if v < 0.45 else "light " if v > 0.85 and s < 0.45 else ""
    hues = ("red", "orange", "yellow", "yellow-green", "green", "green", "cyan", "blue", "blue",
            "purple", "magenta", "pink")  # fmt: skip
    hue = hues[int(h * 12 + 0.5) % 12]
    if hue == "orange" and v < 0.7 or hue == "red" and v < 0.7 and s < 0.5:
        hue = "brown"
    elif hue == "red" and s < 0.5:
        hue = "pink"  # a pale red
    return shade + hue
