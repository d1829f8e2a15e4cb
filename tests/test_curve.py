"""Quality over training time (curve.jsonl): probes in stage 1, held-out LPIPS in stage 2."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lordfx_trainer import loop
from lordfx_trainer.config import TrainConfig
from lordfx_trainer.curve import CURVE_FILE, TrainingCurve
from lordfx_trainer.models import LatentModel
from typer.testing import CliRunner

from lordfx.cli import build_app
from lordfx.errors import LordfxError, UsageError
from lordfx.nets import ModelConfig

TINY = Path(__file__).with_name("tiny.toml")
runner = CliRunner()


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / CURVE_FILE).read_text().splitlines()]


def test_latent_point_reads_what_the_content_codes_carry(tmp_path):
    """Codes that spell out the view are read back from them; the class is not."""
    num_classes, num_views = 4, 8
    class_ids = np.repeat(np.arange(num_classes), num_views * 5)
    views = np.tile(np.arange(num_views), num_classes * 5)
    labels = np.stack([views, np.zeros_like(views)], axis=1)
    model = LatentModel(
        ModelConfig(image_size=16, channels=1, content_dim=16, class_dim=16, width=0.25),
        4,
        len(views),
    )
    with torch.no_grad():
        codes = torch.randn(
            len(views), model.cfg.content_dim, generator=torch.Generator().manual_seed(0)
        )
        codes[:, :num_views] += 4 * torch.nn.functional.one_hot(torch.from_numpy(views), num_views)
        model.content_embedding.weight.copy_(codes)
    images = np.zeros((len(views), 16, 16, 1), np.uint8)  # under 32²: no LPIPS columns
    train = SimpleNamespace(
        class_ids=class_ids, content_labels=labels, num_classes=num_classes, images=images
    )
    curve = TrainingCurve(tmp_path, train, None, torch.device("cpu"))
    state = loop.LoopState(stage="latent", epoch=1, global_step=7, elapsed_s=12.34)
    row = curve.latent_point(model, state, contextlib.nullcontext)
    assert row is not None and _rows(tmp_path) == [row]
    assert (row["stage"], row["step"], row["epoch"], row["elapsed_s"]) == ("latent", 7, 1, 12.3)
    assert row["content_labels_from_content"] > 0.9
    assert row["content_labels_from_content_chance"] < 0.25
    assert row["class_from_content"] < 0.5  # 4 classes: chance 0.25, codes carry none
    assert row["content_code_rms"] > 1.0
    assert "train_lpips_alex" not in row


def test_content_use_is_measured_without_content_labels(tmp_path):
    """Faces/shoes have no content labels: stage 1 still reports whether the generator uses
    the content codes (own vs another image's code); identical codes give identical scores."""
    from lordfx_trainer import weights

    n = 12
    model = LatentModel(
        ModelConfig(image_size=32, channels=3, content_dim=8, class_dim=8, width=0.25), 3, n
    ).eval()
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    train = SimpleNamespace(
        class_ids=np.arange(n) % 3, content_labels=None, num_classes=3, images=images
    )
    state = loop.LoopState(stage="latent", epoch=0, global_step=1, elapsed_s=1.0)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    row = TrainingCurve(tmp_path / "a", train, None, torch.device("cpu")).latent_point(
        model, state, contextlib.nullcontext
    )
    assert row is not None and "train_lpips_alex" not in row
    try:
        weights.provision("alexnet", download=False)
    except LordfxError:
        assert "recon_lpips_alex" not in row
        return
    assert 0 < row["recon_lpips_alex"] < 1 and 0 < row["shuffled_content_lpips_alex"] < 1
    assert row["recon_lpips_alex"] != row["shuffled_content_lpips_alex"]
    with torch.no_grad():  # one code for every image: the generator cannot tell them apart
        model.content_embedding.weight.copy_(model.content_embedding.weight[:1].expand(n, -1))
    row = TrainingCurve(tmp_path / "b", train, None, torch.device("cpu")).latent_point(
        model, state, contextlib.nullcontext
    )
    assert row["recon_lpips_alex"] == pytest.approx(row["shuffled_content_lpips_alex"])


def test_curve_every_is_validated():
    with pytest.raises(UsageError, match="curve_every"):
        TrainConfig(curve_every=-1)


def test_tiny_run_writes_curve_points_for_both_stages(tmp_path):
    from lordfx_trainer import weights

    run = tmp_path / "run"
    args = ["train", str(TINY), "--out", str(run), "--set", "curve_every=4"]
    args += ["--set", "image_size=32"]  # LPIPS alex needs >= 32²
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 0, result.stderr
    rows = _rows(run)
    latent = [r for r in rows if r["stage"] == "latent"]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last_latent = max(r["step"] for r in metrics if r["stage"] == "latent")
    assert [r["step"] for r in latent] == sorted({*range(4, last_latent + 1, 4), last_latent})
    for r in latent:
        assert 0 <= r["class_from_content"] <= 1 and 0 <= r["content_labels_from_content"] <= 1
        assert r["elapsed_s"] >= 0
    amortized = [r for r in rows if r["stage"] == "amortized"]
    try:
        weights.provision("alexnet", download=False)
    except LordfxError:
        assert not amortized and "no LPIPS points" in result.stderr
        assert all("train_lpips_alex" not in r for r in latent)
        return
    for r in latent:  # transfer between training classes, beside copying the class image
        assert 0 < r["train_lpips_alex"] < 1 and r["train_pairs"] == 500
        assert 0 < r["recon_lpips_alex"] < 1 and 0 < r["shuffled_content_lpips_alex"] < 1
        assert r["train_copy_class_lpips_alex"] == latent[0]["train_copy_class_lpips_alex"]
    last = max(r["step"] for r in metrics if r["stage"] == "amortized")
    expected = sorted({*range(4, last + 1, 4), last})  # every 4th and the stage's last
    assert [r["step"] for r in amortized] == expected
    assert amortized[-1]["heldout_pairs"] == 500
    assert all(0 < r["heldout_lpips_alex"] < 1 and 0 < r["heldout_l1"] < 1 for r in amortized)
    assert (run / "curve.png").stat().st_size > 0


def test_resume_drops_curve_rows_after_the_checkpoint(tmp_path):
    path = tmp_path / CURVE_FILE
    for stage, step in [("latent", 2), ("latent", 4), ("latent", 6), ("amortized", 2)]:
        loop.append_jsonl(path, {"stage": stage, "step": step})
    TrainingCurve(tmp_path, None, None, torch.device("cpu")).truncate("latent", 4)
    assert [(r["stage"], r["step"]) for r in _rows(tmp_path)] == [("latent", 2), ("latent", 4)]
