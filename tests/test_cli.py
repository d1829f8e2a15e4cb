"""The CLI through typer's runner: help, version, plugins --json, errors and exit codes."""

from __future__ import annotations

import json
import types
from importlib import metadata

import typer
from typer.testing import CliRunner

import lordfx
from lordfx import Domain, hookimpl
from lordfx.cli import build_app
from lordfx.host import ENTRY_POINT_GROUP

runner = CliRunner()


def invoke(*args: str, app: typer.Typer | None = None):
    return runner.invoke(app or build_app(), list(args))


def test_help_lists_core_and_plugin_commands():
    result = invoke("--help")
    assert result.exit_code == 0
    for cmd in ("plugins", "transfer", "swap-pose", "expression", "presets"):
        assert cmd in result.stdout


def test_no_arguments_shows_help():
    result = invoke()
    assert "Usage:" in result.stdout
    assert result.exit_code == 2


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"lordfx {lordfx.__version__}"


def test_plugins_json_schema():
    result = invoke("plugins", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert set(data) == {"plugins", "domains", "warnings"}
    names = {p["name"] for p in data["plugins"]}
    assert {"faces", "expressions", "cars", "shoes", "trainer"} <= names
    for p in data["plugins"]:
        assert set(p) == {"name", "version", "module", "hooks", "domains", "commands"}
    domains = {d["name"]: d for d in data["domains"]}
    assert set(domains) >= {"faces", "expressions", "cars", "shoes"}
    for d in domains.values():
        assert isinstance(d["has_model"], bool)
        assert d["image_size"] % 16 == 0 and d["channels"] in (1, 3)
    assert domains["expressions"]["class_names"][3] == "happy"
    assert "swap-pose" in next(p for p in data["plugins"] if p["name"] == "faces")["commands"]


def test_plugins_human_readable():
    result = invoke("plugins")
    assert result.exit_code == 0
    assert "domain faces:" in result.stdout


def test_usage_errors_exit_2_with_one_line():
    for args in (["--bogus"], ["swap-pose"], ["transfer", "a.png"], ["no-such-command"]):
        result = invoke(*args)
        assert result.exit_code == 2, args
        assert result.stderr.startswith("lordfx: error: ")
        assert len(result.stderr.strip().splitlines()) == 1


def test_invalid_option_values_exit_2(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(b"x")
    result = invoke("expression", str(img), "--to", "grumpy")
    assert result.exit_code == 2
    assert "valid: angry, disgust, fear, happy, neutral, sad, surprise" in result.stderr
    result = invoke("expression", str(img), "--to", "happy", "--strength", "1.5")
    assert result.exit_code == 2
    result = invoke("transfer", "--domain", "planes", "a.png", "b.png")
    assert result.exit_code == 2
    assert "valid domains:" in result.stderr


def test_expression_list_works_without_a_model():
    result = invoke("expression", "--list")
    assert result.exit_code == 0
    assert result.stdout.split() == list(
        ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    )


def test_domain_without_model_says_so(tmp_path, monkeypatch):
    from lordfx.host import get_host

    host = get_host()
    for name in ("cars", "faces"):
        dom = host.domains[name]
        monkeypatch.setitem(
            host.domains,
            name,
            Domain(
                **{
                    **{f: getattr(dom, f) for f in dom.__dataclass_fields__},
                    "bundle": tmp_path / "none",
                }
            ),
        )
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"x")
    b.write_bytes(b"x")
    result = invoke("transfer", "--domain", "cars", str(a), str(b), app=build_app())
    assert result.exit_code == 1
    assert "the cars plugin has no trained model yet" in result.stderr
    result = invoke("swap-pose", str(a), str(b), app=build_app())
    assert result.exit_code == 1
    assert "the faces plugin has no trained model yet" in result.stderr


def test_missing_input_file_is_named(tmp_path):
    ref = tmp_path / "ref.png"
    ref.write_bytes(b"x")
    result = invoke("swap-pose", str(tmp_path / "missing.jpg"), str(ref))
    assert result.exit_code == 1
    assert "missing.jpg: no such file" in result.stderr


def _third_party_plugin() -> types.ModuleType:
    mod = types.ModuleType("lordfx_thirdparty_test")

    @hookimpl
    def register_domains(register):
        register(Domain("glyphs", "test glyphs", 32, 1, "glyph", "rotation"))

    @hookimpl
    def register_commands(app):
        @app.command("glyph-count")
        def glyph_count() -> None:
            """Print how many glyph domains exist."""
            from lordfx.host import get_host

            typer.echo(str(sum(d.plugin == "thirdparty" for d in get_host().domains.values())))

    mod.register_domains = register_domains
    mod.register_commands = register_commands
    return mod


def _with_extra_entry_points(monkeypatch, extra: list[metadata.EntryPoint]) -> None:
    real = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    monkeypatch.setattr(
        "lordfx.host.metadata.entry_points", lambda group: [*real, *extra] if group else []
    )


def test_third_party_plugin_registers_domain_and_command(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "lordfx_thirdparty_test", _third_party_plugin())
    ep = metadata.EntryPoint("thirdparty", "lordfx_thirdparty_test", ENTRY_POINT_GROUP)
    _with_extra_entry_points(monkeypatch, [ep])
    result = invoke("glyph-count")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "1"
    data = json.loads(invoke("plugins", "--json").stdout)
    assert "glyphs" in {d["name"] for d in data["domains"]}


def test_broken_entry_point_leaves_cli_working(monkeypatch, capsys):
    _with_extra_entry_points(
        monkeypatch, [metadata.EntryPoint("broken", "lordfx_missing_xyz", ENTRY_POINT_GROUP)]
    )
    app = build_app()  # discovery happens here, so the warning goes to the real stderr
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1
    assert warning.startswith("lordfx: warning: plugin 'broken'")
    result = invoke("plugins", "--json", app=app)
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert len(data["warnings"]) == 1 and "broken" in data["warnings"][0]
    assert {"faces", "cars"} <= {d["name"] for d in data["domains"]}


def test_broken_entry_point_in_strict_mode_is_an_error(monkeypatch):
    monkeypatch.setenv("LORDFX_PLUGINS_STRICT", "1")
    _with_extra_entry_points(
        monkeypatch, [metadata.EntryPoint("broken", "lordfx_missing_xyz", ENTRY_POINT_GROUP)]
    )
    import pytest

    from lordfx.errors import PluginError

    with pytest.raises(PluginError, match="broken"):
        build_app()
