"""Finding and reading preset TOML files (flat key = value recipes, see presets/)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from lordfx.errors import UsageError


def preset_dirs() -> list[Path]:
    """Where named presets are looked up, in order: $LORDFX_PRESETS, then the repo's presets/."""
    dirs = [Path(p) for p in os.environ.get("LORDFX_PRESETS", "").split(os.pathsep) if p]
    repo = Path(__file__).resolve().parents[2] / "presets"
    if repo.is_dir():
        dirs.append(repo)
    return dirs


def available_presets() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in preset_dirs():
        for f in sorted(d.glob("*.toml")):
            found.setdefault(f.stem, f)
    return found


def find_preset(name_or_path: str) -> Path:
    """A preset name (``cars3d``) or a path to a TOML file."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise UsageError(f"preset file {p} does not exist")
        return p
    presets = available_presets()
    if name_or_path not in presets:
        valid = ", ".join(sorted(presets)) or "(none found)"
        raise UsageError(f"unknown preset {name_or_path!r}; valid presets: {valid}")
    return presets[name_or_path]


def read_preset(path: Path) -> dict[str, Any]:
    """The flat table of a preset file; nested tables are refused (presets stay flat)."""
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML ({exc})") from None
    nested = [k for k, v in data.items() if isinstance(v, dict)]
    if nested:
        raise UsageError(f"{path}: presets are flat; found tables {nested}")
    return data


def preset_header(path: Path) -> str:
    """The first comment line of a preset (what it reproduces)."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""
