"""lordfx plugin for facial expressions: class = expression, content = person, pose, light.

``lordfx expression IMG --to happy`` (the paper's RaFD setting, trained on FER2013).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lordfx import Domain, hookimpl
from lordfx.domain import package_model_dir

if TYPE_CHECKING:
    import typer

MODEL_DIR = package_model_dir(__name__)  # <package>/model/: the layout of every plugin
EXPRESSIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


@hookimpl
def register_domains(register: Callable[[Domain], None]) -> None:
    register(
        Domain(
            name="expressions",
            description="Face photos: same person and pose, another facial expression",
            image_size=64,  # a default: the editor uses the bundle's own size and channels
            channels=3,
            class_label="expression",
            content_label="identity, pose and lighting",
            class_names=EXPRESSIONS,
            bundle=MODEL_DIR,
            preprocessor="lordfx_expressions.preprocess:make_preprocessor",
            train_hint="Train one with `lordfx train expressions64-cpu --data "
            "PATH/TO/taiwanese_expressions` (or fer2013-cpu on FER2013).",
        )
    )


@hookimpl
def register_commands(app: typer.Typer) -> None:
    from lordfx_expressions.cli import expression_command

    app.command("expression")(expression_command)
