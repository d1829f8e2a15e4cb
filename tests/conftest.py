"""Shared fixtures: a fresh plugin host per test, paths to ../shared/data (optional)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lordfx.host import reset_host

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _fresh_host(monkeypatch):
    """Each test discovers plugins anew, in non-strict mode unless it says otherwise."""
    monkeypatch.delenv("LORDFX_PLUGINS_STRICT", raising=False)
    reset_host()
    yield
    reset_host()


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip the test when it is absent (CI without the datasets)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA
