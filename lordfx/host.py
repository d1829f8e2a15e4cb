"""The plugin host: discovers plugins through entry points and collects what they register.

pluggy does not isolate plugins from each other, so each entry point is loaded and each of
its hooks is called inside its own try/except: a broken plugin costs one warning line and
everything else keeps working. ``LORDFX_PLUGINS_STRICT=1`` turns those warnings into errors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import TYPE_CHECKING, Any

import pluggy

from lordfx import hookspecs
from lordfx.domain import Domain
from lordfx.errors import PluginError, UsageError

if TYPE_CHECKING:
    import typer

log = logging.getLogger("lordfx.host")
ENTRY_POINT_GROUP = "lordfx"


@dataclass
class PluginInfo:
    """What ``lordfx plugins`` reports about one loaded plugin."""

    name: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


def strict_from_env() -> bool:
    return os.environ.get("LORDFX_PLUGINS_STRICT", "").strip().lower() in {"1", "true", "yes"}


class Host:
    """Holds the plugin manager, the loaded plugins and the domains they registered."""

    def __init__(self, strict: bool | None = None) -> None:
        self.strict = strict_from_env() if strict is None else strict
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.domains: dict[str, Domain] = {}
        self.warnings: list[str] = []

    # -- problems -------------------------------------------------------------------------
    def _problem(self, message: str) -> None:
        if self.strict:
            raise PluginError(message)
        self.warnings.append(message)
        log.warning(message)

    # -- loading --------------------------------------------------------------------------
    def load_entry_points(self, entry_points: Iterable[metadata.EntryPoint] | None = None) -> None:
        """Load every entry point of the ``lordfx`` group, each in isolation."""
        if entry_points is None:
            entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
        for ep in sorted(entry_points, key=lambda e: e.name):
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is the plugin's
                self._problem(f"plugin {ep.name!r} ({ep.value}) failed to load: {_short(exc)}")
                continue
            dist = getattr(ep, "dist", None)
            version = dist.version if dist is not None else "unknown"
            self.add_plugin(plugin, ep.name, version)

    def add_plugin(self, plugin: object, name: str, version: str = "unknown") -> None:
        """Register one plugin object/module and collect its domains."""
        if name in self.plugins:
            self._problem(f"plugin name {name!r} is registered twice; keeping the first")
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001 - pluggy validation errors
            self._problem(f"plugin {name!r} is not a valid lordfx plugin: {_short(exc)}")
            return
        hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
        module = getattr(plugin, "__name__", type(plugin).__name__)
        self.plugins[name] = PluginInfo(name=name, version=version, module=module, hooks=hooks)
        for impl in self.pm.hook.register_domains.get_hookimpls():
            if impl.plugin_name == name:
                self._call(name, "register_domains", impl.function, self._domain_registrar(name))

    def _domain_registrar(self, plugin_name: str) -> Any:
        def register(domain: Domain) -> None:
            if not isinstance(domain, Domain):
                raise TypeError(f"register() takes a lordfx.Domain, got {type(domain).__name__}")
            existing = self.domains.get(domain.name)
            if existing is not None:
                self._problem(
                    f"domain {domain.name!r} from plugin {plugin_name!r} is already registered "
                    f"by plugin {existing.plugin!r}; keeping {existing.plugin!r}"
                )
                return
            self.domains[domain.name] = replace(domain, plugin=plugin_name)
            self.plugins[plugin_name].domains.append(domain.name)

        return register

    def _call(self, plugin_name: str, hook: str, function: Any, *args: Any) -> None:
        try:
            function(*args)
        except PluginError:
            raise
        except Exception as exc:  # noqa: BLE001 - isolate plugins from each other
            self._problem(f"plugin {plugin_name!r} failed in {hook}: {_short(exc)}")

    # -- commands -------------------------------------------------------------------------
    def register_commands(self, app: typer.Typer) -> None:
        """Let every plugin add its commands; refuse names that are already taken."""
        owners = {_command_name(c): "lordfx" for c in app.registered_commands}
        owners.update({g.name: "lordfx" for g in app.registered_groups if g.name})
        for impl in self.pm.hook.register_commands.get_hookimpls():
            name = impl.plugin_name
            n_cmd, n_grp = len(app.registered_commands), len(app.registered_groups)
            self._call(name, "register_commands", impl.function, app)
            new_cmds = app.registered_commands[n_cmd:]
            new_groups = app.registered_groups[n_grp:]
            del app.registered_commands[n_cmd:]
            del app.registered_groups[n_grp:]
            for info, names in [(c, _command_name(c)) for c in new_cmds] + [
                (g, g.name) for g in new_groups
            ]:
                if names in owners:
                    self._problem(
                        f"command {names!r} from plugin {name!r} is already registered by "
                        f"{'the lordfx core' if owners[names] == 'lordfx' else repr(owners[names])}"
                        f"; keeping the first"
                    )
                    continue
                owners[names] = name
                target = app.registered_groups if info in new_groups else app.registered_commands
                target.append(info)
                if name in self.plugins:
                    self.plugins[name].commands.append(names)

    # -- queries --------------------------------------------------------------------------
    def domain(self, name: str) -> Domain:
        """The domain called ``name``; the error lists the valid names."""
        try:
            return self.domains[name]
        except KeyError:
            valid = ", ".join(sorted(self.domains)) or "(none: no plugin registered a domain)"
            raise UsageError(f"unknown domain {name!r}; valid domains: {valid}") from None

    def summary(self) -> dict[str, Any]:
        """JSON-ready view of plugins, domains and warnings (``lordfx plugins --json``)."""
        return {
            "plugins": [
                {
                    "name": p.name,
                    "version": p.version,
                    "module": p.module,
                    "hooks": p.hooks,
                    "domains": p.domains,
                    "commands": p.commands,
                }
                for p in sorted(self.plugins.values(), key=lambda p: p.name)
            ],
            "domains": [d.summary() | {"plugin": d.plugin} for d in self.domains.values()],
            "warnings": list(self.warnings),
        }


def _command_name(info: Any) -> str:
    if info.name:
        return info.name
    return info.callback.__name__.lower().replace("_", "-")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


_HOST: Host | None = None


def get_host() -> Host:
    """The process-wide host, loaded from installed entry points on first use."""
    global _HOST
    if _HOST is None:
        host = Host()
        host.load_entry_points()
        _HOST = host
    return _HOST


def reset_host() -> None:
    """Forget the process-wide host (tests)."""
    global _HOST
    _HOST = None
