"""One lordfx editor per (domain, device), loaded on first use and kept: a ComfyUI graph
runs the same node many times, and loading a bundle (sha256 check included) is the slow part."""

from __future__ import annotations

import threading
from typing import Any

_EDITORS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def editor(domain: str) -> Any:
    """``lordfx.load(domain)``, cached. Errors say which domain and what to do (no plugin,
    or a plugin without a trained model: lordfx's own message)."""
    import lordfx

    key = (domain, device())
    with _LOCK:
        if key not in _EDITORS:
            _EDITORS[key] = lordfx.load(domain, device=key[1])
        return _EDITORS[key]


def clear() -> None:
    """Forget every loaded editor (a new bundle was installed; tests)."""
    with _LOCK:
        _EDITORS.clear()


def domain_names(with_model: bool = False) -> list[str]:
    """The installed lordfx domains (cheap: no bundle is loaded)."""
    from lordfx.host import get_host

    domains = get_host().domains.values()
    return sorted(d.name for d in domains if d.has_model or not with_model)


def class_names(domain: str) -> list[str]:
    from lordfx.host import get_host

    dom = get_host().domains.get(domain)
    return list(dom.class_names) if dom is not None else []
