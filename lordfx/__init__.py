"""lordfx: image editing with LORD (Gabbay & Hoshen, ICLR 2020).

``import lordfx`` stays light (no torch, torchvision, lpips or trainer import); models load
on first use through :func:`load`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lordfx.domain import Domain
from lordfx.errors import InputError, LordfxError, NoModelError, PluginError, UsageError
from lordfx.hookspecs import hookimpl

if TYPE_CHECKING:
    from lordfx.api import Editor

__version__ = "0.1.0"
__all__ = [
    "Domain",
    "InputError",
    "LordfxError",
    "NoModelError",
    "PluginError",
    "UsageError",
    "__version__",
    "hookimpl",
    "load",
]


def load(domain: str, device: str = "cpu") -> Editor:
    """Load the trained model of ``domain`` (e.g. ``"faces"``) as an :class:`~lordfx.api.Editor`.

    Raises :class:`NoModelError` when the domain's plugin has no trained bundle yet.
    """
    from lordfx.host import get_host

    dom = get_host().domain(domain)
    return dom.editor_class().from_domain(dom, device=device)
