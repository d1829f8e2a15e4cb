"""Shoes (issue 19): k-means determinism, cluster-shoes on synthetic pairs, the hand-drawn
edge-map normalisation, the verbs without a model, and a tiny trained bundle through
from-edges / to-edges / styles (CLI and Python API).

Synthetic pairs mimic edges2shoes_mix: 256×128 JPEGs, photo LEFT, edge map RIGHT; "shoes"
are left-right asymmetric wedges, "bags" symmetric boxes with a handle.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lordfx.cli import build_app
from lordfx.host import reset_host

TINY = Path(__file__).with_name("tiny.toml")
runner = CliRunner()
COLOURS = [(200, 40, 30), (30, 30, 30), (150, 100, 50)]  # RGB


def _shoe(rng: np.random.Generator) -> np.ndarray:
    """A shoe-like side view: low toe on the left, high heel on the right."""
    x0, x1 = rng.integers(8, 20), rng.integers(108, 120)
    top = rng.integers(30, 50)
    return np.array(
        [[x0, 100], [x0 + 10, 80], [60, 72], [x1 - 20, top], [x1, top], [x1, 104], [x0, 104]]
    )


def _bag(rng: np.random.Generator) -> np.ndarray:
    """A bag-like front view: a symmetric box (the handle is drawn separately)."""
    half, top = rng.integers(35, 55), rng.integers(45, 60)
    return np.array(
        [[64 - half, top], [64 + half, top], [64 + half + 4, 110], [64 - half - 4, 110]]
    )


def _pair(kind: str, colour: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    poly = (_shoe if kind == "shoe" else _bag)(rng).astype(np.int32)
    photo = np.full((128, 128, 3), 255, np.uint8)
    edges = np.full((128, 128, 3), 255, np.uint8)
    cv2.fillPoly(photo, [poly], colour)
    cv2.polylines(edges, [poly], True, (0, 0, 0), 1)
    if kind == "bag":
        cv2.ellipse(photo, (64, int(poly[0, 1])), (22, 20), 0, 180, 360, colour, 4)
        cv2.ellipse(edges, (64, int(poly[0, 1])), (22, 20), 0, 180, 360, (0, 0, 0), 1)
    noise = rng.integers(-6, 7, photo.shape)  # texture, so Gram statistics vary a little
    photo = np.where(photo < 250, np.clip(photo + noise, 0, 249), 255).astype(np.uint8)
    return np.concatenate([photo, edges], 1)


def make_pairs(root: Path, n_train: int = 36, n_val: int = 9, seed: int = 0) -> Path:
    """Synthetic edges2shoes_mix: 2/3 shoes in 3 colours, 1/3 bags."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            kind = "bag" if i % 3 == 2 else "shoe"
            pair = _pair(kind, COLOURS[(i // 3) % 3], rng)
            cv2.imwrite(
                str(root / split / f"{i + 1}_AB.jpg"), cv2.cvtColor(pair, cv2.COLOR_RGB2BGR)
            )
    return root


def _random_vgg():
    from lordfx_trainer.weights import load_vgg16_features

    torch.manual_seed(0)
    return load_vgg16_features(allow_random=True)


@pytest.fixture(scope="module")
def clusters(tmp_path_factory) -> Path:
    from lordfx_trainer.shoes_cluster import cluster_shoes

    root = tmp_path_factory.mktemp("shoes")
    data = make_pairs(root / "data")
    cluster_shoes(data, root / "clusters", k=3, seed=0, vgg=_random_vgg())
    return root / "clusters"


# -- k-means and clustering ----------------------------------------------------------------
def test_kmeans_is_deterministic_and_finds_blobs():
    from lordfx_trainer.kmeans import kmeans, silhouette

    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [10, 0], [0, 10]], dtype=float)
    x = np.concatenate([c + rng.normal(0, 0.5, (30, 2)) for c in centres])
    a, b = kmeans(x, 3, seed=5), kmeans(x, 3, seed=5)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.centres, b.centres)
    truth = np.repeat(np.arange(3), 30)
    # each true blob is exactly one cluster, whatever the numbering
    assert all(len(set(a.labels[truth == j])) == 1 for j in range(3))
    assert len(set(a.labels)) == 3
    assert kmeans(x, 3, seed=99).inertia == pytest.approx(a.inertia)
    assert silhouette(x, a.labels) > 0.8
    assert silhouette(x, rng.integers(0, 3, len(x))) < 0.1


def test_cluster_shoes_is_deterministic_and_recorded(clusters, tmp_path):
    from lordfx_trainer.shoes_cluster import STYLE_MODEL_FILE, cluster_shoes

    info = json.loads((clusters / "clusters.json").read_text())
    again = cluster_shoes(Path(info["source"]), tmp_path / "again", k=3, seed=0, vgg=_random_vgg())
    for split in ("train", "val"):
        assert info[split] == again[split]
    assert info["num_styles"] == 3 and len(info["clusters"]) == 3
    shoes = [r for r in info["train"] if r["kind"] == "shoe"]
    assert sum(c["count"] for c in info["clusters"]) == len(shoes)
    assert {r["style"] for r in shoes} == {0, 1, 2}
    assert all(r["style"] == -1 for r in info["train"] if r["kind"] == "bag")
    assert [r["k"] for r in info["k_curve"]][0] == 2  # the curve k is chosen from is recorded
    assert (clusters / STYLE_MODEL_FILE).is_file()
    sheets = {p.name for p in (clusters / "sheets").iterdir()}
    assert {"shoes.png", "bags.png", "edges.png", "style-00.png", "style-02.png"} <= sheets
    with pytest.raises(Exception, match="already exists"):
        cluster_shoes(Path(info["source"]), clusters, k=3, vgg=_random_vgg())


def test_asymmetry_tells_shoes_from_bags():
    from lordfx_trainer.shoes_cluster import asymmetry, edge_silhouettes

    rng = np.random.default_rng(0)
    shoes = np.stack(
        [
            cv2.cvtColor(_pair("shoe", COLOURS[0], rng)[:, 128:], cv2.COLOR_RGB2GRAY)
            for _ in range(5)
        ]
    )
    bags = np.stack(
        [cv2.cvtColor(_pair("bag", COLOURS[0], rng)[:, 128:], cv2.COLOR_RGB2GRAY) for _ in range(5)]
    )
    assert asymmetry(edge_silhouettes(shoes)).min() > asymmetry(edge_silhouettes(bags)).max()


def test_reader_yields_styles_and_edges(clusters):
    from lordfx_trainer.data import load_dataset

    ds = load_dataset("shoes", clusters, 16, 3)
    info = json.loads((clusters / "clusters.json").read_text())
    n = sum(r["kind"] == "shoe" for r in info["train"])
    assert ds.num_images == 2 * n and ds.class_names[-1] == "edges"
    assert (ds.class_ids[n:] == 3).all() and set(ds.class_ids[:n].tolist()) == {0, 1, 2}
    assert ds.images[n:].mean() > ds.images[:n].mean()  # edge maps are mostly white
    # photo i and edge map n + i are one pair: the content factor "pair" says so
    assert ds.content_names == ("pair",) and ds.content_labels.shape == (2 * n, 1)
    assert (ds.content_labels[:n, 0] == np.arange(n)).all()
    assert (ds.content_labels[n:] == ds.content_labels[:n]).all()


def test_reader_refuses_the_raw_folder(clusters):
    from lordfx_trainer.data import load_dataset

    from lordfx.errors import InputError

    raw = Path(json.loads((clusters / "clusters.json").read_text())["source"])
    with pytest.raises(InputError, match="cluster-shoes"):
        load_dataset("shoes", raw, 16, 3)


# -- hand-drawn edge maps ------------------------------------------------------------------
def _sketch(width: int, height: int, thickness: int) -> np.ndarray:
    """A shoe outline drawn by hand: dark lines on light grey, non-square canvas."""
    img = np.full((height, width), 235, np.uint8)
    sx, sy = width / 300, height / 180
    pts = np.array([[30, 140], [50, 110], [150, 95], [230, 40], [270, 40], [270, 150], [30, 150]])
    pts = (pts * [sx, sy]).astype(np.int32)
    cv2.polylines(img, [pts], True, 20, thickness)
    cv2.line(img, (int(150 * sx), int(95 * sy)), (int(160 * sx), int(150 * sy)), 20, thickness)
    return img


@pytest.mark.parametrize("thickness", [1, 9])
def test_hand_drawn_edges_are_normalised_to_the_training_look(thickness):
    from lordfx_shoes.edges import EXTENT, FRAME, measure, normalise_edges

    frame, place, notes = normalise_edges(_sketch(300, 180, thickness))
    assert frame.shape == (FRAME, FRAME) and frame.dtype == np.uint8
    stats = measure(frame)
    assert stats.stroke_width < 1.3  # one-pixel lines, like the training maps (1.09)
    assert abs(stats.extent - EXTENT) < 0.03  # centred, longer side fills EXTENT
    assert set(np.unique(frame)) == {0, 255}
    assert place.width == 300 and place.height == 180
    assert any("thinned" in n for n in notes) and any("padded" in n for n in notes)


def test_thin_and_thick_sketches_agree_and_inverted_ones_too():
    from lordfx_shoes.edges import normalise_edges

    thin, _, _ = normalise_edges(_sketch(300, 180, 1))
    thick, _, _ = normalise_edges(_sketch(300, 180, 9))
    inverted, _, notes = normalise_edges(255 - _sketch(600, 360, 5))
    near = cv2.dilate((thin == 0).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert near[thick == 0].mean() > 0.9 and near[inverted == 0].mean() > 0.9
    assert any("inverted" in n for n in notes)
    with pytest.raises(ValueError, match="no lines"):
        normalise_edges(np.full((50, 80), 240, np.uint8))


# -- verbs without a model -----------------------------------------------------------------
@pytest.fixture
def no_model(monkeypatch, tmp_path):
    import lordfx_shoes

    monkeypatch.setattr(lordfx_shoes, "MODEL_DIR", tmp_path / "none")
    reset_host()


def test_verbs_say_no_trained_model_yet(no_model, tmp_path):
    img = tmp_path / "e.png"
    Image.fromarray(_sketch(120, 80, 2)).save(img)
    for args in (
        ["shoes", "from-edges", str(img), "--cluster", "0"],
        ["shoes", "to-edges", str(img)],
        ["shoes", "styles"],
    ):
        result = runner.invoke(build_app(), args)
        assert result.exit_code == 1, args
        assert "no trained model yet" in result.output and "cluster-shoes" in result.output


def test_from_edges_usage_and_input_errors(no_model, tmp_path):
    img = tmp_path / "e.png"
    Image.fromarray(_sketch(120, 80, 2)).save(img)
    both = runner.invoke(
        build_app(), ["shoes", "from-edges", str(img), "--cluster", "1", "--style", str(img)]
    )
    assert both.exit_code == 2 and "exactly one of" in both.output
    none = runner.invoke(build_app(), ["shoes", "from-edges", str(img)])
    assert none.exit_code == 2
    missing = runner.invoke(
        build_app(), ["shoes", "from-edges", str(tmp_path / "x.png"), "--cluster", "0"]
    )
    assert missing.exit_code == 1 and "x.png: no such file" in missing.output


# -- a tiny trained bundle -----------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(clusters) -> Path:
    """A tiny run on the synthetic clusters (16², L1), its bundle with the style bank, and
    an fp16 shipped copy in ``ROOT/shipped``."""
    from lordfx_trainer.train import resolve_config, start_run

    root = clusters.parent
    overrides = {
        "dataset": "shoes",
        "num_heldout_classes": 0,
        "latent_epochs": 6,
        "amortized_epochs": 2,
    }
    start_run(resolve_config(str(TINY), overrides), root / "run", clusters)
    for args in (
        ["style-bank", str(root / "run")],
        ["ship", str(root / "run" / "bundle"), "--to", str(root / "shipped")],
    ):
        result = runner.invoke(build_app(), args)
        assert result.exit_code == 0, result.output
    return root / "shipped"


@pytest.fixture
def shoes_model(trained, monkeypatch) -> Path:
    import lordfx_shoes

    monkeypatch.setattr(lordfx_shoes, "MODEL_DIR", trained)
    reset_host()
    return trained


def test_styles_lists_the_clusters_without_data(shoes_model):
    result = runner.invoke(build_app(), ["shoes", "styles", "--json"])
    assert result.exit_code == 0, result.output
    styles = json.loads(result.output)
    assert [s["name"] for s in styles] == ["style-00", "style-01", "style-02"]
    assert all(len(s["mean_rgb"]) == 3 and s["count"] > 0 for s in styles)
    text = runner.invoke(build_app(), ["shoes", "styles"]).output
    assert "style-00" in text and "mean colour #" in text


def test_hand_drawn_sketch_through_from_edges(shoes_model, tmp_path):
    import lordfx

    sketch = tmp_path / "sketch.png"
    Image.fromarray(_sketch(300, 180, 7)).save(sketch)
    out = tmp_path / "shoe.png"
    result = runner.invoke(
        build_app(), ["-v", "shoes", "from-edges", str(sketch), "--cluster", "0", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "thinned" in result.output  # -v says what was done to the sketch
    shoe = np.asarray(Image.open(out).convert("RGB"))
    assert shoe.shape == (180, 300, 3)  # the input's size
    assert shoe.std() > 5  # not blank
    editor = lordfx.load("shoes")
    ref = tmp_path / "ref.png"
    Image.fromarray(_pair("shoe", COLOURS[0], np.random.default_rng(3))[:, :128]).save(ref)
    api = editor.from_edges(str(sketch), style=str(ref))
    assert api.size == (300, 180)
    by_code = editor.from_edges(str(sketch), style=editor.style_code(str(ref)))
    assert np.array_equal(np.asarray(api), np.asarray(by_code))
    with pytest.raises(Exception, match="no style cluster 7"):
        editor.from_edges(str(sketch), cluster=7)


def test_to_edges_variations_and_folder_batch(shoes_model, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(4)
    for i in range(2):
        Image.fromarray(_pair("shoe", COLOURS[i], rng)[:, :128]).save(photos / f"p{i}.png")
    (photos / "notes.txt").write_text("not an image")
    result = runner.invoke(
        build_app(), ["shoes", "to-edges", str(photos), "-o", str(tmp_path / "out")]
    )
    assert result.exit_code == 1  # the text file fails, the photos are written
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["p0.png", "p1.png"]
    assert Image.open(tmp_path / "out" / "p0.png").size == (128, 128)
    grid = tmp_path / "grid.png"
    edges = tmp_path / "out" / "p0.png"
    result = runner.invoke(
        build_app(),
        ["shoes", "from-edges", str(photos / "p0.png"), "--variations", "3", "-o", str(grid)],
    )
    assert result.exit_code == 0, result.output
    assert Image.open(grid).size == (4 * 128, 128)
    assert edges.is_file()


# -- evaluation helpers --------------------------------------------------------------------
def test_edge_f1_tolerates_two_pixels_and_nearest_edges_finds_the_pair():
    from lordfx_trainer.evaluation.shoes import edge_f1, nearest_by_edges

    target = np.zeros((1, 32, 32), bool)
    target[0, 10, 4:28] = True
    shifted, far = np.roll(target, 2, axis=1), np.roll(target, 6, axis=1)
    assert edge_f1(target, target)[0] == pytest.approx(1.0)
    assert edge_f1(shifted, target)[0] == pytest.approx(1.0)  # 2 px: within tolerance
    assert edge_f1(far, target)[0] == 0.0
    assert edge_f1(np.zeros_like(target), target)[0] == 0.0
    rng = np.random.default_rng(0)
    pool = np.full((5, 32, 32), 255, np.uint8)
    for i in range(5):
        cv2.line(pool[i], (2, int(rng.integers(2, 30))), (30, int(rng.integers(2, 30))), 0, 1)
    query = np.roll(pool[[3, 1]], 1, axis=2)  # the same drawings, shifted by a pixel
    assert nearest_by_edges(query, pool).tolist() == [3, 1]


def test_paired_difference_reports_mean_interval_and_share():
    from lordfx_trainer.evaluation.shoes import paired_difference

    a = np.array([0.1, 0.2, 0.3, 0.4])
    same = paired_difference(a, a)
    assert same["mean"] == 0 and same["ci95"] == [0.0, 0.0] and same["a_better_share"] == 0.5
    better = paired_difference(a, a + np.array([0.1, 0.2, 0.1, 0.2]), seed=1)
    assert better["mean"] == pytest.approx(-0.15)
    lo, hi = better["ci95"]
    assert -0.2 - 1e-9 <= lo <= better["mean"] <= hi <= -0.1 + 1e-9  # every pair is better
    assert better["a_better_share"] == 1.0 and better["n"] == 4


def test_eval_shoes_scores_the_tiny_run(trained, clusters, monkeypatch):
    from lordfx_trainer import weights
    from lordfx_trainer.data.shoes import labelled_pairs, read_clusters

    vgg = _random_vgg()  # the style features the synthetic clusters were made with
    monkeypatch.setattr(weights, "load_vgg16_features", lambda allow_random=False: vgg)
    run = trained.parent / "run"
    result = runner.invoke(build_app(), ["eval-shoes", str(run), "--json"])
    assert result.exit_code == 0, result.output
    r = json.loads((run / "eval_shoes.json").read_text())
    n = len(labelled_pairs(read_clusters(clusters), "val")[0])  # the val pairs split as shoes
    assert n > 0 and r["num_pairs"] == n and r["num_styles"] == 3
    for row in ("from_edges", "same_cluster", "nearest_edges", "reconstruction"):
        assert 0 < r[row]["lpips_alex"]["mean"] < 1 and r[row]["lpips_alex"]["n"] == n
        assert 0 <= r[row]["edge_f1"]["mean"] <= 1 and 0 <= r[row]["style_consistency"] <= 1
    near = r["paired"]["nearest_edges"]
    assert near["mean"] == pytest.approx(
        r["from_edges"]["lpips_alex"]["mean"] - r["nearest_edges"]["lpips_alex"]["mean"], abs=1e-6
    )
    assert near["ci95"][0] <= near["mean"] <= near["ci95"][1]
    assert r["command"].startswith("lordfx eval-shoes")
    assert (run / "eval_shoes" / "figure5.png").is_file()
    from lordfx_trainer.evaluation.shoes import summary_markdown

    text = summary_markdown(r)
    assert "reconstruction of the photo" in text and "pair by pair" in text


def test_colour_names_call_leather_brown_and_keep_clear_hues():
    from lordfx_shoes.cli import colour_name

    assert colour_name((0x6D, 0x4F, 0x40)) == "dark brown"  # a shipped cluster's mean
    assert colour_name((160, 110, 60)) == "brown"
    assert colour_name((200, 30, 30)) == "red" and colour_name((0xB0, 0x4F, 0x4F)) == "red"
    assert colour_name((0xD3, 0x95, 0x91)) == "pink"
    assert colour_name((40, 60, 160)) == "blue"
    assert colour_name((250, 180, 200)) == "light pink"
    assert colour_name((30, 30, 30)) == "black" and colour_name((240, 240, 240)) == "white"
