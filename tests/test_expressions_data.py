"""The taiwanese_expressions reader, performer hold-out and the colour expressions crops.

Fake photos are the public-domain examples/grace_hopper.jpg framed like the database's
128² posed photos (head and shoulders, face box ~0.73 of the side); the real database is
read only when ../shared/data is present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lordfx_trainer.config import TrainConfig
from lordfx_trainer.data import load_dataset, split_groups
from lordfx_trainer.data.fer2013 import EXPRESSIONS
from lordfx_trainer.data.taiwanese import read_ratings
from lordfx_trainer.train import prepare_data
from PIL import Image

from lordfx.errors import InputError, UsageError

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "examples" / "grace_hopper.jpg"
# Grace Hopper's Haar box is (155, 105, 222, 222); the database's photos have side / box
# width 1.376 and the box centre 0.118 box heights below the image centre.
POSED_BOX = (113, 37, 419, 343)
HEADER = (
    "file_name,Self_evaluate,Observer_Count,maxIntCategory,maxInt,EntropyVal,counterMax,,,,,,\n"
    ",,,,,,happy,sad,angry,disgusted,fearful,surprised\n"
)


def _posed(flip: bool = False) -> Image.Image:
    im = Image.open(PHOTO).convert("RGB").crop(POSED_BOX).resize((128, 128), Image.LANCZOS)
    return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else im


@pytest.fixture
def fake_root(tmp_path, monkeypatch) -> Path:
    """Performers 01 and 02 posing neutral/happy/sad, one unlabelled file, one odd name,
    and observer ratings (happy agreed on, sad not)."""
    monkeypatch.setenv("LORDFX_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "tw"
    (root / "images").mkdir(parents=True)
    for performer in ("01", "02"):
        for letter in "abc":
            _posed(flip=performer == "02").save(root / "images" / f"{performer}11{letter}01.jpg")
    _posed().save(root / "images" / "0111001.jpg")  # no expression letter: skipped
    _posed().save(root / "images" / "notes.jpg")  # not a database name: skipped
    rows = [
        "0111b01.tif,N/A,100,1,0.9,1,0.80,0.05,0.05,0.05,0.03,0.02",
        "0211b01.tif,N/A,100,1,0.9,1,0.70,0.10,0.05,0.05,0.05,0.05",
        "0111c01.tif,N/A,100,2,0.9,1,0.10,0.60,0.10,0.10,0.05,0.05",
        "0211c01.tif,N/A,100,3,0.9,1,0.10,0.20,0.50,0.10,0.05,0.05",
    ]
    (root / "image_info.csv").write_text(HEADER + "\n".join(rows) + "\n")
    return root


def test_labels_content_and_provenance(fake_root):
    ds = load_dataset("taiwanese", fake_root, 32, 3, crop="none")
    assert ds.num_images == 6 and ds.class_names == EXPRESSIONS
    letters = {"a": "neutral", "b": "happy", "c": "sad"}
    expected = [EXPRESSIONS.index(letters[c]) for c in "abcabc"]  # files in name order
    assert ds.class_ids.tolist() == expected
    assert ds.content_names == ("performer", "type")
    assert ds.content_labels[:, 0].tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.meta["content_values"]["performer"] == ["01", "02"]
    assert ds.meta["unlabelled_skipped"] == ["0111001.jpg"]
    assert "research" in ds.meta["licence"]


def test_face_crops_follow_the_plugin_and_are_cached(fake_root, monkeypatch):
    from lordfx_expressions.preprocess import POSED_FRAMING, ExpressionPreprocessor

    ds = load_dataset("taiwanese", fake_root, 32, 3)
    assert ds.images.shape == (6, 32, 32, 3) and ds.meta["no_face"] == []
    assert ds.meta["framing"]["scale"] == POSED_FRAMING.scale
    # the crop is the face: darker (hair, eyes) and more varied than the plain photo resize
    plain = load_dataset("taiwanese", fake_root, 32, 3, crop="none")
    assert not np.array_equal(ds.images, plain.images)
    grey = load_dataset("taiwanese", fake_root, 32, 1)  # boxes from the cache
    assert grey.images.shape == (6, 32, 32, 1)

    def no_detection(self, image):  # noqa: ANN001, ANN202
        raise AssertionError("detect() called although every box is cached")

    monkeypatch.setattr(ExpressionPreprocessor, "detect", no_detection)
    again = load_dataset("taiwanese", fake_root, 32, 3)
    np.testing.assert_array_equal(again.images, ds.images)


def test_ratings_filter_drops_poses_observers_did_not_agree_on(fake_root):
    ratings = read_ratings(fake_root / "image_info.csv")
    assert ratings["0111b01"]["happy"] == pytest.approx(0.8)
    ds = load_dataset("taiwanese", fake_root, 32, 3, crop="none", min_agreement=0.55)
    # 0211c01 (sad rated 0.2) goes; neutral photos have no rating category and stay
    assert ds.num_images == 5
    assert ds.meta["dropped_by_ratings"] == {"low_agreement": 1, "unrated_kept": 0}
    with pytest.raises(UsageError, match="min_agreement"):
        load_dataset("taiwanese", fake_root, 32, 3, crop="none", min_agreement=1.5)


def test_bad_folder_and_options(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(InputError, match="no taiwanese_expressions photos"):
        load_dataset("taiwanese", tmp_path, 32, 3)
    with pytest.raises(UsageError, match="crop"):
        load_dataset("taiwanese", tmp_path, 32, 3, crop="square")


def test_split_groups_holds_out_whole_performers(fake_root):
    ds = load_dataset("taiwanese", fake_root, 16, 3, crop="none")
    train, held = split_groups(ds, "performer", 1, seed=3)
    assert train.num_images + held.num_images == ds.num_images
    held_ids = set(held.content_labels[:, 0].tolist())
    assert len(held_ids) == 1 and held_ids.isdisjoint(train.content_labels[:, 0].tolist())
    assert held.class_names == train.class_names == EXPRESSIONS  # classes on both sides
    split = held.meta["split"]
    assert split["kind"] == "groups" and split["seed"] == 3 and split["part"] == "heldout"
    assert split["heldout_groups"] == [ds.meta["content_values"]["performer"][held_ids.pop()]]
    again, _ = split_groups(ds, "performer", 1, seed=3)
    np.testing.assert_array_equal(again.images, train.images)
    with pytest.raises(ValueError, match="no content label"):
        split_groups(ds, "identity", 1)
    with pytest.raises(ValueError, match="num_heldout"):
        split_groups(ds, "performer", 2)


def test_prepare_data_holds_out_performers(fake_root):
    cfg = TrainConfig(
        dataset="taiwanese", image_size=16, heldout_group="performer", num_heldout_groups=1
    )
    train, held = prepare_data(cfg, fake_root)
    assert train.num_images == held.num_images == 3
    assert held.meta["split"]["group"] == "performer"
    with pytest.raises(UsageError, match="heldout_group"):
        prepare_data(
            TrainConfig(dataset="taiwanese", heldout_group="x", num_heldout_groups=1), fake_root
        )
    with pytest.raises(UsageError, match="go together"):
        TrainConfig(heldout_group="performer")


def test_colour_preprocessor_crops_and_pastes_in_colour():
    from lordfx_expressions.preprocess import POSED_FRAMING, make_preprocessor

    photo = Image.open(PHOTO).convert("RGB")
    pre = make_preprocessor(32, channels=3)
    assert pre.framing == POSED_FRAMING
    x, ctx = pre.to_model(photo)
    assert x.shape == (3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    # colour crop: the channels differ (a grey crop would repeat one)
    assert not torch.equal(x[0], x[1])
    same = pre.from_model_delta(x, x, ctx, photo)
    assert np.array_equal(np.asarray(same), np.asarray(photo))
    brighter = pre.from_model_delta((x + 0.2).clamp(0, 1), x, ctx, photo)
    diff = np.asarray(brighter).astype(int) - np.asarray(photo).astype(int)
    assert diff.max() > 20 and (diff[:20] == 0).all()  # the face changed, the top rows not
    pasted = pre.from_model(x.flip(0), ctx, photo)  # RGB → BGR: the face's colours change
    assert pasted.mode == "RGB" and pasted.size == photo.size
    assert (np.asarray(pasted) != np.asarray(photo)).any()
    with pytest.raises(ValueError, match="tensor"):
        pre.from_model(x[:1], ctx, photo)
    grey = pre.from_model_delta(x, x, ctx, photo.convert("L"))
    assert grey.mode == "L"


def test_real_database_counts(shared_data):
    root = shared_data / "taiwanese_expressions"
    if not root.is_dir():
        pytest.skip("taiwanese_expressions is not available")
    ds = load_dataset("taiwanese", root, 16, 3, crop="none")
    counts = dict(zip(EXPRESSIONS, ds.class_counts().tolist(), strict=True))
    # shared/data/README.md's counts (1,232 files, 9 without a letter)
    assert counts == {
        "angry": 200,
        "disgust": 198,
        "fear": 151,
        "happy": 226,
        "neutral": 69,
        "sad": 197,
        "surprise": 182,
    }
    assert len(ds.meta["content_values"]["performer"]) == 29
    assert len(ds.meta["unlabelled_skipped"]) == 9


# -- a colour model through the user-facing paths -------------------------------------------
@pytest.fixture
def colour_editor(tmp_path, monkeypatch):
    """``lordfx.load("expressions")`` with a tiny random 16² colour bundle in place."""
    import dataclasses

    from lordfx.bundle import save_bundle
    from lordfx.host import get_host
    from lordfx.nets import AmortizedModel, ModelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(image_size=16, channels=3, content_dim=8, class_dim=8, width=0.125)
    codes = 3 * torch.randn(len(EXPRESSIONS), cfg.class_dim)
    bundle = save_bundle(
        tmp_path / "bundle", AmortizedModel(cfg), {"class_names": list(EXPRESSIONS)}, codes
    )
    host = get_host()
    domain = dataclasses.replace(host.domains["expressions"], bundle=bundle)
    monkeypatch.setitem(host.domains, "expressions", domain)
    import lordfx

    return lordfx.load("expressions")


def test_colour_bundle_edits_photos_through_the_api_and_cli(colour_editor, tmp_path):
    from lordfx_expressions.preprocess import POSED_FRAMING
    from typer.testing import CliRunner

    from lordfx.cli import build_app

    assert colour_editor.pre.channels == 3 and colour_editor.pre.framing == POSED_FRAMING
    photo = Image.open(PHOTO).convert("RGB")
    before = np.asarray(photo)
    for render in ("warp", "generate"):
        out = colour_editor.set_expression(photo, "happy", render=render)
        assert out.size == photo.size and out.mode == "RGB"
        assert (np.asarray(out)[:20] == before[:20]).all()  # far from the face: unchanged
    generated = np.asarray(colour_editor.set_expression(photo, "happy", render="generate"))
    assert (generated != before).any()
    same = colour_editor.set_expression(photo, "sad", strength=0.0)
    assert np.array_equal(np.asarray(same), before)
    runner, app = CliRunner(), build_app()
    listed = runner.invoke(app, ["expression", "--list"])
    assert listed.exit_code == 0 and listed.stdout.split() == list(EXPRESSIONS)
    folder = tmp_path / "in"
    folder.mkdir()
    photo.save(folder / "a.jpg")
    photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / "b.jpg")
    one = runner.invoke(
        app,
        ["expression", str(folder / "a.jpg"), "--to", "surprise", "--face", "0",
         "--strength", "0.5", "-o", str(tmp_path / "a_out.png")],
    )  # fmt: skip
    assert one.exit_code == 0, one.output
    batch = runner.invoke(
        app, ["expression", str(folder), "--to", "angry", "-o", str(tmp_path / "out")]
    )
    assert batch.exit_code == 0, batch.output
    assert len(list((tmp_path / "out").iterdir())) == 2
    with Image.open(tmp_path / "a_out.png") as im:
        assert im.size == photo.size


def test_config_key_reaches_the_reader_and_other_readers_refuse_it(tmp_path):
    from lordfx_trainer.config import TrainConfig
    from lordfx_trainer.train import data_options, prepare_data

    cfg = TrainConfig(dataset="taiwanese", data_min_agreement=0.5)
    assert data_options(cfg) == {"min_agreement": 0.5}
    assert data_options(TrainConfig(dataset="taiwanese")) == {}
    wrong = TrainConfig(dataset="cars3d", data_min_agreement=0.5)
    with pytest.raises(UsageError, match="min_agreement"):
        prepare_data(wrong, tmp_path)


@pytest.fixture
def fake_fer(tmp_path) -> Path:
    """A FER2013-like train/ tree: Grace Hopper's face box as 48² grey, one copy per
    expression folder (each shifted by a pixel, so de-duplication keeps them all)."""
    root = tmp_path / "fer"
    face = Image.open(PHOTO).convert("L")
    for k, name in enumerate(EXPRESSIONS):
        (root / "train" / name).mkdir(parents=True)
        box = (155 + k, 105, 377 + k, 327)
        face.crop(box).resize((48, 48), Image.LANCZOS).save(root / "train" / name / "1.jpg")
    return root


def test_fer2013_photos_join_the_training_side_only(fake_root, fake_fer):
    from lordfx_trainer.data.taiwanese import posed_only

    ds = load_dataset("taiwanese", fake_root, 32, 3, fer2013=str(fake_fer), fer2013_per_class=5)
    record = ds.meta["fer2013"]
    added = record["chosen"] - record["no_face"]
    assert record["chosen"] == 7 and added >= 5  # one per folder; Haar finds most of them
    assert ds.num_images == 6 + added
    fer = ds.images[6:]
    assert (fer[..., 0] == fer[..., 1]).all() and (fer[..., 1] == fer[..., 2]).all()  # grey
    performers = ds.meta["content_values"]["performer"]
    assert performers[:2] == ["01", "02"]  # the posed performers keep their indices
    never = ds.meta["never_heldout"]["performer"]
    assert len(never) == added and all(n.startswith("fer:") for n in never)
    for seed in range(6):  # the draw is among the posed performers only
        train, held = split_groups(ds, "performer", 1, seed=seed)
        assert held.num_images == 3 and train.num_images == 3 + added
        plain, _ = split_groups(posed_only(ds), "performer", 1, seed=seed)
        assert held.meta["split"]["heldout_groups"] == plain.meta["split"]["heldout_groups"]
    only = posed_only(ds)
    np.testing.assert_array_equal(only.images, ds.images[:6])
    with pytest.raises(UsageError, match="go together"):
        load_dataset("taiwanese", fake_root, 32, 3, fer2013=str(fake_fer))
    with pytest.raises(InputError, match="train"):
        load_dataset("taiwanese", fake_root, 32, 3, fer2013=str(fake_root), fer2013_per_class=1)
    cfg = TrainConfig(dataset="taiwanese", data_fer2013="x", data_fer2013_per_class=3)
    from lordfx_trainer.train import data_options

    assert data_options(cfg) == {"fer2013": "x", "fer2013_per_class": 3}
