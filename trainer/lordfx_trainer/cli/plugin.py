"""The trainer's lordfx plugin: adds its commands through the same hook as any plugin.

Kept light: the command functions import torch only when they run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lordfx import hookimpl

if TYPE_CHECKING:
    import typer


@hookimpl
def register_commands(app: typer.Typer) -> None:
    from lordfx_trainer.cli import commands, eval_cli, export_cli

    app.command("presets")(commands.presets_command)
    app.command("train")(commands.train_command)
    app.command("weights")(commands.weights_command)
    app.command("bench")(commands.bench_command)
    app.command("bench-edit")(commands.bench_edit_command)
    app.command("ship")(commands.ship_command)
    app.command("export-data")(export_cli.export_data_command)
    app.command("export-weights")(export_cli.export_weights_command)
    app.command("eval")(eval_cli.eval_command)
    app.command("eval-faces")(eval_cli.eval_faces_command)
    app.command("eval-faces-align")(eval_cli.eval_faces_align_command)
    from lordfx_trainer.cli.eval_expressions_cli import eval_expressions_command

    app.command("eval-expressions")(eval_expressions_command)
    from lordfx_trainer.cli.cars_cli import eval_cars_command, view_bank_command

    app.command("eval-cars")(eval_cars_command)
    app.command("view-bank")(view_bank_command)
    from lordfx_trainer.cli.package_cli import package_command

    app.command("package")(package_command)
    from lordfx_trainer.cli import shoes_cli

    app.command("cluster-shoes")(shoes_cli.cluster_shoes_command)
    app.command("style-bank")(shoes_cli.style_bank_command)
    app.command("eval-shoes")(shoes_cli.eval_shoes_command)
