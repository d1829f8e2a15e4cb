"""The plugin host: discovery, isolation of broken plugins, duplicate names, strict mode."""

from __future__ import annotations

import sys
import types
from importlib import metadata

import pytest
import typer

from lordfx import Domain, hookimpl
from lordfx.errors import PluginError, UsageError
from lordfx.host import ENTRY_POINT_GROUP, Host

BUILTIN_DOMAINS = {"faces", "expressions", "cars", "shoes"}


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    for key, value in attrs.items():
        setattr(mod, key, value)
    return mod


def _domain(name: str) -> Domain:
    return Domain(name, "test domain", 32, 3, "shape", "rotation")


def _ep(name: str, value: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_builtin_plugins_are_discovered_from_entry_points():
    host = Host()
    host.load_entry_points()
    assert BUILTIN_DOMAINS <= set(host.domains)
    assert {"faces", "expressions", "cars", "shoes", "trainer"} <= set(host.plugins)
    assert host.domains["faces"].plugin == "faces"
    assert host.plugins["faces"].version == "0.1.0"
    assert "register_domains" in host.plugins["cars"].hooks
    assert host.plugins["trainer"].hooks == ["register_commands"]
    assert host.warnings == []


def test_broken_entry_point_gives_one_warning_and_the_rest_loads(caplog):
    eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    eps.append(_ep("broken", "lordfx_no_such_module_xyz"))
    host = Host()
    with caplog.at_level("WARNING", logger="lordfx.host"):
        host.load_entry_points(eps)
    assert BUILTIN_DOMAINS <= set(host.domains)
    assert len(host.warnings) == 1
    assert "'broken'" in host.warnings[0] and "ModuleNotFoundError" in host.warnings[0]
    assert [r.getMessage() for r in caplog.records] == host.warnings


def test_strict_mode_turns_warnings_into_errors(monkeypatch):
    monkeypatch.setenv("LORDFX_PLUGINS_STRICT", "1")
    host = Host()
    with pytest.raises(PluginError, match="broken"):
        host.load_entry_points([_ep("broken", "lordfx_no_such_module_xyz")])


def test_plugin_raising_in_its_hook_is_isolated():
    @hookimpl
    def register_domains(register):
        raise RuntimeError("boom")

    host = Host()
    host.add_plugin(_module("bad_hook", register_domains=register_domains), "bad")
    host.add_plugin(
        _module("good", register_domains=hookimpl(lambda register: register(_domain("ok")))),
        "good",
    )
    assert set(host.domains) == {"ok"}
    assert host.warnings == ["plugin 'bad' failed in register_domains: RuntimeError: boom"]


def test_duplicate_domain_is_refused_naming_both_plugins():
    def plugin(name):
        return _module(name, register_domains=hookimpl(lambda register: register(_domain("dup"))))

    host = Host()
    host.add_plugin(plugin("first_mod"), "first")
    host.add_plugin(plugin("second_mod"), "second")
    assert host.domains["dup"].plugin == "first"
    assert len(host.warnings) == 1
    assert "'second'" in host.warnings[0] and "'first'" in host.warnings[0]
    strict = Host(strict=True)
    strict.add_plugin(plugin("first_mod"), "first")
    with pytest.raises(PluginError, match="'second'.*'first'"):
        strict.add_plugin(plugin("second_mod"), "second")


def test_duplicate_command_is_refused_naming_both_plugins():
    def plugin(name, text):
        @hookimpl
        def register_commands(app):
            @app.command("hello")
            def hello() -> None:
                typer.echo(text)

        return _module(name, register_commands=register_commands)

    host = Host()
    host.add_plugin(plugin("a_mod", "from a"), "a")
    host.add_plugin(plugin("b_mod", "from b"), "b")
    app = typer.Typer()
    host.register_commands(app)
    assert [c.name for c in app.registered_commands] == ["hello"]
    assert host.plugins["a"].commands == ["hello"]
    assert host.plugins["b"].commands == []
    assert "'hello'" in host.warnings[0] and "'b'" in host.warnings[0] and "'a'" in host.warnings[0]


def test_plugin_name_registered_twice_is_refused():
    host = Host()
    host.add_plugin(_module("m1"), "same")
    host.add_plugin(_module("m2"), "same")
    assert "registered twice" in host.warnings[0]


def test_unknown_domain_lists_valid_names():
    host = Host()
    host.load_entry_points()
    with pytest.raises(UsageError, match="valid domains: cars, expressions, faces, shoes"):
        host.domain("planes")


def test_domain_validation():
    with pytest.raises(ValueError, match="divisible by 16"):
        Domain("x", "d", 40, 3, "a", "b")
    with pytest.raises(ValueError, match="channels"):
        Domain("x", "d", 32, 2, "a", "b")
    with pytest.raises(ValueError, match="alphanumeric"):
        Domain("bad name", "d", 32, 3, "a", "b")


def test_entry_point_modules_do_not_import_torch():
    """`lordfx --help` must stay fast: building the CLI may not pull torch or the trainer."""
    import subprocess

    code = (
        "import sys, lordfx.cli; lordfx.cli.build_app(); "
        "heavy = [m for m in ('torch', 'torchvision', 'lpips', 'cv2') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
