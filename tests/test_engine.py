"""LORD engine: both stages, ablation switches, hand-off, bundle, exact kill/resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from lordfx_trainer.config import TrainConfig, apply_overrides, parse_set_option
from lordfx_trainer.losses import PixelL1Loss
from lordfx_trainer.models import LatentModel
from lordfx_trainer.run import StallGuard, stall_warning
from lordfx_trainer.steps import (
    Batch,
    amortized_step,
    handoff,
    latent_step,
    optimize_codes,
    saturated_fraction,
)
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from lordfx.cli import build_app
from lordfx.errors import LordfxError, UsageError
from lordfx.nets import AmortizedModel, ModelConfig

TINY = Path(__file__).with_name("tiny.toml")
CFG = ModelConfig(image_size=16, width=0.125, content_dim=16, class_dim=16)


def _batch(n: int = 6, num_classes: int = 3) -> Batch:
    torch.manual_seed(0)
    return Batch(
        images=torch.rand(n, 3, 16, 16),
        class_ids=torch.arange(n) % num_classes,
        image_ids=torch.arange(n),
    )


def test_latent_step_gradients_reach_codes_and_generator():
    model = LatentModel(CFG, num_classes=3, num_images=10)
    batch = _batch()
    losses = latent_step(model, batch, PixelL1Loss(), 1.0, 1e-3, "clean")
    assert set(losses) == {"loss", "reconstruction", "content_decay", "saturated"}
    losses["loss"].backward()
    content_grad = model.content_embedding.weight.grad
    assert content_grad[:6].abs().sum(dim=1).min() > 0  # every image in the batch
    assert content_grad[6:].abs().sum() == 0  # images not in the batch are untouched
    assert model.class_embedding.weight.grad.abs().sum(dim=1).min() > 0
    assert all(p.grad is not None for p in model.generator.parameters())


def test_saturated_output_is_measured_and_warned():
    x = torch.tensor([0.0, 1.0, 0.5, 0.99995, 0.3, 1e-5, 0.7, 0.9999])
    assert saturated_fraction(x).item() == pytest.approx(4 / 8)  # 0, 1, 0.99995, 1e-5
    model = LatentModel(CFG, num_classes=3, num_images=10)
    healthy = latent_step(model, _batch(), PixelL1Loss(), 1.0, 0.0, "clean")["saturated"]
    assert healthy.item() == 0.0  # at init the sigmoid sits near 0.5
    with torch.no_grad():  # the collapse seen in the fully amortized ablation: all white
        model.generator.head[-1].bias.fill_(50.0)
    dead = latent_step(model, _batch(), PixelL1Loss(), 1.0, 0.0, "clean")
    assert dead["saturated"].item() == 1.0
    dead["loss"].backward()
    assert model.generator.head[-1].weight.grad.abs().max() < 1e-12  # nothing to learn from
    row = {"stage": "latent", "step": 60, "saturated": 1.0}
    warning = stall_warning(row, "generator_lr", 1e-3)
    assert "step 60: 100.0% of generator output pixels are saturated" in warning
    assert warning.endswith("--set generator_lr=3.3e-04")
    assert stall_warning({**row, "saturated": 0.85}, "generator_lr", 1e-3) is None
    assert stall_warning({"stage": "latent", "step": 1}, "generator_lr", 1e-3) is None


def test_stall_guard_stops_a_stage_saturated_for_its_steps_and_resets_when_healthy():
    guard = StallGuard(100)
    stalled = {"stage": "latent", "saturated": 1.0}
    for step in (50, 100, 140):  # 90 stalled steps: warn only
        guard.check({**stalled, "step": step}, "w")
    guard.check({"stage": "latent", "step": 150, "saturated": 0.2}, None)  # healthy: reset
    for step in (160, 200, 250):
        guard.check({**stalled, "step": step}, "w")
    guard.check({"stage": "amortized", "step": 10}, "w")  # stages are counted apart
    with pytest.raises(LordfxError, match="w; stopped after 100 stalled steps"):
        guard.check({**stalled, "step": 260}, "w")
    never = StallGuard(0)
    for step in range(0, 10_000, 100):
        never.check({**stalled, "step": step}, "w")


def test_noise_only_in_training_and_decay_on_clean_code():
    model = LatentModel(CFG, num_classes=3, num_images=10)
    batch = _batch()
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    noisy1 = latent_step(model, batch, PixelL1Loss(), 1.0, 0.0, "clean", g1)["reconstruction"]
    noisy2 = latent_step(model, batch, PixelL1Loss(), 1.0, 0.0, "clean", g2)["reconstruction"]
    clean = latent_step(model, batch, PixelL1Loss(), 0.0, 0.0, "clean")["reconstruction"]
    assert noisy1 != noisy2  # the noise is drawn per step
    with torch.no_grad():  # inference/grid path: the clean codes, no noise
        recon = model.generator(
            model.content_embedding(batch.image_ids), model.class_embedding(batch.class_ids)
        )
    assert torch.allclose(PixelL1Loss()(recon, batch.images), clean)
    decay = latent_step(model, batch, PixelL1Loss(), 1.0, 1e-3, "clean", g1)["content_decay"]
    expected = model.content_embedding(batch.image_ids).pow(2).sum(1).mean()
    assert torch.allclose(decay, expected)


def test_amortized_class_codes_are_averaged_within_the_batch():
    model = LatentModel(CFG, num_classes=3, num_images=10, class_mode="amortized")
    batch = _batch()
    codes = model.class_codes(batch.images, batch.class_ids)
    assert torch.allclose(codes[0], codes[3]) and torch.allclose(codes[1], codes[4])
    assert not torch.allclose(codes[0], codes[1])
    assert not hasattr(model, "class_embedding")
    semi = LatentModel(CFG, 3, 10, content_mode="amortized")
    assert hasattr(semi, "content_encoder") and hasattr(semi, "class_embedding")
    names = [g["name"] for g in semi.param_groups(1e-4, 1e-3)]
    assert names == ["networks", "codes"]


def test_class_codes_get_their_own_learning_rate_only_when_asked():
    model = LatentModel(CFG, num_classes=3, num_images=10)
    plain = model.param_groups(1e-4, 1e-2)
    assert [(g["name"], g["lr"]) for g in plain] == [("networks", 1e-4), ("codes", 1e-2)]
    assert len(plain[1]["params"]) == 2  # class and content codes share the group
    split = model.param_groups(1e-4, 1e-2, class_code_lr=0.5)
    assert [(g["name"], g["lr"]) for g in split] == [
        ("networks", 1e-4),
        ("codes", 1e-2),
        ("class codes", 0.5),
    ]
    assert split[1]["params"][0] is model.content_embedding.weight
    assert split[2]["params"][0] is model.class_embedding.weight
    with pytest.raises(UsageError, match="class_code_lr"):
        TrainConfig(class_code_lr=-1.0)


def test_ablation_switches_are_config_not_code():
    base = TrainConfig()
    assert base.ablation == "full"
    both = {"class_mode": "amortized", "content_mode": "amortized"}
    assert apply_overrides(base, both, "t").ablation == "amortized"
    assert apply_overrides(base, {"class_mode": "amortized"}, "t").ablation == "amortized class"
    assert apply_overrides(base, {"content_mode": "amortized"}, "t").ablation == "semi-amortized"
    no_reg = {"content_noise_std": 0.0, "content_decay": 0.0}
    assert apply_overrides(base, no_reg, "t").ablation == "w/o regularisation"
    assert apply_overrides(base, {"amortized_epochs": 0}, "t").ablation == "w/o stage 2"


def test_handoff_is_a_strict_copy():
    latent = LatentModel(CFG, 3, 10)
    amortized = AmortizedModel(CFG)
    handoff(latent, amortized)
    for (k, a), (k2, b) in zip(
        latent.generator.state_dict().items(), amortized.generator.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(a, b)
    wider = AmortizedModel(ModelConfig(image_size=16, width=0.25, content_dim=16, class_dim=16))
    with pytest.raises(RuntimeError, match="size mismatch"):
        handoff(latent, wider)


def test_amortized_step_regresses_stage1_codes():
    model = AmortizedModel(CFG)
    batch = _batch()
    class_targets, content_targets = torch.randn(3, 16), torch.randn(10, 16)
    losses = amortized_step(model, batch, PixelL1Loss(), class_targets, content_targets, 10.0, 10.0)
    assert set(losses) == {"loss", "reconstruction", "class_code", "content_code", "saturated"}
    total = losses["reconstruction"] + 10 * losses["class_code"] + 10 * losses["content_code"]
    assert torch.allclose(losses["loss"], total)


def test_test_time_optimisation_fits_new_images():
    torch.manual_seed(0)
    gen = LatentModel(CFG, 3, 10).generator
    images = torch.rand(2, 3, 16, 16)
    before = [p.clone() for p in gen.parameters()]
    _, _, history = optimize_codes(gen, images, PixelL1Loss(), 16, 16, steps=40, lr=5e-2)
    assert history[-1] < history[0]
    assert all(torch.equal(a, b) for a, b in zip(before, gen.parameters(), strict=True))


def test_config_errors_and_set_parsing():
    with pytest.raises(UsageError, match="unknown keys \\['epochz'\\]"):
        apply_overrides(TrainConfig(), {"epochz": 3}, "preset.toml")
    with pytest.raises(UsageError, match="batch_size must be int"):
        apply_overrides(TrainConfig(), {"batch_size": "big"}, "--set")
    assert parse_set_option(["content_decay=1e-4", "loss=l1", "channels_last=true"]) == {
        "content_decay": 1e-4,
        "loss": "l1",
        "channels_last": True,
    }
    with pytest.raises(UsageError, match="key=value"):
        parse_set_option(["oops"])


runner = CliRunner()


def test_dry_run_prints_resolved_config():
    result = runner.invoke(build_app(), ["train", str(TINY), "--dry-run", "--set", "seed=7"])
    assert result.exit_code == 0, result.stderr
    cfg = json.loads(result.stdout)
    assert cfg["seed"] == 7 and cfg["image_size"] == 16 and cfg["content_noise_std"] == 1.0
    bad = runner.invoke(build_app(), ["train", "no-such-preset", "--dry-run"])
    assert bad.exit_code == 2 and "valid presets:" in bad.stderr


@pytest.mark.parametrize(
    ("ablation", "label", "keys"),
    [
        ("full", "full", {"class_mode": "latent", "content_mode": "latent"}),
        ("amortized", "amortized", {"class_mode": "amortized", "content_mode": "amortized"}),
        ("semi-amortized", "semi-amortized", {"class_mode": "latent", "content_mode": "amortized"}),
        ("no-reg", "w/o regularisation", {"content_noise_std": 0.0, "content_decay": 0.0}),
        ("no-stage2", "w/o stage 2", {"amortized_epochs": 0}),
    ],
)
def test_ablation_option_sets_table3_variant(ablation, label, keys):
    result = runner.invoke(build_app(), ["train", str(TINY), "--ablation", ablation, "--dry-run"])
    assert result.exit_code == 0, result.stderr
    cfg = json.loads(result.stdout)
    assert {k: cfg[k] for k in keys} == keys
    assert TrainConfig.from_dict(cfg).ablation == label


def test_check_split_refuses_changed_data(tmp_path):
    from types import SimpleNamespace

    from lordfx_trainer.train import check_split

    extra = {
        "train": {"num_images": 60, "num_classes": 6},
        "heldout": {"split": {"heldout_class_names": ["a", "b"]}},
    }
    train = SimpleNamespace(num_images=60, num_classes=6, meta={})

    def heldout(*names: str) -> SimpleNamespace:
        return SimpleNamespace(class_names=list(names), meta={"split": {}})

    check_split(tmp_path, extra, train, heldout("a", "b"))  # same: fine
    with pytest.raises(LordfxError, match=r"held-out classes \['a', 'c'\] differ"):
        check_split(tmp_path, extra, train, heldout("a", "c"))
    with pytest.raises(LordfxError, match="num_images = 59, the run recorded 60"):
        check_split(
            tmp_path,
            extra,
            SimpleNamespace(num_images=59, num_classes=6, meta={}),
            heldout("a", "b"),
        )


def test_presets_lists_ablations():
    result = runner.invoke(build_app(), ["presets"])
    assert result.exit_code == 0
    assert "cars3d-cpu" in result.stdout
    assert "no-reg             content_noise_std=0.0 content_decay=0.0" in result.stdout


def test_ablation_label_names_every_switch():
    cfg = apply_overrides(
        TrainConfig(),
        {"content_noise_std": 0.0, "content_decay": 0.0, "amortized_epochs": 0},
        source="test",
    )
    assert cfg.ablation == "w/o regularisation, w/o stage 2"


def test_ablation_option_errors():
    bad = runner.invoke(build_app(), ["train", str(TINY), "--ablation", "nope", "--dry-run"])
    assert bad.exit_code == 2
    assert "unknown ablation 'nope'" in bad.stderr and "no-reg" in bad.stderr
    both = runner.invoke(build_app(), ["train", "--resume", "x", "--ablation", "no-reg"])
    assert both.exit_code == 2 and "--ablation" in both.stderr
    # --set still wins over the ablation's keys
    tuned = runner.invoke(
        build_app(),
        ["train", str(TINY), "--ablation", "no-reg", "--set", "content_decay=1e-4", "--dry-run"],
    )
    cfg = json.loads(tuned.stdout)
    assert cfg["content_noise_std"] == 0.0 and cfg["content_decay"] == 1e-4


def test_tiny_run_via_cli_trains_both_stages(tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(build_app(), ["train", str(TINY), "--out", str(run)])
    assert result.exit_code == 0, result.stderr
    assert Path(result.stdout.strip()) == run / "bundle"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    latent = [r["reconstruction"] for r in rows if r["stage"] == "latent"]
    assert latent[-1] < 0.8 * latent[0]  # reconstruction loss falls
    assert {r["stage"] for r in rows} == {"latent", "amortized"}
    for name in ("latent_grid_e008.png", "amortized_grid_e003.png", "losses.png"):
        assert (run / name).stat().st_size > 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["run"]["heldout"]["split"]["seed"] == 0
    assert len(cfg["run"]["heldout"]["split"]["heldout_class_names"]) == 2

    from lordfx.api import Editor

    editor = Editor.from_bundle(run / "bundle")
    assert len(editor.bundle.class_names) == 6
    img = Image.fromarray(np.zeros((40, 30, 3), np.uint8))
    out = editor.transfer(img, img)
    assert out.size == (16, 16)
    again = runner.invoke(build_app(), ["train", str(TINY), "--out", str(run)])
    assert again.exit_code == 1 and "already exists" in again.stderr


def test_a_stalled_stage_stops_with_a_one_line_error(tmp_path, monkeypatch):
    from lordfx_trainer import steps

    monkeypatch.setattr(steps, "saturated_fraction", lambda images: torch.tensor(1.0))
    run = tmp_path / "run"
    args = ["train", str(TINY), "--out", str(run), "--set", "stall_stop_steps=4"]
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 1 and not (run / "bundle").exists()
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("lordfx: error")]
    assert len(lines) == 1 and "stage latent step 6" in lines[0], result.stderr
    assert "stopped after 4 stalled steps (stall_stop_steps = 4; 0 only warns)" in lines[0]
    assert (run / "trainer_state.pt").is_file()  # the checkpoint stays for a look or a resume


def test_time_budget_ends_each_stage_early_and_still_writes_the_bundle(tmp_path):
    run = tmp_path / "run"
    args = ["train", str(TINY), "--out", str(run), "--set", "latent_epochs=500"]
    args += [
        "--set",
        "amortized_epochs=500",
        "--set",
        "stage_minutes=0.005",
        "--set",
        "log_every=1",
    ]
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = {s: max(r["step"] for r in rows if r["stage"] == s) for s in ("latent", "amortized")}
    per_epoch = 3  # 40 training images of the tiny preset, batch 16
    assert all(0 < n < 500 * per_epoch for n in steps.values()), steps
    assert (run / "bundle" / "model.safetensors").is_file()
    assert (run / "latent_grid_e500.png").is_file()  # the stage closed like its last epoch
    with pytest.raises(UsageError, match="stage_minutes"):
        TrainConfig(stage_minutes=-1.0)


def test_stage_two_can_have_its_own_time_budget():
    same = TrainConfig(stage_minutes=30.0)
    assert (same.minutes_for("latent"), same.minutes_for("amortized")) == (30.0, 30.0)
    own = TrainConfig(stage_minutes=30.0, amortized_minutes=10.0)
    assert (own.minutes_for("latent"), own.minutes_for("amortized")) == (30.0, 10.0)
    unlimited = TrainConfig(stage_minutes=30.0, amortized_minutes=0.0)
    assert unlimited.minutes_for("amortized") == 0.0
    with pytest.raises(UsageError, match="amortized_minutes"):
        TrainConfig(amortized_minutes=-2.0)


def _train_proc(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "from lordfx.cli import main; main()", "train", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_and_resume_reaches_the_same_state(tmp_path):
    sets = ["--set", "latent_epochs=10", "--set", "checkpoint_every=2"]
    full = _train_proc(str(TINY), "--out", str(tmp_path / "full"), *sets)
    assert full.wait(timeout=300) == 0, full.stderr.read().decode()

    killed = _train_proc(str(TINY), "--out", str(tmp_path / "killed"), *sets)
    state = tmp_path / "killed" / "trainer_state.pt"
    deadline = time.time() + 120
    while not state.exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # let it run past the checkpoint, mid-epoch
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    ckpt = torch.load(state, weights_only=True)
    assert ckpt["state"]["stage"] == "latent" and ckpt["state"]["global_step"] < 50

    resumed = _train_proc("--resume", str(tmp_path / "killed"))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    a = load_file(str(tmp_path / "full" / "bundle" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "bundle" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    la = load_file(str(tmp_path / "full" / "latent.safetensors"))
    lb = load_file(str(tmp_path / "killed" / "latent.safetensors"))
    assert all(torch.equal(la[k], lb[k]) for k in la)

    def losses(run: str) -> list[dict]:  # the logged losses, without the timing column
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(x).items() if k != "images_per_s"} for x in lines]

    assert losses("killed") == losses("full")


def test_stage1_save_load_reproduces_its_grid(tmp_path):
    """latent.safetensors → fresh LatentModel → the stage-1 grid PNG, pixel for pixel."""
    from lordfx_trainer.grids import pick_grid_indices, swap_grid
    from lordfx_trainer.loop import DeviceData
    from lordfx_trainer.run import GRID_SIZE, read_run_config
    from lordfx_trainer.train import prepare_data, resolve_config, start_run

    run = tmp_path / "run"
    start_run(resolve_config(str(TINY), {"amortized_epochs": 0}), run, None)
    cfg, _ = read_run_config(run)
    train, _ = prepare_data(cfg, None)
    model = LatentModel(cfg.model_config(), train.num_classes, train.num_images)
    model.load_state_dict(load_file(str(run / "latent.safetensors")), strict=True)
    model.eval()
    data = DeviceData(train.images, train.class_ids, torch.device("cpu"), False)
    idx = torch.from_numpy(pick_grid_indices(train.class_ids, GRID_SIZE, 0))
    images = data.batch(idx).images

    def transfer(rows, cols):
        return model.generator(
            model.content_embedding(cols), model.class_embedding(data.class_ids[rows])
        )

    grid = swap_grid(transfer, idx, idx, images, images)
    saved = np.asarray(Image.open(run / "latent_grid_e008.png"))[::2, ::2]  # saved at scale 2
    assert np.array_equal(saved, grid)
    assert not (run / "bundle").exists()  # w/o stage 2: no encoders, no bundle
