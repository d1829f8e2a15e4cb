"""`lordfx bench`: every measurement present and positive on a tiny preset."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from lordfx.cli import build_app

TINY = Path(__file__).with_name("tiny.toml")


def test_bench_json_reports_both_stages_and_inference():
    result = CliRunner().invoke(build_app(), ["bench", str(TINY), "--steps", "1", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    for key in (
        "latent_images_per_s",
        "amortized_images_per_s",
        "transfer_batch1_ms",
        "transfer_batch64_images_per_s",
        "peak_memory_mb",
    ):
        assert data[key] > 0, key
    assert data["config"]["image_size"] == 16 and data["device"] == "cpu"
