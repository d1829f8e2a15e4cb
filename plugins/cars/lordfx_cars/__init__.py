"""lordfx plugin for Cars3D-style car renders: class = car model, content = viewpoint.

``lordfx cars view|turntable|where`` name viewpoints through the bundle's view bank (mean
content code per Cars3D (azimuth, elevation)); ``lordfx.load("cars")`` returns a
:class:`lordfx_cars.editor.CarsEditor` with ``view``, ``turntable`` and ``where``.
Module import stays light: torch is imported only when a command runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lordfx import Domain, hookimpl
from lordfx.domain import package_model_dir

if TYPE_CHECKING:
    import typer

MODEL_DIR = package_model_dir(__name__)  # <package>/model/: the layout of every plugin


@hookimpl
def register_domains(register: Callable[[Domain], None]) -> None:
    register(
        Domain(
            name="cars",
            description="Cars3D renders: keep the car model of one image, take the view of another",
            image_size=64,
            channels=3,
            class_label="car model",
            content_label="viewpoint (azimuth, elevation)",
            bundle=MODEL_DIR,
            editor="lordfx_cars.editor:CarsEditor",
            train_hint=(
                "Train one with `lordfx train cars3d64-cpu --data PATH/TO/cars3d` "
                "(the bundled model's recipe; `cars3d` is the paper's 200 + 200 epochs)."
            ),
        )
    )


@hookimpl
def register_commands(app: typer.Typer) -> None:
    from lordfx_cars.cli import app as cars_app

    app.add_typer(cars_app, name="cars")
