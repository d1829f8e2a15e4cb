"""What a plugin declares about an image domain. Light: no torch import here."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lordfx.errors import NoModelError

#: The layout every plugin package follows, built-in or written by ``lordfx package``:
#: ``lordfx_<name>/__init__.py`` (the hooks), ``model/`` (the bundle), ``MODEL_CARD.md``.
MODEL_DIRNAME = "model"
MODEL_CARD = "MODEL_CARD.md"


def package_model_dir(package: str) -> Path:
    """The bundle directory of plugin package ``package``: ``<package>/model/``.

    A plugin's ``__init__`` calls ``package_model_dir(__name__)`` and passes the result as
    :attr:`Domain.bundle`; the directory ships as package data. It may be absent (the plugin
    has no trained model yet). Finds the package without importing anything heavy.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"{package!r} is not an importable package (a plugin is a package)")
    return Path(next(iter(spec.submodule_search_locations))) / MODEL_DIRNAME


@dataclass(frozen=True)
class Domain:
    """An image domain served by a plugin.

    ``class_label``/``content_label`` say what LORD's two factors mean here (e.g. class =
    "identity", content = "pose and expression"). ``bundle`` is the directory of the trained
    model shipped with the plugin (see ``lordfx.bundle``); ``None`` or a directory without
    ``config.json`` means the domain has no trained model yet. ``preprocessor`` is an import
    path ``"module:attr"`` of a zero-argument factory returning a
    :class:`lordfx.preprocess.Preprocessor`; it is imported only when an edit runs.
    ``editor`` is an import path ``"module:Class"`` of a :class:`lordfx.api.Editor` subclass
    with the domain's own edits (e.g. cars: ``view``); :func:`lordfx.load` returns one.
    """

    name: str
    description: str
    image_size: int
    channels: int
    class_label: str
    content_label: str
    class_names: tuple[str, ...] = ()
    bundle: Path | None = None
    preprocessor: str | None = None
    train_hint: str = ""
    editor: str | None = None
    plugin: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"domain name {self.name!r} must be alphanumeric (- and _ allowed)")
        if self.image_size <= 0 or self.image_size % 16:
            raise ValueError(
                f"domain {self.name}: image_size {self.image_size} not divisible by 16"
            )
        if self.channels not in (1, 3):
            raise ValueError(f"domain {self.name}: channels must be 1 or 3, got {self.channels}")

    @property
    def has_model(self) -> bool:
        return self.bundle is not None and (Path(self.bundle) / "config.json").is_file()

    def require_bundle(self) -> Path:
        """The bundle directory, or a :class:`NoModelError` that says what to do."""
        if not self.has_model:
            hint = f" {self.train_hint}" if self.train_hint else ""
            raise NoModelError(
                f"the {self.name} plugin has no trained model yet: no bundle at "
                f"{self.bundle or '(none declared)'}.{hint}"
            )
        return Path(self.bundle)  # type: ignore[arg-type]

    def make_preprocessor(self, image_size: int | None = None) -> Any:
        """Instantiate the domain's preprocessor (imported lazily) for ``image_size``
        (the bundle's size when it differs from the domain's default)."""
        size = image_size or self.image_size
        if self.preprocessor is None:
            from lordfx.preprocess import ResizePreprocessor

            return ResizePreprocessor(size, self.channels)
        module_name, _, attr = self.preprocessor.partition(":")
        factory = getattr(importlib.import_module(module_name), attr)
        return factory(image_size=size)

    def editor_class(self) -> Any:
        """The domain's :class:`lordfx.api.Editor` subclass (imported lazily), or Editor."""
        if self.editor is None:
            from lordfx.api import Editor

            return Editor
        module_name, _, attr = self.editor.partition(":")
        return getattr(importlib.import_module(module_name), attr)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (used by ``lordfx plugins --json``)."""
        return {
            "name": self.name,
            "description": self.description,
            "image_size": self.image_size,
            "channels": self.channels,
            "class_label": self.class_label,
            "content_label": self.content_label,
            "class_names": list(self.class_names),
            "has_model": self.has_model,
            "bundle": str(self.bundle) if self.bundle else None,
        }
