"""lordfx plugin for Cars3D-style car renders: class = car model, content = viewpoint."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lordfx import Domain, hookimpl

MODEL_DIR = Path(__file__).parent / "model"


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
            train_hint="Train one with `lordfx train cars3d --data PATH/TO/cars3d`.",
        )
    )
