"""lordfx bench-edit: a warm swap-pose edit split into its parts, with the shipped faces model."""

from __future__ import annotations

import json
from pathlib import Path

from lordfx_trainer.bench_edit import bench_edit, format_edit_report
from typer.testing import CliRunner

from lordfx.cli import build_app

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PARTS = ["read", "detect", "align", "encode", "generate", "render"]


def test_parts_of_a_warm_edit_are_timed_and_reported():
    r = bench_edit("faces", EXAMPLES / "astronaut.jpg", EXAMPLES / "grace_hopper.jpg", repeats=1)
    assert r["photo_size"] == [512, 512] and r["render"] == "warp"
    assert list(r["parts_ms"]) == PARTS
    assert all(v >= 0 for v in r["parts_ms"].values())
    assert r["parts_ms"]["detect"] > 0 and r["parts_ms"]["generate"] > 0
    # the parts re-run the call's own steps: together they are the same order as the call
    assert 0.3 * r["total_ms"] <= sum(r["parts_ms"].values()) <= 3 * r["total_ms"]
    text = format_edit_report(r)
    assert "512×512" in text and "warm" in text and "detect" in text


def test_cli_json_and_errors(tmp_path):
    runner = CliRunner()
    app = build_app()
    ok = runner.invoke(
        app,
        ["bench-edit", str(EXAMPLES / "astronaut.jpg"), str(EXAMPLES / "grace_hopper.jpg"),
         "--render", "generate", "--repeats", "1", "--json"],
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["render"] == "generate"
    missing = runner.invoke(app, ["bench-edit", str(tmp_path / "nope.jpg"), str(tmp_path)])
    assert missing.exit_code == 1 and "nope.jpg" in missing.output
    bad = runner.invoke(
        app, ["bench-edit", str(EXAMPLES / "astronaut.jpg"), str(EXAMPLES / "astronaut.jpg"),
              "--render", "paint"],
    )  # fmt: skip
    assert bad.exit_code == 2 and "unknown render mode" in bad.output
