"""Hook specifications of the lordfx plugin system (pluggy project ``lordfx``).

A plugin is any module or object exposing functions marked with :data:`hookimpl`; it is found
through the entry-point group ``lordfx``::

    [project.entry-points.lordfx]
    myplugin = "lordfx_myplugin"

Hooks receive a *register* callback (or the CLI app) rather than returning values, so one
plugin may register several things and the host knows which plugin registered each one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import typer

    from lordfx.domain import Domain

PROJECT = "lordfx"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_domains(register: Callable[[Domain], None]) -> None:
    """Declare image domains by calling ``register(Domain(...))`` once per domain.

    A domain name already taken by another plugin is refused with an error naming both
    plugins. Keep this cheap: it runs on every CLI start; do not import torch here.
    """


@hookspec
def register_commands(app: typer.Typer) -> None:
    """Add CLI commands to the ``lordfx`` app, e.g. ``@app.command("swap-pose")``.

    A command name already taken is refused with an error naming both plugins. Import heavy
    modules (torch, cv2) inside the command functions, not at module level, so that
    ``lordfx --help`` stays fast.
    """
