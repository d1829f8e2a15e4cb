"""Dataset layer: the canonical ImageDataset, seeded splits, and every reader on tiny files
written here in each dataset's real on-disk format (never the real data, except the one
``shared``-marked test that reads a few real Cars3D files when ../shared/data exists)."""

from __future__ import annotations

import gzip
import logging
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
from lordfx_trainer.data import READERS, load_dataset, reader_options
from lordfx_trainer.data.base import ImageDataset, split_classes, split_images
from lordfx_trainer.data.cars3d import load_cars3d, split_cars3d
from lordfx_trainer.data.images import to_canonical
from lordfx_trainer.data.smallnorb import read_norb_matrix

from lordfx.errors import InputError, UsageError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def make_ds(num_classes: int = 6, per_class: int = 4, size: int = 8) -> ImageDataset:
    n = num_classes * per_class
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones(
        (1, size, size, 3), np.uint8
    )
    return ImageDataset(
        name="toy",
        images=images,
        class_ids=np.repeat(np.arange(num_classes, dtype=np.int64), per_class),
        class_names=tuple(f"c{k}" for k in range(num_classes)),
        content_labels=np.tile(np.arange(per_class, dtype=np.int64), num_classes)[:, None],
        content_names=("view",),
        meta={"source": "toy"},
    )


def write_image(path: Path, rgb: tuple[int, int, int], size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = rgb[::-1]  # cv2 writes BGR
    assert cv2.imwrite(str(path), img)


# -- ImageDataset ----------------------------------------------------------------------


def test_dataset_properties_and_validation():
    ds = make_ds()
    assert (ds.num_images, ds.num_classes, ds.image_size, ds.channels) == (24, 6, 8, 3)
    assert ds.class_counts().tolist() == [4] * 6
    good = dict(name="x", images=ds.images, class_ids=ds.class_ids, class_names=ds.class_names)
    bad_cases = [
        ({"images": ds.images.astype(np.float32)}, "uint8"),
        ({"images": ds.images[:, :, :4]}, "square"),
        ({"images": np.repeat(ds.images, 2, axis=3)}, "channels"),
        ({"class_ids": ds.class_ids.astype(np.int32)}, "int64"),
        ({"class_ids": ds.class_ids[:-1]}, "shape"),
        ({"class_names": ds.class_names[:-1]}, "lie in"),
        ({"class_names": ("a",) * 6}, "unique"),
        ({"content_labels": np.zeros((24, 2), np.int64), "content_names": ("v",)}, "shape"),
        ({"meta": {"bad": object()}}, "JSON"),
    ]
    for change, message in bad_cases:
        with pytest.raises(ValueError, match=message):
            ImageDataset(**{**good, **change})


def test_subset_keeps_classes_and_select_classes_reindexes():
    ds = make_ds()
    sub = ds.subset([5, 0, 23])
    assert sub.class_ids.tolist() == [1, 0, 5] and sub.class_names == ds.class_names
    assert sub.images[:, 0, 0, 0].tolist() == [5, 0, 23]
    assert sub.content_labels[:, 0].tolist() == [1, 0, 3]
    mask = ds.class_ids == 2
    assert ds.subset(mask).num_images == 4
    sel = ds.select_classes([4, 1])
    assert sel.class_names == ("c4", "c1") and sel.num_classes == 2
    assert sel.class_ids.tolist() == [1] * 4 + [0] * 4  # images keep their order
    assert sel.images[:, 0, 0, 0].tolist() == [4, 5, 6, 7, 16, 17, 18, 19]
    with pytest.raises(ValueError, match="duplicates"):
        ds.select_classes([1, 1])
    with pytest.raises(ValueError, match="out of range"):
        ds.select_classes([6])


def test_split_classes_is_seeded_and_recorded():
    ds = make_ds(num_classes=30, per_class=2)
    train, held = split_classes(ds, num_heldout=5, seed=3)
    again_train, again_held = split_classes(ds, num_heldout=5, seed=3)
    _, other = split_classes(ds, num_heldout=5, seed=4)
    assert held.class_names == again_held.class_names
    assert np.array_equal(train.images, again_train.images)
    assert held.class_names != other.class_names
    assert (train.num_classes, held.num_classes) == (25, 5)
    assert not set(train.class_names) & set(held.class_names)
    for part, name in ((train, "train"), (held, "heldout")):
        assert part.meta["split"]["seed"] == 3 and part.meta["split"]["part"] == name
        assert part.meta["split"]["heldout_class_names"] == list(held.class_names)
        assert part.meta["source"] == "toy"
    _, named = split_classes(ds, heldout_names=["c7", "c2"])
    assert named.class_names == ("c2", "c7") and named.class_ids.max() == 1
    with pytest.raises(ValueError, match="exactly one"):
        split_classes(ds)


def test_split_images_is_seeded_disjoint_and_complete():
    ds = make_ds(num_classes=4, per_class=25)
    train, held = split_images(ds, 0.2, seed=1)
    _, held_again = split_images(ds, 0.2, seed=1)
    _, held_other = split_images(ds, 0.2, seed=2)
    assert (train.num_images, held.num_images) == (80, 20)
    ids = lambda part: part.images[:, 0, 0, 0].tolist()  # noqa: E731 (image ids are pixels)
    assert ids(held) == ids(held_again) and ids(held) != ids(held_other)
    assert sorted(ids(train) + ids(held)) == list(range(100))
    assert held.class_names == ds.class_names and held.meta["split"]["fraction"] == 0.2


def test_to_canonical_resize_luma_and_tiling():
    img = np.zeros((4, 6, 3), np.uint8)
    img[:, 1:5] = (255, 0, 0)  # the centre 4x4 square is pure red
    grey = to_canonical(img, 2, 1)
    assert grey.shape == (2, 2, 1) and np.all(grey == 76)  # 0.299 * 255 (ITU-R 601)
    block = np.array([[0, 100], [200, 60]], np.uint8)
    assert to_canonical(block, 1, 1)[0, 0, 0] == 90  # INTER_AREA = mean
    rgb = to_canonical(block, 2, 3)
    assert rgb.shape == (2, 2, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])


# -- Cars3D ----------------------------------------------------------------------------


def write_car(path: Path, car: int, size: int = 8) -> None:
    im = np.zeros((size, size, 3, 24, 4), np.uint8)
    for a in range(24):
        for e in range(4):
            im[:, :, :, a, e] = (10 * a, 50 * e, 70 * car)
    scipy.io.savemat(path, {"im": im, "mask": np.zeros((size, size, 24, 4), np.uint8)})


def test_cars3d_reads_views_labels_and_cache(tmp_path):
    for car in (1, 2, 3):
        write_car(tmp_path / f"car_{car:03d}_mesh.mat", car)
    (tmp_path / "list.txt").write_text("car_001_mesh\n")
    ds = load_cars3d(tmp_path, 4, 3, cache_dir=tmp_path / "cache")
    assert ds.images.shape == (288, 4, 4, 3) and ds.class_names[0] == "car_001_mesh"
    assert ds.content_names == ("azimuth", "elevation")
    azimuth, elevation = ds.content_labels.T
    i = int(np.flatnonzero((ds.class_ids == 2) & (azimuth == 5) & (elevation == 3))[0])
    assert ds.images[i, 2, 2].tolist() == [50, 150, 210]  # (10a, 50e, 70 car) survives
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    cached = load_cars3d(tmp_path, 4, 3, cache_dir=tmp_path / "cache")
    assert np.array_equal(cached.images, ds.images)
    assert np.array_equal(cached.content_labels, ds.content_labels)
    grey = load_cars3d(tmp_path, 4, 1, cars=["car_002_mesh"])
    assert grey.images.shape == (96, 4, 4, 1) and grey.class_names == ("car_002_mesh",)
    train, held = split_cars3d(ds, seed=0, num_heldout=1)
    assert (train.num_classes, held.num_classes) == (2, 1) and held.meta["split"]["seed"] == 0


def test_cars3d_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="no car_"):
        load_cars3d(tmp_path, 4, 3)
    bad = tmp_path / "car_009_mesh.mat"
    bad.write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(InputError, match="car_009_mesh.mat"):
        load_cars3d(tmp_path, 4, 3)
    scipy.io.savemat(bad, {"im": np.zeros((8, 8, 3, 12, 4), np.uint8)})
    with pytest.raises(InputError, match="car_009_mesh.mat.*expected"):
        load_cars3d(tmp_path, 4, 3)
    with pytest.raises(InputError, match="car_404_mesh.mat"):
        load_cars3d(tmp_path, 4, 3, cars=["car_404_mesh"])


# -- SmallNORB -------------------------------------------------------------------------


def norb_bytes(array: np.ndarray) -> bytes:
    magic = {np.dtype(np.uint8): 0x1E3D4C55, np.dtype(np.int32): 0x1E3D4C54}[array.dtype]
    dims = list(array.shape) + [1] * (3 - array.ndim)
    header = struct.pack(f"<ii{len(dims)}i", magic, array.ndim, *dims)
    return header + array.astype(array.dtype.newbyteorder("<")).tobytes()


def write_norb_part(root: Path, part: str, instance: int, gz: bool = False) -> None:
    """2 categories x 1 instance x 2 elevations x 2 azimuths x 2 lightings = 16 images."""
    rows = [
        (c, instance, e, a, li) for c in (0, 1) for e in (0, 1) for a in (0, 4) for li in (0, 5)
    ]
    n = len(rows)
    dat = np.full((n, 2, 12, 12), 255, np.uint8)  # right camera white: must be unused
    dat[:, 0] = (np.arange(n, dtype=np.uint8) * 10 + instance)[:, None, None]
    cat = np.array([r[0] for r in rows], np.int32)
    info = np.array([r[1:] for r in rows], np.int32)
    stem = f"smallnorb-5x46789x9x18x6x2x96x96-{part}"
    for kind, arr in (("dat", dat), ("cat", cat), ("info", info)):
        data = norb_bytes(arr)
        path = root / f"{stem}-{kind}.mat"
        if gz:
            path = path.with_suffix(".mat.gz")
            data = gzip.compress(data)
        path.write_bytes(data)


def test_norb_matrix_format_and_errors(tmp_path):
    arr = np.arange(24, dtype=np.int32).reshape(6, 4)
    (tmp_path / "m.mat").write_bytes(norb_bytes(arr))
    assert np.array_equal(read_norb_matrix(tmp_path / "m.mat"), arr)
    (tmp_path / "bad.mat").write_bytes(b"\x00" * 40)
    with pytest.raises(InputError, match=r"bad\.mat: bad magic"):
        read_norb_matrix(tmp_path / "bad.mat")
    (tmp_path / "short.mat").write_bytes(norb_bytes(arr)[:-4])
    with pytest.raises(InputError, match=r"short\.mat: size"):
        read_norb_matrix(tmp_path / "short.mat")


def test_smallnorb_both_configurations(tmp_path):
    write_norb_part(tmp_path, "training", instance=4)
    write_norb_part(tmp_path, "testing", instance=0, gz=True)
    ds = load_dataset("smallnorb", tmp_path, 6, 1)
    assert ds.images.shape == (32, 6, 6, 1) and ds.num_classes == 4
    assert ds.class_names == ("animal-00", "animal-04", "human-00", "human-04")
    assert ds.content_names == ("elevation", "azimuth", "lighting")
    assert ds.content_labels[:4].tolist() == [[0, 0, 0], [0, 0, 5], [0, 2, 0], [0, 2, 5]]
    assert ds.images[1, 3, 3, 0] == 14 and ds.images.max() < 255  # left camera only
    poses = load_dataset("smallnorb-poses", tmp_path, 6, 3)
    assert poses.num_classes == 8 and poses.content_names == ("elevation", "azimuth")
    assert poses.class_names[0] == "animal-00-lighting0" and poses.channels == 3
    ref = load_dataset(
        "smallnorb", tmp_path, 6, 1, class_factors=("category", "instance", "elevation", "lighting")
    )
    assert ref.num_classes == 16 and ref.content_names == ("azimuth",)
    (tmp_path / "smallnorb-5x46789x9x18x6x2x96x96-training-cat.mat").unlink()
    with pytest.raises(InputError, match="training-cat"):
        load_dataset("smallnorb", tmp_path, 6, 1)
    with pytest.raises(UsageError, match="class_factors"):
        load_dataset("smallnorb", tmp_path, 6, 1, class_factors=("colour",))


# -- CelebA, RaFD, KTH, folder ---------------------------------------------------------


def test_celeba_identities_exclude_and_min_images(tmp_path):
    colours = {"7201": (200, 30, 30), "7202": (30, 200, 30), "10001": (30, 30, 200)}
    lines = []
    for ident, rgb in colours.items():
        for k in range(2 if ident != "10001" else 1):
            rel = f"{ident}/{k:06d}.jpg"
            write_image(tmp_path / rel, rgb)
            lines.append(f"{rel} {ident}")
    (tmp_path / "identities.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "suspects.txt").write_text("7202/000001.jpg 0.12\n")
    ds = load_dataset("celeba", tmp_path, 8, 3)
    assert ds.class_names == ("7201", "7202", "10001") and ds.num_images == 5
    assert np.abs(ds.images[0].astype(int) - (200, 30, 30)).max() <= 6  # JPEG tolerance
    ds = load_dataset("celeba", tmp_path, 8, 1, exclude="suspects.txt", min_images_per_class=2)
    assert ds.class_names == ("7201",) and ds.meta["num_excluded"] == 1
    (tmp_path / "7201/000000.jpg").unlink()
    with pytest.raises(InputError, match="000000.jpg"):
        load_dataset("celeba", tmp_path, 8, 3)
    (tmp_path / "identities.txt").write_text("lonely_field\n")
    with pytest.raises(InputError, match="identities.txt: line 1"):
        load_dataset("celeba", tmp_path, 8, 3)


def test_rafd_class_by_expression_or_identity(tmp_path, caplog):
    for angle in ("045", "090"):
        for ident, gender in (("01", "female"), ("12", "male")):
            for expr, rgb in (("angry", (250, 0, 0)), ("happy", (0, 250, 0))):
                name = f"Rafd{angle}_{ident}_Caucasian_{gender}_{expr}_frontal.jpg"
                write_image(tmp_path / name, rgb, size=20)
    (tmp_path / "readme.txt").write_text("not an image")
    with caplog.at_level(logging.WARNING):
        ds = load_dataset("rafd", tmp_path, 8, 3)
    assert "readme.txt" in caplog.text
    assert ds.class_names == ("angry", "happy") and ds.num_images == 8
    assert ds.content_names == ("angle", "gaze", "identity")
    assert ds.meta["content_values"]["angle"] == ["045", "090"]
    happy = ds.images[ds.class_ids == 1]
    assert happy[..., 1].min() > 200 and happy[..., 0].max() < 40
    by_id = load_dataset("rafd", tmp_path, 8, 3, class_by="identity", angles=[90])
    assert by_id.class_names == ("01", "12") and by_id.num_images == 4
    assert by_id.content_names[2] == "expression" and set(by_id.content_labels[:, 0]) == {0}
    with pytest.raises(UsageError, match="class_by"):
        load_dataset("rafd", tmp_path, 8, 3, class_by="gaze")


def test_kth_person_classes_action_content(tmp_path, caplog):
    for person in ("person01", "person02"):
        for action, value in (("boxing", 60), ("walking", 180)):
            for k in range(4):
                write_image(tmp_path / person / action / "d1" / f"{k:04d}.png", (value,) * 3)
    (tmp_path / "person01" / "walking" / "d1" / "labels.csv").write_text("x")
    with caplog.at_level(logging.WARNING):
        ds = load_dataset("kth", tmp_path, 8, 1, frame_step=2)
    assert "labels.csv" in caplog.text
    assert ds.class_names == ("person01", "person02") and ds.num_images == 8
    assert ds.meta["content_values"]["action"] == ["boxing", "walking"]
    walking = ds.content_labels[:, 0] == 1
    assert np.all(ds.images[walking] == 180) and np.all(ds.images[~walking] == 60)
    only = load_dataset("kth", tmp_path, 8, 1, actions=["walking"])
    assert only.num_images == 8 and set(only.content_labels[:, 0]) == {0}


def test_folder_skips_non_images_and_reports_corrupt_files(tmp_path, caplog):
    write_image(tmp_path / "cats" / "a.png", (10, 20, 30))
    write_image(tmp_path / "cats" / "nested" / "b.png", (10, 20, 30))
    write_image(tmp_path / "dogs" / "c.png", (200, 100, 50))
    (tmp_path / "dogs" / "notes.txt").write_text("hello")
    with caplog.at_level(logging.WARNING):
        ds = load_dataset("folder", tmp_path, 4, 3)
    assert "notes.txt" in caplog.text
    assert ds.class_names == ("cats", "dogs") and ds.class_ids.tolist() == [0, 0, 1]
    assert ds.images[2, 0, 0].tolist() == [200, 100, 50]  # PNG: exact
    (tmp_path / "dogs" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(InputError, match="broken.jpg"):
        load_dataset("folder", tmp_path, 4, 3)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ds = load_dataset("folder", tmp_path, 4, 1, skip_bad=True)
    assert "broken.jpg" in caplog.text and ds.num_images == 3 and ds.channels == 1


def test_fer2013_dedups_within_train_and_test_against_train(tmp_path):
    import shutil

    for split, expr, name, grey in [
        ("train", "happy", "a.png", 10),
        ("train", "happy", "a_copy.png", 10),  # same bytes, same label → kept once
        ("train", "sad", "b.png", 20),
        ("train", "angry", "b_conflict.png", 20),  # same bytes as b, other label → both dropped
        ("train", "fear", "c.png", 30),
        ("test", "happy", "t1.png", 40),
        ("test", "fear", "t2.png", 50),
    ]:
        write_image(tmp_path / split / expr / name, (grey, grey, grey))
    shutil.copy(tmp_path / "train/fear/c.png", tmp_path / "test/fear/leak.png")
    train = load_dataset("fer2013", tmp_path, 8, 1)
    assert train.class_names[3] == "happy" and len(train.class_names) == 7
    assert sorted(train.images[:, 0, 0, 0].tolist()) == [10, 30]
    assert train.meta["dedup_dropped"] == {"copies": 1, "conflicting": 2, "in_train": 0}
    test = load_dataset("fer2013", tmp_path, 8, 1, split="test")
    assert sorted(test.images[:, 0, 0, 0].tolist()) == [40, 50]
    assert test.meta["dedup_dropped"]["in_train"] == 1
    assert load_dataset("fer2013", tmp_path, 8, 1, split="test", dedup=False).num_images == 3
    with pytest.raises(UsageError, match="split"):
        load_dataset("fer2013", tmp_path, 8, 1, split="val")
    (tmp_path / "train" / "bored").mkdir()
    write_image(tmp_path / "train" / "bored" / "x.png", (1, 1, 1))
    with pytest.raises(InputError, match="bored"):
        load_dataset("fer2013", tmp_path, 8, 1)


def test_cap_images_per_class_is_seeded_and_bounded():
    from lordfx_trainer.train import cap_images_per_class

    ds = make_ds(num_classes=3, per_class=10)
    a = cap_images_per_class(ds, 4, seed=0)
    assert a.class_counts().tolist() == [4, 4, 4] and a.meta["max_images_per_class"] == 4
    assert np.array_equal(a.images, cap_images_per_class(ds, 4, seed=0).images)
    assert not np.array_equal(a.images, cap_images_per_class(ds, 4, seed=1).images)
    assert cap_images_per_class(ds, 20, seed=0).num_images == 30


# -- synthetic and the registry --------------------------------------------------------


def test_synthetic_is_deterministic_and_disentangled():
    ds = load_dataset("synthetic", None, 32, 3)
    assert ds.images.shape == (128, 32, 32, 3) and ds.num_classes == 8
    assert np.array_equal(load_dataset("synthetic", None, 32, 3).images, ds.images)
    grid = ds.images.reshape(8, 16, -1).astype(np.int16)  # ordered class, content
    for a in range(8):
        for b in range(a + 1, 8):
            # every content shows classes a and b differently
            assert np.abs(grid[a] - grid[b]).mean(axis=1).min() > 3
    for c in range(16):
        for d in range(c + 1, 16):
            assert np.abs(grid[:, c] - grid[:, d]).mean(axis=1).min() > 3
    grey = load_dataset("synthetic", None, 32, 1).images.reshape(8, 16, -1).astype(np.int16)
    assert np.abs(grey[0] - grey[4]).mean(axis=1).min() > 3  # same shape, other colour
    j0 = load_dataset("synthetic", None, 16, 3, jitter=0.05, seed=0, repeats=2)
    j1 = load_dataset("synthetic", None, 16, 3, jitter=0.05, seed=1, repeats=2)
    assert j0.num_images == 256 and not np.array_equal(j0.images, j1.images)
    with pytest.raises(UsageError, match="multiple of 16"):
        load_dataset("synthetic", None, 40, 3)


def test_registry_refuses_unknown_kinds_options_and_roots(tmp_path):
    expected = {"cars3d", "smallnorb", "smallnorb-poses", "celeba", "rafd", "kth", "folder"}
    assert set(READERS) == expected | {"faces", "fer2013", "npz", "shoes", "synthetic", "taiwanese"}
    with pytest.raises(UsageError, match="valid datasets: cars3d, smallnorb"):
        load_dataset("mnist", tmp_path, 32, 3)
    with pytest.raises(UsageError, match=r"unknown option\(s\) \['colour'\].*num_classes="):
        load_dataset("synthetic", None, 32, 3, colour="red")
    with pytest.raises(UsageError, match="needs a data path"):
        load_dataset("folder", None, 32, 3)
    with pytest.raises(UsageError, match="takes no data path"):
        load_dataset("synthetic", tmp_path, 32, 3)
    with pytest.raises(InputError, match="nowhere"):
        load_dataset("cars3d", tmp_path / "nowhere", 32, 3)
    with pytest.raises(UsageError, match="channels"):
        load_dataset("synthetic", None, 32, 2)
    assert reader_options("cars3d") == {"cars": None, "cache_dir": None}


@pytest.mark.shared
def test_real_cars3d_files():
    root = SHARED_DATA / "cars3d"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    ds = load_cars3d(root, 64, 3, cars=["car_001_mesh", "car_002_mesh"])
    assert ds.images.shape == (192, 64, 64, 3) and ds.num_classes == 2
    assert ds.content_labels.max(axis=0).tolist() == [23, 3]
    assert ds.images[0, 0, 0].tolist() == [255, 255, 255]  # white background corner
    assert ds.images.std() > 20  # a car is drawn, not a blank view
    front, side = ds.images[0], ds.images[6]  # azimuth 0 vs 90 degrees, same car
    assert np.abs(front.astype(int) - side).mean() > 5
