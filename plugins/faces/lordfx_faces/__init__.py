"""lordfx plugin for faces: class = identity, content = head pose and expression.

``lordfx swap-pose FACE REF`` keeps FACE's identity and takes REF's pose (paper's CelebA
setting). Module import stays light: the CLI verb imports torch/cv2 only when it runs.
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
            name="faces",
            description="Face photos: keep the identity of one face, take the pose of another",
            image_size=64,
            channels=3,
            class_label="identity",
            content_label="head pose and expression",
            bundle=MODEL_DIR,
            preprocessor="lordfx_faces.preprocess:make_preprocessor",
            train_hint="Train one with `lordfx train faces64-cpu --data PATH/TO/shared/data` (celeba_faces + lfw_faces).",
        )
    )


@hookimpl
def register_commands(app: typer.Typer) -> None:
    from lordfx_faces.cli import swap_pose_command

    app.command("swap-pose")(swap_pose_command)
