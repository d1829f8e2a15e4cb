"""CLI commands added by the trainer plugin. Heavy imports happen inside the functions."""

from __future__ import annotations

import typer


def presets_command() -> None:
    """List the training presets and what each one reproduces."""
    from lordfx_trainer.presets import available_presets, preset_header

    for name, path in available_presets().items():
        typer.echo(f"{name:<18} {preset_header(path)}")
