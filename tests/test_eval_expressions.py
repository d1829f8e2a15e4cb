"""`lordfx eval-expressions`: the judge classifier, the translation plumbing, the CLI.

Everything runs on synthetic stand-ins: a FER2013-shaped folder of random 16×16 images, a
tiny random-weight model, a Yale-shaped folder of GIFs without extension.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from lordfx_trainer.cli.eval_expressions_cli import eval_expressions_command
from lordfx_trainer.data.fer2013 import EXPRESSIONS
from lordfx_trainer.evaluation import expr_yale
from lordfx_trainer.evaluation.expr_classifier import (
    ClassifierSettings,
    accuracy_report,
    load_or_train,
    predict,
    to_float,
    train_classifier,
)
from lordfx_trainer.evaluation.expressions import (
    stratified_sample,
    translate,
    translation_predictions,
    translation_report,
)
from PIL import Image
from typer.testing import CliRunner

from lordfx.cli import build_app
from lordfx.nets import AmortizedModel, ModelConfig
from lordfx.preprocess import ResizePreprocessor

TINY = Path(__file__).with_name("tiny.toml")
runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Deterministic and polite on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _bars(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Noise with a bright horizontal bar whose row says the class. Shape: (N, S, S, 1)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 90, (len(labels), size, size, 1), dtype=np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 + 4 * k : 4 + 4 * k, :, 0] = 255
    return images


# -- the classifier -------------------------------------------------------------------------
SMALL = ClassifierSettings(16, 1, num_classes=3, width=8, epochs=6, batch_size=32, lr=1e-2)


def test_classifier_learns_a_separable_task():
    labels = np.repeat(np.arange(3), 60)
    model, record = train_classifier(_bars(labels, 16, 0), labels, SMALL)
    assert record["val_accuracy"] >= 0.95 and record["num_val"] == 18
    assert 1 <= record["best_epoch"] <= 6 and len(record["history"]) == 6
    fresh = np.tile(np.arange(3), 30)
    accuracy = np.mean(predict(model, to_float(_bars(fresh, 16, 1))) == fresh)
    assert accuracy >= 0.95


def test_classifier_is_at_chance_on_random_labels():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 180)
    images = rng.integers(0, 256, (180, 16, 16, 1), dtype=np.uint8)
    model, _ = train_classifier(images, labels, SMALL)
    fresh = rng.integers(0, 3, 600)
    predicted = predict(model, to_float(rng.integers(0, 256, (600, 16, 16, 1), dtype=np.uint8)))
    assert abs(np.mean(predicted == fresh) - 1 / 3) < 0.1


def test_classifier_cache_is_keyed_by_settings(tmp_path):
    labels = np.repeat(np.arange(3), 10)
    calls = []

    def data():
        calls.append(1)
        return _bars(labels, 16, 0), labels

    one = ClassifierSettings(16, 1, num_classes=3, width=4, epochs=1)
    m1, r1 = load_or_train(tmp_path, one, {"root": "x"}, data)
    m2, r2 = load_or_train(tmp_path, one, {"root": "x"}, data)
    assert (r1["cached"], r2["cached"], len(calls)) == (False, True, 1)
    assert r2["val_accuracy"] == r1["val_accuracy"] and r2["file"] == r1["file"]
    x = to_float(_bars(labels, 16, 3))
    assert np.array_equal(predict(m1, x), predict(m2, x))
    load_or_train(tmp_path, one, {"root": "y"}, data)  # other data: another classifier
    assert len(calls) == 2 and len(list(tmp_path.glob("expr_classifier-*.safetensors"))) == 2


def test_landmark_judge_cache_key_follows_the_landmark_features(monkeypatch):
    """A change of the landmark features (LANDMARK_FEATURES) misses the cached landmark judge
    and leaves the VGG-only judge's key alone."""
    from lordfx_trainer.evaluation import expr_probe
    from lordfx_trainer.evaluation.expr_classifier import cache_key

    lmk = ClassifierSettings(16, 1, num_classes=3, kind="vgg-landmarks")
    vgg = ClassifierSettings(16, 1, num_classes=3, kind="vgg-probe")
    before = cache_key(lmk, {"root": "x"}), cache_key(vgg, {"root": "x"})
    monkeypatch.setattr(expr_probe, "LANDMARK_FEATURES", expr_probe.LANDMARK_FEATURES + 1)
    after = cache_key(lmk, {"root": "x"}), cache_key(vgg, {"root": "x"})
    assert before[0] != after[0] and before[1] == after[1]


def test_accuracy_report_and_chance():
    report = accuracy_report(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), ["a", "b", "c"])
    assert report["accuracy"] == 0.5 and report["n"] == 4
    assert report["balanced_accuracy"] == pytest.approx((1 + 1 / 3) / 2)  # c is absent
    assert report["per_class"]["c"] == {"accuracy": None, "n": 0}
    assert report["chance"] == {"uniform": 1 / 3, "majority": 0.75, "majority_class": "b"}


def test_stratified_sample_is_as_balanced_as_possible():
    ids = np.repeat(np.arange(3), [2, 50, 100])
    sample = stratified_sample(ids, 30, seed=0)
    assert np.bincount(ids[sample]).tolist() == [2, 14, 14]
    assert np.array_equal(sample, stratified_sample(ids, 30, seed=0))
    assert len(stratified_sample(ids, 1000, seed=0)) == len(ids)


# -- translation plumbing on a random-weight model ------------------------------------------
@pytest.fixture(scope="module")
def model() -> AmortizedModel:
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=16, channels=1, content_dim=8, class_dim=8, width=0.125)
    return AmortizedModel(cfg).eval().requires_grad_(False)


def test_translation_uses_the_target_class_code(model):
    torch.manual_seed(1)
    codes, images = torch.randn(7, 8), torch.rand(5, 1, 16, 16)
    for strength in (1.0, 0.5):
        with torch.no_grad():
            content, own = model.encode_content(images), model.encode_class(images)
            expected = torch.stack(  # (K, N, C, S, S): x(t) computed by hand
                [model.decode(content, own + strength * (code - own)) for code in codes]
            )

        def nearest_target(out, expected=expected):
            # a "classifier" that knows the answer: which hand-made x(t) is this output?
            dist = (out[None, :] - expected).flatten(2).abs().amax(2)  # (K, B)
            return dist.argmin(0).numpy()

        preds = translation_predictions(model, codes, images, nearest_target, strength, 2)
        assert preds.shape == (5, 7) and (preds == np.arange(7)[None, :]).all()
    out = translate(model, content, own, codes[3], 1.0, 2)
    assert out.shape == (5, 1, 16, 16) and 0 <= out.min() and out.max() <= 1


def test_translation_report_with_a_constant_classifier(model):
    codes, images = torch.randn(7, 8), torch.rand(6, 1, 16, 16)

    def always_happy(x):
        return np.full(len(x), EXPRESSIONS.index("happy"))

    preds = translation_predictions(model, codes, images, always_happy)
    sources = np.array([3, 3, 0, 1, 4, -1])  # two happy sources, one unknown
    r = translation_report(preds, list(range(7)), EXPRESSIONS, sources, 7)
    assert r["per_target"]["happy"]["accuracy"] == 1.0 and r["per_target"]["sad"]["accuracy"] == 0
    assert r["per_target"]["happy"]["n_other_sources"] == 3  # known and not happy
    assert r["mean_accuracy"] == pytest.approx(1 / 7) and r["chance"] == pytest.approx(1 / 7)
    assert r["by_source"]["3"]["happy"] == 1.0 and "-1" not in r["by_source"]
    assert r["n_other_sources"] == 5 * 7 - 5  # the diagonal: each known source once


# -- the CLI on a tiny FER2013-shaped run ---------------------------------------------------
def _fake_fer(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 8), ("test", 4)):
        for k, name in enumerate(EXPRESSIONS):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, image in enumerate(_bars(np.full(per_class, k % 3), 16, rng.integers(1 << 30))):
                Image.fromarray(image[:, :, 0]).save(folder / f"{split}_{k}_{i}.png")
    return root


def _fake_yale(root: Path) -> Path:
    root.mkdir()
    rng = np.random.default_rng(1)
    for subject in (1, 2):
        for condition in ("happy", "normal", "sad", "surprised", "wink"):
            pixels = rng.integers(0, 256, (24, 32), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"subject{subject:02d}.{condition}", format="GIF")
    (root / "subject03.sad").write_bytes(b"not a gif")  # counted as a failed crop
    return root


@pytest.fixture(scope="module")
def fer_run(tmp_path_factory) -> Path:
    from lordfx_trainer.train import resolve_config, start_run

    root = tmp_path_factory.mktemp("expr")
    overrides = {
        "dataset": "fer2013",
        "channels": 1,
        "num_heldout_classes": 0,
        "latent_epochs": 1,
        "amortized_epochs": 1,
    }
    start_run(resolve_config(str(TINY), overrides), root / "run", _fake_fer(root / "fer"))
    return root / "run"


@pytest.fixture
def app():
    built = build_app()
    if not any(c.name == "eval-expressions" for c in built.registered_commands):
        built.command("eval-expressions")(eval_expressions_command)
    return built


def test_cli_writes_all_keys_and_reuses_the_classifier(fer_run, app, tmp_path, monkeypatch):
    monkeypatch.setattr(
        expr_yale, "default_preprocessor", lambda size, channels=None: ResizePreprocessor(size, 1)
    )
    yale = _fake_yale(tmp_path / "yale")
    args = ["eval-expressions", str(fer_run), "--classifier-epochs", "1", "--max-test", "14"]
    result = runner.invoke(app, [*args, "--yale", str(yale)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("## eval-expressions") and "| angry |" in result.stdout
    data = json.loads((fer_run / "eval_expressions.json").read_text())
    keys = {"format", "args", "bundle", "classifier", "real_test", "translation", "leakage"}
    assert keys | {"yale", "figures", "elapsed_s"} <= set(data)
    assert data["args"]["max_test"] == 14 and data["args"]["yale"] == str(yale)
    assert set(data["bundle"]["files"]) >= {"model.safetensors", "class_codes.safetensors"}
    assert data["classifier"]["cached"] is False and "val_accuracy" in data["classifier"]
    assert data["real_test"]["n"] == 28 and data["real_test"]["chance"]["uniform"] == 1 / 7
    tr = data["translation"]
    assert tr["sample"]["n"] == 14 and set(tr["sample"]["per_class"].values()) == {2}
    for key in ("strength_1", "strength_0.5"):
        assert set(tr[key]["per_target"]) == set(EXPRESSIONS) and tr[key]["n_images"] == 14
    assert {"copy_input", "reconstruction"} <= set(tr)
    for part in ("heldout_test", "stage1_train"):
        assert {"logistic", "mlp", "chance_uniform"} <= set(data["leakage"][part])
    assert data["leakage"]["stage1_train"]["mlp"]["num_train"] + 11 == 56  # 80/20 of 56
    y = data["yale"]
    assert y["detection"] == {
        "num_files": 11,
        "num_cropped": 10,
        "num_failed": 1,
        "failed_by_condition": {"sad": 1},
        "failed_files": {"subject03.sad": y["detection"]["failed_files"]["subject03.sad"]},
    }
    assert y["real"]["n"] == 8 and y["translation"]["n_images"] == 10
    assert y["predicted_by_condition"].keys() == {"happy", "normal", "sad", "surprised", "wink"}
    for name in ("test_grid", "yale_grid"):
        assert (fer_run / data["figures"][name]).stat().st_size > 0
    again = runner.invoke(app, [*args])  # no --yale: skipped; the classifier comes from cache
    assert again.exit_code == 0, again.stderr
    data = json.loads((fer_run / "eval_expressions.json").read_text())
    assert data["classifier"]["cached"] is True and "skipped" in data["yale"]


def test_bad_run_dir_is_a_one_line_error(app, tmp_path):
    result = runner.invoke(app, ["eval-expressions", str(tmp_path)])
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == f"lordfx: error: {tmp_path}: not a lordfx run directory (no config.json)"
    )
    bad = runner.invoke(app, ["eval-expressions", str(tmp_path), "--max-test", "0"])
    assert bad.exit_code == 2 and "--max-test" in bad.stderr


# -- a posed (taiwanese-shaped) run: performers held out, identity, photo sheet -------------
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "grace_hopper.jpg"
POSED_BOX = (113, 37, 419, 343)  # the database's framing of examples/grace_hopper.jpg


@pytest.fixture(scope="module")
def posed_run(tmp_path_factory) -> Path:
    from lordfx_trainer.train import resolve_config, start_run

    root = tmp_path_factory.mktemp("posed")
    images = root / "tw" / "images"
    images.mkdir(parents=True)
    base = Image.open(EXAMPLE).convert("RGB").crop(POSED_BOX).resize((128, 128))
    rng = np.random.default_rng(0)
    for performer in ("01", "02", "03"):
        for letter in "abcdefg":  # a different tint per photo
            tint = rng.integers(-25, 25, 3)
            pixels = np.clip(np.asarray(base, np.int16) + tint, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(images / f"{performer}11{letter}01.jpg")
    overrides = {
        "dataset": "taiwanese",
        "num_heldout_classes": 0,
        "heldout_group": "performer",
        "num_heldout_groups": 1,
        "latent_epochs": 1,
        "amortized_epochs": 1,
    }
    old = os.environ.get("LORDFX_CACHE")
    os.environ["LORDFX_CACHE"] = str(root / "cache")
    try:
        start_run(resolve_config(str(TINY), overrides), root / "run", root / "tw")
        yield root / "run"
    finally:
        if old is None:
            os.environ.pop("LORDFX_CACHE", None)
        else:
            os.environ["LORDFX_CACHE"] = old


def test_posed_run_holds_out_performers_and_reports_identity(posed_run, app):
    args = ["eval-expressions", str(posed_run), "--classifier-epochs", "1", "--max-test", "7"]
    result = runner.invoke(app, [*args, "--photo", str(EXAMPLE)])
    assert result.exit_code == 0, result.stderr
    assert "real held-out performers" in result.stdout
    data = json.loads((posed_run / "eval_expressions.json").read_text())
    held = data["real_test"]["data"]["split"]
    assert held["kind"] == "groups" and len(held["heldout_groups"]) == 1
    assert data["real_test"]["n"] == 7  # the held-out performer's seven photos
    assert data["classifier"]["data"]["heldout_groups"] == held["heldout_groups"]
    assert data["classifier"]["num_train"] + data["classifier"]["num_val"] == 14
    assert data["translation"]["strength_1"]["n_images"] == 7
    ident = data["identity"]
    if "skipped" not in ident:  # dlib is an optional extra
        assert set(ident["per_target"]) == set(EXPRESSIONS)
        assert ident["overall"]["n"] == 49 and ident["threshold"] == 0.6
        assert ident["reference_same_person_real"]["n_pairs"] == 7
    sheet = posed_run / data["figures"]["photo_sheet"]
    with Image.open(sheet) as im:  # one photo × two renders, input + 7 targets
        assert im.size == (8 * 132 + 4, 2 * 132 + 4)
    assert [r["render"] for r in data["photos"]["rows"]] == ["warp", "generate"]


def test_posed_judge_can_add_fer2013(posed_run, app, tmp_path):
    fer = _fake_fer(tmp_path / "fer")  # 8 train images per expression, 16×16 grey
    args = ["eval-expressions", str(posed_run), "--classifier-epochs", "1", "--max-test", "7"]
    result = runner.invoke(app, [*args, "--judge-fer", str(fer), "--no-identity"])
    assert result.exit_code == 0, result.stderr
    data = json.loads((posed_run / "eval_expressions.json").read_text())
    clf = data["classifier"]
    assert clf["data"]["fer2013"]["per_class"] == 500 and clf["cached"] is False
    assert clf["num_train"] + clf["num_val"] == 14 + 7 * 8  # training performers + FER2013
    assert data["identity"] == {"skipped": "--no-identity"}


def test_vgg_probe_learns_bars_and_caches_only_its_head(tmp_path, monkeypatch):
    """The posed-expression judge: frozen VGG16 features (random here, seeded) + a fitted
    standardisation and linear layer; the cache holds those, not VGG16."""
    from lordfx_trainer import weights
    from lordfx_trainer.evaluation.expr_probe import feature_dim

    def random_vgg(allow_random: bool = False) -> torch.nn.Module:
        torch.manual_seed(0)
        return weights.vgg16_features()

    monkeypatch.setattr(weights, "load_vgg16_features", random_vgg)
    probe = ClassifierSettings(16, 1, num_classes=3, kind="vgg-probe", val_fraction=0.2)
    labels = np.repeat(np.arange(3), 12)
    model, record = load_or_train(
        tmp_path, probe, {"root": "x"}, lambda: (_bars(labels, 16, 0), labels)
    )
    assert record["cached"] is False and record["num_train"] == 29 and record["num_val"] == 7
    fresh = np.tile(np.arange(3), 4)
    x = to_float(_bars(fresh, 16, 1))
    assert np.mean(predict(model, x) == fresh) >= 0.9
    assert set(model.state_dict()) == {
        "mean",
        "std",
        "rgb_mean",
        "rgb_std",
        "head.weight",
        "head.bias",
    }
    assert model.head.weight.shape == (3, feature_dim())
    again, cached = load_or_train(tmp_path, probe, {"root": "x"}, lambda: pytest.fail("retrained"))
    assert cached["cached"] is True and np.array_equal(predict(again, x), predict(model, x))


def test_vgg_landmarks_probe_scales_landmarks_and_caches_only_its_head(tmp_path, monkeypatch):
    """kind "vgg-landmarks": the landmark function's numbers follow VGG16's features, their
    standardisation is divided by LANDMARK_GAIN, and the cache round-trips (dlib stubbed: a
    landmark function that reads the bars' position, so the probe can use it)."""
    from lordfx_trainer import weights
    from lordfx_trainer.evaluation import expr_probe

    def random_vgg(allow_random: bool = False) -> torch.nn.Module:
        torch.manual_seed(0)
        return weights.vgg16_features()

    def fake_landmarks(x: torch.Tensor) -> torch.Tensor:  # (N, C, S, S) → (N, 136)
        rows = x.mean(dim=(1, 3))  # (N, S) brightness per row
        pos = (rows * torch.arange(x.shape[2])).sum(1) / rows.sum(1).clamp_min(1e-6)
        return pos[:, None].repeat(1, expr_probe.LANDMARK_DIM) / x.shape[2]

    class FakeDlib:
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return fake_landmarks(x)

    monkeypatch.setattr(weights, "load_vgg16_features", random_vgg)
    monkeypatch.setattr(expr_probe, "DlibLandmarks", FakeDlib)
    s = ClassifierSettings(16, 1, num_classes=3, kind="vgg-landmarks", val_fraction=0.2)
    labels = np.repeat(np.arange(3), 12)
    model, record = load_or_train(
        tmp_path, s, {"root": "x"}, lambda: (_bars(labels, 16, 0), labels)
    )
    assert record["cached"] is False and record["settings"]["kind"] == "vgg-landmarks"
    assert model.head.weight.shape == (3, expr_probe.feature_dim(landmarks=True))
    x = to_float(_bars(np.tile(np.arange(3), 4), 16, 1))
    feats = model.features(x)
    assert torch.allclose(feats[:, -expr_probe.LANDMARK_DIM :], fake_landmarks(x))
    # the landmark columns' stored std = their std on the fit features / LANDMARK_GAIN
    fit = expr_probe.probe_features(model, _bars(labels, 16, 0)[record_fit_idx(labels, s)])
    want = fit[:, -expr_probe.LANDMARK_DIM :].std(0).clamp_min(1e-3) / expr_probe.LANDMARK_GAIN
    assert torch.allclose(model.std[-expr_probe.LANDMARK_DIM :], want, rtol=1e-4)
    again, cached = load_or_train(tmp_path, s, {"root": "x"}, lambda: pytest.fail("retrained"))
    assert cached["cached"] is True
    assert np.array_equal(predict(again, x), predict(model, x))
    with pytest.raises(ValueError, match="probe kind"):
        expr_probe.build_probe(3, "vgg-something")


def record_fit_idx(labels: np.ndarray, s: ClassifierSettings) -> np.ndarray:
    from lordfx_trainer.evaluation.leakage import split_indices

    return split_indices(len(labels), s.seed, s.val_fraction)[0]


def test_dlib_landmarks_on_a_real_face_crop():
    """dlib's 68 points on the expressions plugin's 64² crop of an example photo: unit norm,
    centred, eyes above the mouth, and the same points from a grey copy of the crop."""
    from lordfx_trainer.evaluation.face_metrics import dlib_available

    if not dlib_available():
        pytest.skip("dlib / face_recognition_models not installed (eval-faces extra)")
    from lordfx_expressions.preprocess import make_preprocessor
    from lordfx_trainer.evaluation.expr_probe import LANDMARK_DIM, DlibLandmarks

    from lordfx.imageio import read_image

    pre = make_preprocessor(64, channels=3)
    photo = read_image(EXAMPLE)
    crop = pre.crop(photo, pre.detect(photo)[0])  # (64, 64, 3) uint8
    x = to_float(crop[None])
    pts = DlibLandmarks()(x)
    assert pts.shape == (1, LANDMARK_DIM) and torch.isfinite(pts).all()
    p = pts.view(68, 2)
    assert torch.allclose(p.mean(0), torch.zeros(2), atol=1e-5)
    assert abs(float((p**2).sum()) - 1.0) < 1e-4
    eyes_y, mouth_y = p[36:48, 1].mean(), p[48:68, 1].mean()
    assert eyes_y < mouth_y  # image y grows downwards
    grey = DlibLandmarks()(x.mean(1, keepdim=True))
    assert (grey - pts).abs().max() < 0.05


def test_judge_kind_auto_picks_landmarks_only_where_dlib_is(monkeypatch):
    from lordfx_trainer.evaluation import expr_report, face_metrics

    from lordfx.errors import UsageError

    monkeypatch.setattr(face_metrics, "dlib_available", lambda: True)
    assert expr_report.judge_kind("auto", posed=True) == "vgg-landmarks"
    assert expr_report.judge_kind("auto", posed=False) == "cnn"
    monkeypatch.setattr(face_metrics, "dlib_available", lambda: False)
    assert expr_report.judge_kind("auto", posed=True) == "vgg-probe"
    assert expr_report.judge_kind("vgg-landmarks", posed=False) == "vgg-landmarks"
    with pytest.raises(UsageError, match="--judge must be auto, cnn, vgg-probe, vgg-landmarks"):
        expr_report.judge_kind("landmarks", posed=True)
