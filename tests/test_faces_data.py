"""Dataset "faces": several face-crop sources as one class space (issue 17)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from lordfx_trainer.data import load_dataset
from lordfx_trainer.data.base import split_classes
from lordfx_trainer.data.faces import LICENCES

from lordfx.errors import InputError, UsageError


def _source(root: Path, name: str, people: dict[str, tuple[int, int, int]], per: int) -> None:
    """A celeba_faces-layout folder: <person>/<k>.jpg in one flat colour, identities.txt."""
    lines = []
    for person, rgb in people.items():
        for k in range(per):
            rel = f"{person}/{k:04d}.jpg"
            (root / name / person).mkdir(parents=True, exist_ok=True)
            img = np.empty((16, 16, 3), np.uint8)
            img[:] = rgb[::-1]  # cv2 writes BGR
            assert cv2.imwrite(str(root / name / rel), img)
            lines.append(f"{rel} {person}")
    (root / name / "identities.txt").write_text("\n".join(lines) + "\n")
    (root / name / "nonface_suspects.txt").write_text("")


@pytest.fixture()
def two_sources(tmp_path: Path) -> Path:
    _source(tmp_path, "celeba_faces", {"7201": (200, 30, 30), "7202": (30, 200, 30)}, 3)
    people = {f"Person_{k}": (10 * k, 100, 255 - 10 * k) for k in range(6)}
    _source(tmp_path, "lfw_faces", people, 2)
    (tmp_path / "celeba_faces" / "nonface_suspects.txt").write_text("7202/0002.jpg 0.0\n")
    return tmp_path


def test_sources_share_one_class_space_with_their_licences(two_sources):
    ds = load_dataset("faces", two_sources, 8, 3, exclude="nonface_suspects.txt")
    assert ds.class_names[:3] == ("celeba_faces/7201", "celeba_faces/7202", "lfw_faces/Person_0")
    assert ds.num_classes == 8 and ds.num_images == 3 + 2 + 6 * 2  # one excluded
    assert np.bincount(ds.class_ids).tolist() == [3, 2] + [2] * 6
    # Class ids follow the images: LFW's first person is class 2 and has its colour.
    first = ds.images[ds.class_ids == 2][0].astype(int)
    assert np.abs(first - (0, 100, 255)).max() <= 8  # JPEG tolerance
    records = {r["name"]: r for r in ds.meta["sources"]}
    assert records["celeba_faces"]["licence"] == LICENCES["celeba_faces"]
    assert records["lfw_faces"]["num_classes"] == 6 and records["celeba_faces"]["num_excluded"] == 1
    assert "celeba_faces: " in ds.meta["licence"] and "lfw_faces: " in ds.meta["licence"]


def test_heldout_identities_are_seeded_and_recorded(two_sources):
    ds = load_dataset("faces", two_sources, 8, 3)
    train, held = split_classes(ds, num_heldout=3, seed=0)
    again = split_classes(load_dataset("faces", two_sources, 8, 3), num_heldout=3, seed=0)[1]
    assert held.class_names == again.class_names
    assert held.meta["split"]["heldout_class_names"] == list(held.class_names)
    assert held.meta["split"]["seed"] == 0
    assert not set(held.class_names) & set(train.class_names)
    assert held.meta["sources"] == ds.meta["sources"]  # licences travel with the split


def test_bad_sources_are_named(two_sources):
    with pytest.raises(InputError, match="nowhere"):
        load_dataset(
            "faces", two_sources, 8, 3, sources="celeba_faces,nowhere", licences="nowhere=x"
        )
    with pytest.raises(UsageError, match="no licence known for source 'mine'"):
        load_dataset("faces", two_sources, 8, 3, sources="mine")
    with pytest.raises(UsageError, match="duplicate"):
        load_dataset("faces", two_sources, 8, 3, sources="lfw_faces,lfw_faces")
    (two_sources / "mine").mkdir()
    with pytest.raises(InputError, match="identities.txt"):
        load_dataset("faces", two_sources, 8, 3, sources="mine", licences="mine=CC0")


@pytest.mark.slow  # reads all 7,292 crops (~30 s on 2 cores)
def test_shared_sources_load_together(shared_data):
    if not (shared_data / "lfw_faces").is_dir():
        pytest.skip("../shared/data/lfw_faces is not available")
    ds = load_dataset("faces", shared_data, 16, 3, exclude="nonface_suspects.txt")
    counts = {r["name"]: r["num_classes"] for r in ds.meta["sources"]}
    assert counts == {"celeba_faces": 248, "lfw_faces": 591}
    assert ds.num_classes == 839


def test_faces64_preset_resolves():
    from lordfx_trainer.train import resolve_config

    cfg = resolve_config("faces64-cpu", {})
    assert (cfg.dataset, cfg.image_size, cfg.loss) == ("faces", 64, "vgg")
    assert cfg.arch == "tapered" and cfg.precision == "auto"
    assert cfg.num_heldout_classes > 0 and cfg.data_exclude == "nonface_suspects.txt"
