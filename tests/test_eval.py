"""`lordfx eval`: transfer metrics, baselines, pair sampling, leakage probes, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lordfx_trainer.cli.eval_cli import eval_command
from lordfx_trainer.data.base import ImageDataset
from lordfx_trainer.evaluation import (
    EvalSettings,
    ProbeSettings,
    baselines,
    leakage,
    probe,
    sample_pairs,
    score_transfers,
    summarize,
)
from lordfx_trainer.evaluation.leakage import chance_level, joint_labels
from lordfx_trainer.evaluation.transfer import ground_truth_table
from typer.testing import CliRunner

from lordfx.cli import build_app
from lordfx.errors import LordfxError

TINY = Path(__file__).with_name("tiny.toml")
FAST = ProbeSettings(mlp_steps=100)


def _grid_labels(num_classes: int = 4, num_contents: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Every class at every content (content labels (rotation, position))."""
    class_ids = np.repeat(np.arange(num_classes), num_contents).astype(np.int64)
    content = np.tile(np.arange(num_contents), num_classes)
    labels = np.stack([content // 2, content % 2], axis=1).astype(np.int64)
    return class_ids, labels


def _lpips_models() -> dict:
    from lordfx_trainer import weights

    try:
        weights.provision("vgg16", download=False)
    except LordfxError as exc:
        pytest.skip(f"vgg16 weights not provisioned (run `lordfx weights`): {exc}")
    from lordfx_trainer.lpips_metric import make_lpips

    return {"vgg": make_lpips("vgg")}


# -- pairs -----------------------------------------------------------------------------------
def test_pairs_are_seeded_cross_class_and_have_ground_truth():
    class_ids, labels = _grid_labels()
    keep = np.ones(len(class_ids), bool)
    keep[[1, 8, 15]] = False  # some (class, content) cells have no image: no ground truth
    class_ids, labels = class_ids[keep], labels[keep]
    a = sample_pairs(class_ids, labels, 300, seed=3)
    b = sample_pairs(class_ids, labels, 300, seed=3)
    c = sample_pairs(class_ids, labels, 300, seed=4)
    assert len(a) == 300 and a.num_without_target > 0
    assert np.array_equal(a.class_idx, b.class_idx) and np.array_equal(a.target_idx, b.target_idx)
    assert not np.array_equal(a.class_idx, c.class_idx)
    assert np.all(class_ids[a.class_idx] != class_ids[a.content_idx])
    assert np.array_equal(class_ids[a.target_idx], class_ids[a.class_idx])
    assert np.array_equal(labels[a.target_idx], labels[a.content_idx])
    with pytest.raises(ValueError, match="two classes"):
        sample_pairs(np.zeros(4, np.int64), labels[:4], 10, seed=0)


# -- transfer metrics -----------------------------------------------------------------------
def _perfect_transfer_setup() -> tuple:
    class_ids, labels = _grid_labels()
    torch.manual_seed(0)
    images = torch.rand(len(class_ids), 3, 16, 16)
    table = ground_truth_table(class_ids, labels)

    def perfect(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        keys = [(int(class_ids[a]), *map(int, labels[b])) for a, b in zip(i, j, strict=True)]
        return images[[table[k] for k in keys]]

    return images, sample_pairs(class_ids, labels, 40, seed=0), perfect


def test_perfect_transfer_scores_zero_error_and_baselines_use_the_same_pairs():
    images, pairs, perfect = _perfect_transfer_setup()
    scores = score_transfers({"model": perfect, **baselines(images)}, images, pairs, {}, 16)
    assert set(scores) == {"model", "copy_class", "copy_content", "mean_image"}
    assert np.allclose(scores["model"]["l1"], 0) and np.allclose(scores["model"]["ssim"], 1)
    target = images[pairs.target_idx]
    copy_class = (images[pairs.class_idx] - target).abs().flatten(1).mean(1).numpy()
    assert np.allclose(scores["copy_class"]["l1"], copy_class, atol=1e-6)
    copy_content = (images[pairs.content_idx] - target).abs().flatten(1).mean(1).numpy()
    assert np.allclose(scores["copy_content"]["l1"], copy_content, atol=1e-6)
    mean = (images.mean(0, keepdim=True) - target).abs().flatten(1).mean(1).numpy()
    assert np.allclose(scores["mean_image"]["l1"], mean, atol=1e-6)
    summary = summarize(scores)
    assert summary["copy_class"]["l1"]["mean"] == pytest.approx(float(np.mean(copy_class)))
    assert summary["model"]["ssim"]["mean"] == pytest.approx(1.0, abs=1e-5)


def test_perfect_transfer_has_zero_lpips():
    images, pairs, perfect = _perfect_transfer_setup()
    models = _lpips_models()
    scores = score_transfers({"model": perfect}, images, pairs, models, 16)
    assert np.allclose(scores["model"]["lpips_vgg"], 0, atol=1e-6)
    grey = {"copy": lambda i, j: images[i, :1]}
    got = score_transfers(grey, images[:, :1], pairs, models, 16)["copy"]["lpips_vgg"]
    assert got.shape == (len(pairs),) and np.all(got >= 0)  # grey input tiled to RGB


# -- leakage -------------------------------------------------------------------------------
def test_codes_that_carry_the_class_are_read_perfectly():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=300)
    codes = np.eye(5)[labels] * 3 + 0.1 * rng.standard_normal((300, 5))
    for method in ("logistic", "mlp"):
        result = probe(codes, labels, method, FAST)
        assert result["accuracy"] == 1.0
        assert result["num_test"] == 60 and result["num_labels"] == 5
    capped = probe(codes, labels, "logistic", ProbeSettings(max_codes=100))
    assert (capped["num_train"], capped["num_test"], capped["accuracy"]) == (80, 20, 1.0)


def test_independent_codes_score_near_chance():
    rng = np.random.default_rng(1)
    labels, codes = rng.integers(0, 4, size=1000), rng.standard_normal((1000, 8))
    for method in ("logistic", "mlp"):
        result = probe(codes, labels, method, FAST)
        # 200 test codes: the binomial std of an accuracy near 0.25 is 0.03; allow ~3σ
        assert abs(result["accuracy"] - 0.25) < 0.1
        assert result["accuracy"] < result["chance"] + 0.1
        assert 0.25 <= result["chance"] < 0.35
    assert probe(codes, labels, "mlp", FAST) == probe(codes, labels, "mlp", FAST)  # seeded


def test_leakage_report_joint_and_per_column_with_chance():
    class_ids, labels = _grid_labels(num_classes=6, num_contents=12)
    class_ids, labels = np.tile(class_ids, 4), np.tile(labels, (4, 1))  # 288 images
    rng = np.random.default_rng(0)
    content_codes = np.eye(6)[class_ids] + 0.05 * rng.standard_normal((len(class_ids), 6))
    class_codes = np.eye(6)[class_ids]  # latent setting: one code per class
    out = leakage(
        torch.from_numpy(class_codes).float(),
        torch.from_numpy(content_codes).float(),
        class_ids,
        labels,
        ("rotation", "position"),
        FAST,
    )
    assert out["class_from_content"]["logistic"]["accuracy"] == 1.0  # y←c: full leak
    assert set(out["content_from_class"]) == {"joint", "rotation", "position"}
    joint = out["content_from_class"]["joint"]["mlp"]
    assert joint["num_labels"] == 12 and joint["accuracy"] < joint["chance"] + 0.12
    none = leakage(torch.zeros(4, 2), torch.zeros(4, 2), np.array([0, 0, 1, 1]), None)
    assert "skipped" in none["content_from_class"]


def test_joint_labels_and_chance():
    ids, k = joint_labels(np.array([[0, 1], [0, 1], [2, 0], [0, 0]]))
    assert k == 3 and ids[0] == ids[1] and len(set(ids.tolist())) == 3
    assert chance_level(np.array([0, 0, 0, 1])) == 0.75


def test_transfer_skipped_without_content_labels():
    from lordfx_trainer.evaluation.report import _transfer

    ds = ImageDataset(
        "faces", np.zeros((4, 16, 16, 3), np.uint8), np.array([0, 0, 1, 1]), ("a", "b")
    )
    result, pairs = _transfer(
        SimpleNamespace(heldout=ds), torch.zeros(4, 3, 16, 16), None, EvalSettings()
    )
    assert pairs is None and "no content labels" in result["skipped"]


# -- end to end on tiny trained runs -------------------------------------------------------
runner = CliRunner()
ARGS = ["--pairs", "48", "--tto-steps", "10"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A full tiny run and its "w/o stage 2" ablation (seconds each on a CPU)."""
    from lordfx_trainer.train import resolve_config, start_run

    root = tmp_path_factory.mktemp("runs")
    start_run(resolve_config(str(TINY), {}), root / "full", None)
    start_run(resolve_config(str(TINY), {"amortized_epochs": 0}), root / "nostage2", None)
    return {"full": root / "full", "nostage2": root / "nostage2"}


@pytest.fixture
def app():
    """The CLI with `eval` (added here in case the trainer plugin does not register it yet)."""
    built = build_app()
    if not any(c.name == "eval" for c in built.registered_commands):
        built.command("eval")(eval_command)
    return built


def _lpips_flag() -> list[str]:
    from lordfx_trainer import weights

    try:
        weights.provision("vgg16", download=False)
        return []
    except LordfxError:
        return ["--no-lpips"]


def test_eval_writes_eval_json_with_all_keys(runs, app):
    result = runner.invoke(app, ["eval", str(runs["nostage2"]), *ARGS, *_lpips_flag()])
    assert result.exit_code == 0, result.stderr
    assert Path(result.stdout.strip()) == runs["nostage2"] / "eval.json"
    assert "transfer" in result.stderr and "chance" in result.stderr
    data = json.loads((runs["nostage2"] / "eval.json").read_text())
    keys = {"format", "settings", "heldout", "codes", "transfer", "leakage", "figures"}
    assert keys <= set(data) and data["ablation"] == "w/o stage 2"
    assert data["codes"]["heldout"].startswith("test-time optimisation (10 steps")
    metrics = data["transfer"]["metrics"]
    assert set(metrics) == {"model", "copy_class", "copy_content", "mean_image"}
    assert {"l1", "ssim"} <= set(metrics["model"]) and data["transfer"]["num_pairs"] == 48
    for part in ("stage1_train", "heldout"):
        leak = data["leakage"][part]
        for probes in (leak["class_from_content"], leak["content_from_class"]["joint"]):
            assert {"accuracy", "chance"} <= set(probes["logistic"]) | set(probes["mlp"])
    for path in data["figures"].values():
        assert (runs["nostage2"] / path).stat().st_size > 0


def test_compare_two_runs_table_and_json(runs, app, tmp_path):
    out = tmp_path / "cmp.json"
    args = ["eval", "--compare", str(runs["full"]), str(runs["nostage2"]), *ARGS]
    result = runner.invoke(app, [*args, "--out", str(out), *_lpips_flag()])
    assert result.exit_code == 0, result.stderr
    table = result.stdout
    assert table.startswith("| run | ablation | LPIPS alex")
    assert "| full | full |" in table and "| nostage2 | w/o stage 2 |" in table
    assert table.count("baseline: copy class image") == 1  # same split and pairs: once
    rows = json.loads(out.read_text())["rows"]
    assert [r["run"] for r in rows[:2]] == ["full", "nostage2"]
    assert rows[0]["y_from_c"]["chance"] > 0 and (runs["full"] / "eval.json").is_file()
    # --tto-steps changes only the run without stage 2: full's eval.json is reused
    before = {k: (runs[k] / "eval.json").stat().st_mtime_ns for k in ("full", "nostage2")}
    again = runner.invoke(app, [*args, "--out", str(out), "--tto-steps", "7", *_lpips_flag()])
    assert again.exit_code == 0, again.stderr
    after = {k: (runs[k] / "eval.json").stat().st_mtime_ns for k in ("full", "nostage2")}
    assert after["full"] == before["full"] and after["nostage2"] != before["nostage2"]
    redone = json.loads((runs["nostage2"] / "eval.json").read_text())
    assert redone["settings"]["tto_steps"] == 7


def test_eval_errors_are_one_line(app, tmp_path):
    result = runner.invoke(app, ["eval", str(tmp_path)])
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == f"lordfx: error: {tmp_path}: not a lordfx run directory (no config.json)"
    )
    bad = runner.invoke(app, ["eval", str(tmp_path), "--pairs", "0"])
    assert bad.exit_code == 2 and "--pairs" in bad.stderr


def test_run_without_heldout_classes_skips_transfer(tmp_path):
    from lordfx_trainer.evaluation import evaluate_run
    from lordfx_trainer.train import resolve_config, start_run

    cfg = {"num_heldout_classes": 0, "latent_epochs": 1, "amortized_epochs": 0}
    start_run(resolve_config(str(TINY), cfg), tmp_path / "run", None)
    data = evaluate_run(tmp_path / "run", EvalSettings(pairs=8, lpips=(), probes=FAST))
    assert "held-out" in data["transfer"]["skipped"] and "skipped" in data["leakage"]["heldout"]
    assert data["leakage"]["stage1_train"]["class_from_content"]["mlp"]["chance"] > 0
    assert (tmp_path / "run" / data["figures"]["swap_grid"]).is_file()
