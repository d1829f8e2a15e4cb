"""``lordfx package``: turn a finished run into an installable plugin distribution
(:mod:`lordfx_trainer.packaging`). Heavy imports happen inside the function."""

from __future__ import annotations

from pathlib import Path

import typer


def package_command(
    run_dir: Path = typer.Argument(..., help="A run directory written by `lordfx train`."),
    name: str = typer.Option(
        ..., "--name", help="Domain name; the distribution is lordfx-NAME, the package lordfx_NAME."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Distribution folder to write [default: ./lordfx-NAME]."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out folder."),
    class_label: str = typer.Option(
        "class", "--class-label", help="What the class factor is, e.g. 'shape'."
    ),
    content_label: str = typer.Option(
        "content", "--content-label", help="What the content factor is, e.g. 'position'."
    ),
    description: str = typer.Option("", "--description", help="One line for `lordfx plugins`."),
    data_licence: str = typer.Option(
        "", "--data-licence", help="Terms of the training images (goes into the model card)."
    ),
    version: str = typer.Option("0.1.0", "--version", help="The distribution's version."),
) -> None:
    """Write RUN_DIR's model as a plugin distribution: pyproject.toml, the domain module, the
    fp16 bundle (sha256-checked) and a MODEL_CARD.md. Install it with
    `pip install --no-build-isolation OUT` (docs/plugins.md).

    Prints the folder written.
    """
    from lordfx_trainer.packaging import DomainText, write_package

    text = DomainText(
        description=description,
        class_label=class_label,
        content_label=content_label,
        data_licence=data_licence,
        version=version,
    )
    typer.echo(str(write_package(run_dir, name, out, force, text)))
