"""lordfx plugin for shoes (edges2shoes): class = style cluster or "edges", content = shape.

``lordfx shoes from-edges EDGES --style REF`` draws the shoe of an edge map (or a hand-drawn
sketch) in REF's style, ``--cluster N`` in a learned style, ``--variations N`` in N styles;
``lordfx shoes to-edges PHOTO`` goes back; ``lordfx shoes styles`` lists the clusters
(paper §4, Figure 5). ``lordfx.load("shoes")`` returns a
:class:`lordfx_shoes.editor.ShoesEditor`. Module import stays light: torch is imported only
when a command runs.
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
            name="shoes",
            description="Shoes: an edge map drawn in a chosen shoe's style, or a shoe's edge map",
            image_size=64,
            channels=3,
            class_label="style cluster",
            content_label="shape",
            bundle=MODEL_DIR,
            preprocessor="lordfx_shoes.preprocess:make_preprocessor",
            editor="lordfx_shoes.editor:ShoesEditor",
            train_hint=(
                "Train one with `lordfx cluster-shoes PATH/TO/edges2shoes_mix --out CLUSTERS` "
                "and `lordfx train shoes64-cpu --data CLUSTERS`."
            ),
        )
    )


@hookimpl
def register_commands(app: typer.Typer) -> None:
    from lordfx_shoes.cli import app as shoes_app

    app.add_typer(shoes_app, name="shoes")
