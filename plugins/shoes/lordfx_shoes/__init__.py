"""lordfx plugin for shoe photos (edges2shoes): class = style cluster, content = shape."""

from __future__ import annotations

from collections.abc import Callable

from lordfx import Domain, hookimpl
from lordfx.domain import package_model_dir

MODEL_DIR = package_model_dir(__name__)  # <package>/model/: the layout of every plugin


@hookimpl
def register_domains(register: Callable[[Domain], None]) -> None:
    register(
        Domain(
            name="shoes",
            description="Shoe photos: keep the style of one shoe, take the shape of another",
            image_size=64,
            channels=3,
            class_label="style cluster",
            content_label="shape",
            bundle=MODEL_DIR,
            train_hint="Train one with `lordfx train edges2shoes --data PATH/TO/edges2shoes`.",
        )
    )
