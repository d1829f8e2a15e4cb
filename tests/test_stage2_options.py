"""Stage-2 options: content targets averaged over a content factor, and a stage 2 that starts
from another run's finished stage 1 (``--stage1-from``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lordfx_trainer.steps import group_mean_targets
from typer.testing import CliRunner

from lordfx.cli import build_app

TINY = Path(__file__).with_name("tiny.toml")
runner = CliRunner()


def test_group_mean_targets_averages_within_each_group():
    codes = torch.tensor([[1.0, 0.0], [3.0, 2.0], [10.0, 10.0], [5.0, 4.0], [20.0, 30.0]])
    groups = np.array([7, 7, 2, 7, 2])
    out = group_mean_targets(codes, groups)
    assert out.shape == codes.shape and out.dtype == torch.float32
    torch.testing.assert_close(out[[0, 1, 3]], torch.tensor([[3.0, 2.0]]).expand(3, 2))
    torch.testing.assert_close(out[[2, 4]], torch.tensor([[15.0, 20.0]]).expand(2, 2))


def _train(args: list[str]):
    return runner.invoke(build_app(), ["train", *args])


def _stage2_from(stage1_run: Path, run: Path, *sets: str):
    """``lordfx train TINY --out RUN --stage1-from STAGE1_RUN --set K=V ...``."""
    args = [str(TINY), "--out", str(run), "--stage1-from", str(stage1_run)]
    return _train(args + [a for kv in sets for a in ("--set", kv)])


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("s1") / "run"
    result = _train([str(TINY), "--out", str(run)])
    assert result.exit_code == 0, result.stderr
    return run


def test_stage1_from_reuses_the_stage1_model_and_trains_stage2(stage1_run, tmp_path):
    run = tmp_path / "again"
    result = _stage2_from(stage1_run, run, "content_target_group=rotation", "amortized_epochs=2")
    assert result.exit_code == 0, result.stderr
    same = (run / "latent.safetensors").read_bytes() == (
        stage1_run / "latent.safetensors"
    ).read_bytes()
    assert same
    assert (run / "bundle" / "model.safetensors").is_file()
    config = json.loads((run / "config.json").read_text())
    assert config["run"]["stage1_from"] == str(stage1_run.resolve())
    assert config["content_target_group"] == "rotation"
    stages = {
        json.loads(line)["stage"] for line in (run / "metrics.jsonl").read_text().splitlines()
    }
    assert stages == {"amortized"}  # no stage-1 step was trained here
    # the two stage 2s differ (targets and length), so do their encoders
    a = (stage1_run / "bundle" / "model.safetensors").read_bytes()
    assert (run / "bundle" / "model.safetensors").read_bytes() != a


def test_stage1_from_refuses_a_different_stage1(stage1_run, tmp_path):
    run = tmp_path / "other"
    result = _stage2_from(stage1_run, run, "latent_epochs=3", "code_lr=0.1")
    assert result.exit_code != 0
    assert "stage 1 ran with other settings" in result.stderr
    assert "latent_epochs 8 there, 3 here" in result.stderr and "code_lr" in result.stderr
    assert not run.exists()


def test_stage1_from_needs_a_finished_stage1(tmp_path):
    result = _train([str(TINY), "--out", str(tmp_path / "r"), "--stage1-from", str(tmp_path)])
    assert result.exit_code != 0
    assert "no latent.safetensors" in result.stderr


def test_unknown_content_target_group_fails_before_training(tmp_path):
    run = tmp_path / "bad"
    result = _train([str(TINY), "--out", str(run), "--set", "content_target_group=performer"])
    assert result.exit_code != 0
    assert "content_target_group 'performer'" in result.stderr
    assert "rotation, position" in result.stderr
    assert not run.exists()  # no half-made run left behind


def test_augment_images_flips_shifts_and_jitters_reproducibly():
    from lordfx_trainer.steps import augment_images

    ramp = torch.linspace(0.2, 0.8, 32).expand(3, 32, 32)  # brighter to the right
    images = ramp.expand(64, 3, 32, 32).clone()
    a = augment_images(images, torch.Generator().manual_seed(3))
    b = augment_images(images, torch.Generator().manual_seed(3))
    assert a.shape == images.shape and torch.equal(a, b)  # same draws, same images
    assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
    assert torch.equal(images, ramp.expand(64, 3, 32, 32))  # input untouched
    slope = a[:, 0, 16, 24] - a[:, 0, 16, 8]
    assert (slope < 0).sum() > 15 and (slope > 0).sum() > 15  # about half flipped
    assert len({round(float(x), 4) for x in a.mean(dim=(1, 2, 3))}) > 32  # jittered


def test_encoder_augment_trains_a_stage2(stage1_run, tmp_path):
    run = tmp_path / "aug"
    result = _stage2_from(stage1_run, run, "encoder_augment=true", "amortized_epochs=1")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(np.isfinite(r["loss"]) for r in rows)
    assert (run / "bundle" / "model.safetensors").is_file()


def test_runs_recorded_before_standardised_heads_resume_with_plain_heads(stage1_run, tmp_path):
    from lordfx_trainer.run import read_run_config

    cfg, _ = read_run_config(stage1_run)
    assert cfg.encoder_standardise is True  # new runs: the default
    old = tmp_path / "old"
    old.mkdir()
    data = json.loads((stage1_run / "config.json").read_text())
    del data["encoder_standardise"]
    (old / "config.json").write_text(json.dumps(data))
    cfg, _ = read_run_config(old)
    assert cfg.encoder_standardise is False  # its checkpoints were trained with plain heads


def _amortized_rows(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["stage"] == "amortized"]


def test_stage2_gradient_clipping_logs_the_norm_and_changes_the_steps(stage1_run, tmp_path):
    """amortized_grad_clip: huge = the unclipped run step for step (the norm only logged);
    tiny = every step clipped, so training differs; it is a stage-2 key (--stage1-from ok)."""
    plain = _amortized_rows(stage1_run)
    assert all("grad_norm" not in r for r in plain)
    loose = tmp_path / "loose"
    assert _stage2_from(stage1_run, loose, "amortized_grad_clip=1e9").exit_code == 0
    rows = _amortized_rows(loose)
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in plain], rel=1e-6)
    assert all(r["grad_norm"] > 0 for r in rows)
    tight = tmp_path / "tight"
    assert _stage2_from(stage1_run, tight, "amortized_grad_clip=1e-4").exit_code == 0
    clipped = _amortized_rows(tight)
    assert all(r["grad_norm"] > 1e-4 for r in clipped)  # logged before clipping
    assert clipped[-1]["loss"] != pytest.approx(rows[-1]["loss"], rel=1e-3)
