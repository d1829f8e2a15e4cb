"""Cars plugin: the view bank (trainer), `lordfx cars view|turntable|where`, the Python API
and `lordfx eval-cars`, on a tiny model trained on synthetic data relabelled as Cars3D
views (24 "azimuths" = rotations 15° apart, 2 "elevations" = positions), 16².
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import lordfx
from lordfx.bundle import load_bundle
from lordfx.cli import build_app
from lordfx.errors import LordfxError
from lordfx.host import reset_host

TINY = Path(__file__).with_name("tiny.toml")
runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny finished run on cars-like data (5 classes, 2 held out); its bundle and a
    shipped fp16 copy in ``ROOT/shipped``."""
    from lordfx_trainer.data.npz import write_npz
    from lordfx_trainer.data.synthetic import load_synthetic
    from lordfx_trainer.train import resolve_config, start_run

    root = tmp_path_factory.mktemp("cars")
    ds = load_synthetic(None, 16, 3, num_classes=5, num_rotations=24, num_positions=2)
    meta = ds.meta | {"azimuth_degrees": [15 * a for a in range(24)], "elevation_degrees": [0, 6]}
    ds = replace(ds, name="cars-like", content_names=("azimuth", "elevation"), meta=meta)
    write_npz(ds, root / "data" / "cars.npz", compression="none")
    cfg = resolve_config(str(TINY), {"dataset": "npz", "latent_epochs": 4, "amortized_epochs": 2})
    start_run(cfg, root / "run", root / "data")
    result = runner.invoke(
        build_app(), ["ship", str(root / "run" / "bundle"), "--to", str(root / "shipped")]
    )
    assert result.exit_code == 0, result.output
    return root / "run"


@pytest.fixture
def cars_model(run, monkeypatch) -> Path:
    """The cars plugin serving the shipped tiny bundle."""
    import lordfx_cars

    shipped = run.parent / "shipped"
    monkeypatch.setattr(lordfx_cars, "MODEL_DIR", shipped)
    reset_host()
    return shipped


def _car(tmp_path: Path, run: Path, index: int, name: str = "car.png") -> Path:
    """A held-out image of the run's data, as a PNG file."""
    Image.fromarray(_heldout(run)[index]).save(tmp_path / name)
    return tmp_path / name


_HELDOUT: dict[Path, np.ndarray] = {}


def _heldout(run: Path) -> np.ndarray:
    """The held-out images of ``run`` (re-created once per run)."""
    if run not in _HELDOUT:
        from lordfx_trainer.evaluation.runs import load_run

        _HELDOUT[run] = load_run(run, "cpu").heldout.images
    return _HELDOUT[run]


def _cli(*args: str):
    return runner.invoke(build_app(), list(args))


# -- view bank ------------------------------------------------------------------------------
def test_mean_codes_groups_by_label_row():
    from lordfx_trainer.view_bank import mean_codes

    codes = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0], [0.0, 1.0]])
    labels = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    bank = mean_codes(codes, labels)
    assert bank["labels"].tolist() == [[0, 0], [0, 1], [1, 0]]
    assert bank["codes"].tolist() == [[0.0, 1.0], [5.0, 5.0], [2.0, 1.0]]
    assert bank["counts"].tolist() == [1, 1, 2]


def test_bundle_view_bank_is_the_mean_stage1_code_per_view(run):
    from lordfx_trainer.evaluation.runs import load_run, stage1_codes

    bundle = load_bundle(run / "bundle")
    info, bank = bundle.info["view_bank"], bundle.extras["view_bank.safetensors"]
    assert info["factors"] == ["azimuth", "elevation"] and info["num_views"] == 48
    assert info["values"] == {"azimuth": [15.0 * a for a in range(24)], "elevation": [0.0, 6.0]}
    assert "view_bank.safetensors" in bundle.info["files"]  # sha256 listed and verified
    assert bank["codes"].shape == (48, 16) and bank["counts"].tolist() == [3] * 48
    loaded = load_run(run, "cpu")  # 3 training classes x 48 views
    codes = stage1_codes(loaded, 64).content_codes
    labels = loaded.train.content_labels
    from lordfx_trainer.view_bank import content_encoder_codes

    located = content_encoder_codes(bundle.model, loaded.train.images)  # where's space: E_c
    assert info["locate_source"].startswith("stage-2 content encoder")
    for k in (0, 17, 47):
        a, e = bank["labels"][k].tolist()
        rows = np.flatnonzero((labels[:, 0] == a) & (labels[:, 1] == e))
        assert torch.allclose(bank["codes"][k], codes[rows].mean(0), atol=1e-6)
        assert torch.allclose(bank["locate_codes"][k], located[rows].mean(0), atol=1e-5)
    assert bank["locate_whiten"].shape == (16, 16)


def test_whitening_makes_the_within_view_covariance_isotropic():
    from lordfx_trainer.view_bank import mean_codes, whitening

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 500)[:, None]
    mix = torch.from_numpy(rng.normal(size=(3, 3)))  # correlated, unequal within-view spread
    codes = (
        torch.from_numpy(rng.normal(size=(2000, 3))) @ mix + torch.arange(4.0)[labels[:, 0], None]
    )
    p = whitening(codes.float(), labels, mean_codes(codes.float(), labels)).double()
    means = mean_codes(codes.float(), labels)["codes"].double()[labels[:, 0]]
    resid = codes - means
    cov = p @ (resid.T @ resid / (2000 - 4)) @ p.T
    assert torch.allclose(cov / cov[0, 0], torch.eye(3, dtype=torch.float64), atol=1e-4)
    assert float(p.norm(dim=1).max()) == pytest.approx(1.0, abs=1e-6)  # rows scaled to max 1


def test_ship_carries_the_view_bank_in_fp16(run):
    src, shipped = load_bundle(run / "bundle"), load_bundle(run.parent / "shipped")
    assert shipped.info["dtype"] == "float16" and shipped.info["view_bank"] == src.info["view_bank"]
    a, b = src.extras["view_bank.safetensors"], shipped.extras["view_bank.safetensors"]
    assert torch.equal(a["labels"], b["labels"]) and b["labels"].dtype == torch.int64
    assert (a["codes"] - b["codes"]).abs().max() < 1e-2


def test_view_bank_command_encoder_source(run, tmp_path):
    import shutil

    from lordfx_trainer.evaluation.runs import encoder_codes, load_run, to_float

    copy = tmp_path / "bundle"
    shutil.copytree(run / "bundle", copy)
    result = _cli(
        "view-bank", str(run), "--source", "encoder", "--locate", "latent", "--bundle", str(copy)
    )
    assert result.exit_code == 0, result.output
    bundle = load_bundle(copy)
    assert bundle.info["view_bank"]["source"].startswith("stage-2 content encoder")
    loaded = load_run(run, "cpu")
    content = encoder_codes(bundle.model, to_float(loaded.train.images, torch.device("cpu")), 64)
    labels = loaded.train.content_labels
    rows = np.flatnonzero((labels[:, 0] == 5) & (labels[:, 1] == 1))
    k = bundle.extras["view_bank.safetensors"]["labels"].tolist().index([5, 1])
    bank = bundle.extras["view_bank.safetensors"]["codes"]
    assert torch.allclose(bank[k], content.content_codes[rows].mean(0), atol=1e-5)
    original = load_bundle(run / "bundle").extras["view_bank.safetensors"]["codes"]
    located = bundle.extras["view_bank.safetensors"]["locate_codes"]
    assert torch.allclose(located, original, atol=1e-6)  # --locate latent: stage-1 means
    bad = _cli("view-bank", str(run), "--source", "pixels", "--bundle", str(copy))
    assert bad.exit_code == 2 and "valid: latent, encoder" in bad.output


# -- nearest view ---------------------------------------------------------------------------
def test_nearest_view_wraps_azimuth_and_says_when_rounded(run):
    from lordfx_cars.views import ViewBank

    bank = ViewBank.from_bundle(load_bundle(run / "bundle"))
    assert len(bank) == 48
    view, rounded = bank.nearest(90, 6)
    assert (view.azimuth, view.elevation, rounded) == (90.0, 6.0, False)
    view, rounded = bank.nearest(-15, 0)  # -15 is 345
    assert (view.azimuth, rounded) == (345.0, False)
    assert bank.nearest(352, 0)[0].azimuth == 345.0 and bank.nearest(353, 0)[0].azimuth == 0.0
    view, rounded = bank.nearest(100, 12)
    assert (view.azimuth, view.elevation, rounded) == (105.0, 6.0, True)
    ring = bank.ring(1, start_azimuth_index=22)
    assert [v.azimuth_index for v in ring][:4] == [22, 23, 0, 1] and len(ring) == 24


# -- verbs ----------------------------------------------------------------------------------
def test_view_writes_the_model_output_and_says_when_rounded(cars_model, run, tmp_path):
    car = _car(tmp_path, run, 5)
    out = tmp_path / "v.png"
    result = _cli("cars", "view", str(car), "--azimuth", "100", "--elevation", "5", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "using the nearest: azimuth 105°, elevation 6°" in result.stderr
    bundle = load_bundle(cars_model)
    bank = bundle.extras["view_bank.safetensors"]
    k = bank["labels"].tolist().index([7, 1])
    x = torch.from_numpy(np.array(Image.open(car))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = bundle.model.decode(bank["codes"][k : k + 1], bundle.model.encode_class(x))
    got = torch.from_numpy(np.array(Image.open(out))).permute(2, 0, 1).float() / 255
    assert got.shape == (3, 16, 16)  # model size
    assert (got - expected[0]).abs().max() <= 1 / 255 + 1e-6
    exact = _cli("cars", "view", str(car), "-a", "90", "-e", "6", "--size", "40")
    assert exact.exit_code == 0 and "nearest" not in exact.stderr
    assert Image.open(exact.stdout.strip()).size == (40, 40)  # default name, in the cwd
    Path(exact.stdout.strip()).unlink()


def test_view_on_a_folder_reports_bad_files(cars_model, run, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _car(folder, run, 0, "a.png")
    _car(folder, run, 50, "b.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = _cli("cars", "view", str(folder), "-a", "30", "-e", "0", "-o", str(out))
    assert result.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert "notes.txt" in result.stderr and "1 failed" in result.stderr
    bad = _cli("cars", "view", str(folder / "a.png"), "-a", "0", "-e", "0", "-o", "x.xyz")
    assert bad.exit_code == 2 and "x.xyz" in bad.stderr  # refused before any work


def test_turntable_gif_has_every_azimuth_from_the_own_view(cars_model, run, tmp_path):
    car = _car(tmp_path, run, 3)
    editor = lordfx.load("cars")
    own = editor.where(car)
    gif = tmp_path / "spin.gif"
    result = _cli("cars", "turntable", str(car), "-o", str(gif), "--fps", "10", "--size", "32")
    assert result.exit_code == 0, result.output
    frames = editor.turntable(car)
    assert len(frames) == 24 and frames[0].size == (16, 16)
    big = [np.asarray(f) for f in editor.turntable(car, size=32)]
    # GIF merges a frame identical to the one before it into that one's duration (Pillow);
    # a tiny model draws some neighbouring views alike, so count what must remain.
    distinct = 1 + sum(not np.array_equal(a, b) for a, b in zip(big, big[1:], strict=False))
    with Image.open(gif) as im:
        assert im.n_frames == distinct and im.size == (32, 32) and im.info["loop"] == 0
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
            if i == 0:  # the own view, up to GIF's 256-colour palette
                diff = np.abs(np.asarray(im.convert("RGB")).astype(int) - big[0]).mean()
                assert diff < 3
    assert sum(durations) == 24 * 100  # 24 views at 10 fps
    first = editor.view(car, azimuth=own.azimuth, elevation=own.elevation)
    assert np.array_equal(np.asarray(frames[0]), np.asarray(first))  # starts at its own view
    low = editor.turntable(car, elevation=0)
    second = (own.azimuth + 15) % 360
    assert np.array_equal(np.asarray(low[1]), np.asarray(editor.view(car, second, 0)))


def test_turntable_mp4_and_refusals(cars_model, run, tmp_path):
    import cv2

    car = _car(tmp_path, run, 3)
    mp4 = tmp_path / "spin.mp4"
    result = _cli("cars", "turntable", str(car), "-o", str(mp4))
    assert result.exit_code == 0, result.output
    cap = cv2.VideoCapture(str(mp4))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    assert count == 24
    png = _cli("cars", "turntable", str(car), "-o", str(tmp_path / "spin.png"))
    assert png.exit_code == 1 and "use .gif or .mp4" in png.stderr
    low = _cli("cars", "turntable", str(car), "-o", str(tmp_path / "low.gif"), "-e", "2")
    assert low.exit_code == 0 and "using the nearest: 0°" in low.stderr
    odd = _cli("cars", "turntable", str(car), "-o", str(mp4), "--size", "33")
    assert odd.exit_code == 1 and "even" in odd.stderr
    folder = _cli("cars", "turntable", str(tmp_path), "-o", str(tmp_path / "x.gif"))
    assert folder.exit_code == 1 and "one image" in folder.stderr
    assert not (tmp_path / "x.gif").exists() and not (tmp_path / "spin.png").exists()


def test_where_agrees_with_the_eval_and_api(cars_model, run, tmp_path, monkeypatch):
    from lordfx_trainer.evaluation.cars import nearest_views

    # The editor infers in bf16 where the CPU has it natively (lordfx.precision); the eval
    # and the direct computation below run fp32, and this tiny model's nearest view can
    # differ between the two. Same numerics here, so the test is about the logic.
    monkeypatch.setenv("LORDFX_PRECISION", "fp32")

    car = _car(tmp_path, run, 40)
    result = _cli("cars", "where", str(car), "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    bundle = load_bundle(cars_model)
    bank = bundle.extras["view_bank.safetensors"]
    x = torch.from_numpy(np.array(Image.open(car))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        found = nearest_views(
            bundle.model.encode_content(x), bank["locate_codes"], bank["locate_whiten"]
        )
        k = int(found[0])
    a, e = bank["labels"][k].tolist()
    assert (row["azimuth_index"], row["elevation_index"]) == (a, e)
    assert (row["azimuth"], row["elevation"]) == (15 * a, 6 * e)
    assert lordfx.load("cars").where(car).as_dict() == {k: row[k] for k in row if k != "image"}
    text = _cli("cars", "where", str(car))
    assert text.stdout.strip() == f"{car}: azimuth {15 * a}°, elevation {6 * e}°"


def test_transfer_still_works_for_cars(cars_model, run, tmp_path):
    a, b = _car(tmp_path, run, 0, "a.png"), _car(tmp_path, run, 60, "b.png")
    out = tmp_path / "t.png"
    result = _cli("transfer", "--domain", "cars", str(a), str(b), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (16, 16)


def test_no_model_and_no_view_bank_errors(run, tmp_path, monkeypatch):
    import shutil

    import lordfx_cars

    car = _car(tmp_path, run, 0)
    monkeypatch.setattr(lordfx_cars, "MODEL_DIR", tmp_path / "nothing")
    reset_host()
    for verb in (
        ["view", str(car), "-a", "0", "-e", "0"],
        ["turntable", str(car)],
        ["where", str(car)],
    ):
        result = _cli("cars", *verb)
        assert result.exit_code == 1 and "cars plugin has no trained model yet" in result.stderr
    bare = tmp_path / "bare"
    shutil.copytree(run / "bundle", bare)
    info = json.loads((bare / "config.json").read_text())
    del info["view_bank"], info["files"]["view_bank.safetensors"]
    (bare / "config.json").write_text(json.dumps(info))
    monkeypatch.setattr(lordfx_cars, "MODEL_DIR", bare)
    reset_host()
    result = _cli("cars", "where", str(car))
    assert result.exit_code == 1 and "no view bank; add one with `lordfx view-bank" in result.stderr
    with pytest.raises(LordfxError, match="no view bank"):
        lordfx.load("cars").view(car, azimuth=0, elevation=0)


# -- metrics --------------------------------------------------------------------------------
def test_where_accuracy_counts_neighbours_and_flips():
    from lordfx_trainer.evaluation.cars import where_accuracy

    truth = np.array([[0, 1], [0, 1], [0, 1], [5, 0], [10, 2]])
    found = np.array([[0, 1], [23, 1], [12, 1], [6, 1], [10, 2]])
    acc = where_accuracy(found, truth, 24)
    assert acc["exact"] == pytest.approx(2 / 5)
    assert acc["within_1_azimuth_step"] == pytest.approx(3 / 5)  # 23 is next to 0; 6≠5 elev
    assert acc["back_to_front"] == pytest.approx(1 / 5)
    assert acc["azimuth"] == pytest.approx(2 / 5) and acc["elevation"] == pytest.approx(4 / 5)


def test_eval_cars_writes_view_and_where_metrics(run, tmp_path):
    out = tmp_path / "eval_cars.json"
    args = ["eval-cars", str(run), "--pairs", "40", "--no-lpips", "--device", "cpu", "-o", str(out)]
    result = _cli(*args)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["heldout"] == {"cars": 2, "images": 96}
    assert data["where"]["chance_exact"] == pytest.approx(1 / 48)
    assert 0 <= data["where"]["exact"] <= data["where"]["within_1_azimuth_step"] <= 1
    view = data["view"]
    assert set(view) == {"pairs", "view", "copy_input", "transfer_from_reference"}
    assert all(view[k]["l1"] > 0 for k in ("view", "copy_input", "transfer_from_reference"))
    assert data["command"].startswith("lordfx eval-cars") and "| view |" in result.stdout
    figures = sorted((tmp_path / "eval_cars").glob("turntable_*.png"))
    assert len(figures) == 2 == len(data["turntables"])  # both held-out classes
    assert Image.open(figures[0]).size == (24 * 16 * 2, 2 * 16 * 2)  # real row, spin row, x2
    assert all(0 < t["l1_to_real_ring"] < 1 for t in data["turntables"])


def test_eval_cars_scores_a_shipped_bundle_without_its_run(run, tmp_path):
    """The shipped fp16 bundle alone re-creates its held-out split from what it records."""
    shipped = run.parent / "shipped"
    refused = _cli("eval-cars", str(shipped), "--no-lpips", "--device", "cpu")
    assert refused.exit_code != 0 and "--out" in refused.output and str(shipped) in refused.output
    assert not (shipped / "eval_cars.json").exists()
    scores = []
    for source in (run, shipped):
        out = tmp_path / f"{source.name}.json"
        args = ["eval-cars", str(source), "--pairs", "40", "--no-lpips", "--device", "cpu"]
        result = _cli(*args, "-o", str(out))
        assert result.exit_code == 0, result.output
        scores.append(json.loads(out.read_text()))
    from_run, from_bundle = scores
    assert from_bundle["heldout"] == from_run["heldout"] == {"cars": 2, "images": 96}
    assert from_bundle["run"] == str(shipped) and "--out" in from_bundle["command"]
    # fp16 weights: the same pairs, nearly the same numbers
    assert from_bundle["view"]["view"]["l1"] == pytest.approx(
        from_run["view"]["view"]["l1"], abs=2e-3
    )
    assert abs(from_bundle["where"]["exact"] - from_run["where"]["exact"]) <= 0.05


def test_bundle_heldout_refuses_a_changed_split(run, tmp_path):
    import shutil

    from lordfx_trainer.evaluation.runs import bundle_heldout

    copy = tmp_path / "bundle"
    shutil.copytree(run.parent / "shipped", copy)
    info = json.loads((copy / "config.json").read_text())
    info["data"]["split"]["heldout_class_names"] = ["someone", "else"]
    (copy / "config.json").write_text(json.dumps(info))
    with pytest.raises(LordfxError, match="differ from the recorded"):
        bundle_heldout(copy)
