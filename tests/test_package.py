"""`lordfx package`: a run → a plugin distribution; refusals; the docs/plugins.md walkthrough
run end to end (train tiny → eval → package → pip install → plugins → transfer → uninstall)."""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from lordfx_trainer.config import TrainConfig
from lordfx_trainer.packaging import DomainText, PackageNames, write_package
from lordfx_trainer.run import write_run_config
from PIL import Image
from typer.testing import CliRunner

from lordfx.bundle import load_bundle, save_bundle
from lordfx.cli import build_app
from lordfx.domain import MODEL_CARD, package_model_dir
from lordfx.errors import InputError, UsageError
from lordfx.host import Host
from lordfx.nets import AmortizedModel, ModelConfig

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "plugins.md"
BIN = Path(sys.executable).parent
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 60, 220),
    "yellow": (230, 210, 40),
    "purple": (150, 50, 190),
    "cyan": (40, 200, 210),
}
runner = CliRunner()


def fake_run(root: Path, eval_result: dict | None = None, bundle: bool = True) -> Path:
    """A run directory as `lordfx train` leaves it (config.json + bundle/), without training."""
    run = root / "run"
    run.mkdir()
    cfg = TrainConfig(dataset="folder", image_size=16, channels=3, width=0.125)
    data = {
        "source": "shapes",
        "reader": "folder",
        "split": {"seed": 0, "heldout_class_names": ["x"]},
    }
    write_run_config(run, cfg, {"train": data | {"num_images": 12}})
    if bundle:
        torch.manual_seed(0)
        model = AmortizedModel(ModelConfig(image_size=16, channels=3, width=0.125)).eval()
        info = {"class_names": ["red", "green", "blue"], "data": data, "training": {}}
        extras = {"view_bank.safetensors": {"codes": torch.randn(4, 128)}}
        save_bundle(run / "bundle", model, info, torch.randn(3, 256), extras=extras)
    if eval_result is not None:
        (run / "eval.json").write_text(json.dumps(eval_result))
    return run


CURVE = [
    {"stage": "latent", "step": 250, "elapsed_s": 1800.0, "train_lpips_alex": 0.2,
     "train_copy_class_lpips_alex": 0.19, "content_labels_from_content": 0.05},
    {"stage": "latent", "step": 500, "elapsed_s": 3600.0, "train_lpips_alex": 0.1,
     "train_copy_class_lpips_alex": 0.19, "content_labels_from_content": 0.25},
    {"stage": "amortized", "step": 250, "elapsed_s": 1800.0, "heldout_lpips_alex": 0.15,
     "heldout_copy_class_lpips_alex": 0.18},
]  # fmt: skip


EVAL = {
    "transfer": {
        "num_pairs": 7,
        "metrics": {
            "model": {"l1": {"mean": 0.125, "std": 0.01}, "ssim": {"mean": 0.5, "std": 0.1}},
            "copy_class": {"l1": {"mean": 0.25, "std": 0.02}, "ssim": {"mean": 0.4, "std": 0.1}},
        },
    },
    "leakage": {
        "heldout": {
            "source": "stage-2 encoders",
            "class_from_content": {
                "mlp": {"accuracy": 0.375, "chance": 0.333, "num_test": 8},
            },
        }
    },
}


def test_package_writes_a_distribution_the_host_reads_like_a_built_in(tmp_path, monkeypatch):
    run = fake_run(tmp_path, EVAL)
    text = DomainText(class_label="colour", content_label="position", data_licence="CC0")
    out = write_package(run, "tiny-shapes", tmp_path / "dist", text=text)
    pkg = out / "lordfx_tiny_shapes"
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "lordfx_tiny_shapes",
        "pyproject.toml",
    ]
    pyproject = (out / "pyproject.toml").read_text()
    assert 'name = "lordfx-tiny-shapes"' in pyproject
    assert '[project.entry-points.lordfx]\n"tiny-shapes" = "lordfx_tiny_shapes"' in pyproject
    assert '"*" = ["model/*", "*.md"]' in pyproject  # the built-in plugins' package data
    # the bundle: fp16, extras kept, every sha256 verified on load, same outputs as the run
    shipped, original = load_bundle(pkg / "model"), load_bundle(run / "bundle")
    assert shipped.info["dtype"] == "float16" and shipped.info["domain"] == "tiny-shapes"
    assert set(shipped.info["files"]) == {
        "model.safetensors",
        "class_codes.safetensors",
        "view_bank.safetensors",
    }
    assert shipped.info["data"]["licence"] == "CC0"
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(shipped.model(x), original.model(x), atol=2e-2)
    umask = os.umask(0)
    os.umask(umask)
    assert (pkg / "model" / "model.safetensors").stat().st_mode & 0o777 == 0o644 & ~umask
    # the generated module registers through the same hook and helper as the built-ins
    monkeypatch.syspath_prepend(str(out))
    import lordfx_tiny_shapes as mod

    assert mod.MODEL_DIR == package_model_dir("lordfx_tiny_shapes") == pkg / "model"
    host = Host(strict=True)
    host.add_plugin(mod, "tiny-shapes")
    dom = host.domain("tiny-shapes")
    assert (dom.image_size, dom.channels, dom.class_names) == (16, 3, ("red", "green", "blue"))
    assert (dom.class_label, dom.content_label, dom.has_model) == ("colour", "position", True)
    card = (pkg / MODEL_CARD).read_text()
    for fact in (
        "CC0",
        "as the folder reader prepared",
        "| l1 |",
        "0.125 ± 0.010",
        "0.375 (chance 0.333",
        shipped.info["files"]["model.safetensors"],
    ):
        assert fact in card
    sys.modules.pop("lordfx_tiny_shapes", None)


def test_card_says_what_is_missing(tmp_path):
    out = write_package(fake_run(tmp_path), "bare", tmp_path / "dist")
    card = (out / "lordfx_bare" / MODEL_CARD).read_text()
    assert "Not evaluated" in card and "lordfx eval" in card
    assert "| licence | **not recorded.**" in card
    assert "Training curve" not in card  # no curve.jsonl: no section


def test_card_shows_the_training_curve(tmp_path):
    run = fake_run(tmp_path)
    (run / "curve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CURVE))
    card = write_package(run, "curved", tmp_path / "dist") / "lordfx_curved" / MODEL_CARD
    text = card.read_text()
    assert "## Training curve" in text
    assert "| latent | 250 | 0.50 | training | 0.200 | 0.190 | 0.050 |" in text
    assert "| latent | 500 | 1.00 | training | 0.100 | 0.190 | 0.250 |" in text
    assert "| amortized | 250 | 1.50 | held-out | 0.150 | 0.180 |  |" in text  # after stage 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "Shapes"], "not a valid plugin name"),
        (["--name", "my shapes"], "not a valid plugin name"),
        (["--name", "faces"], "taken by the installed domain 'faces'"),
        (["--name", "trainer"], "taken by the installed plugin 'trainer'"),
        (["--name", "fine", "--version", "one"], "--version 'one' is not a version"),
    ],
)
def test_refused_names(tmp_path, args, message):
    run = fake_run(tmp_path)
    result = runner.invoke(build_app(), ["package", str(run), *args, "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert message in result.output and result.output.startswith("lordfx: error:")
    assert not (tmp_path / "o").exists()


def test_refused_run_without_bundle_and_existing_out(tmp_path):
    run = fake_run(tmp_path, bundle=False)
    with pytest.raises(InputError, match="no bundle"):
        write_package(run, "nobundle", tmp_path / "o")
    assert not (tmp_path / "o").exists()
    (tmp_path / "fresh").mkdir()
    run2 = fake_run(tmp_path / "fresh")
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(UsageError, match="already exists"):
        write_package(run2, "exists", out)
    assert (out / "mine.txt").read_text() == "keep"
    write_package(run2, "exists", out, force=True)
    assert not (out / "mine.txt").exists() and (out / "lordfx_exists" / "model").is_dir()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    assert PackageNames.from_name("a_b-c").module == "lordfx_a_b_c"


# -- the docs walkthrough, end to end ------------------------------------------------------


def walkthrough_commands() -> list[str]:
    """The shell block that follows the walkthrough marker in docs/plugins.md."""
    text = DOCS.read_text()
    block = re.search(r"<!-- walkthrough:[^>]*-->\n```sh\n(.*?)```", text, re.S)
    assert block, "docs/plugins.md lost its walkthrough block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def make_shapes(root: Path) -> None:
    """6 colours (classes) x 4 positions of a square (content), 32x32 PNGs."""
    for name, rgb in COLOURS.items():
        (root / "shapes" / name).mkdir(parents=True)
        for i in range(6):
            a = np.full((32, 32, 3), 235, np.uint8)
            x, y = 3 + (i % 3) * 8, 4 + (i // 3) * 12
            a[y : y + 10, x : x + 10] = rgb
            Image.fromarray(a).save(root / "shapes" / name / f"{i}.png")
    tiny = (REPO / "tests" / "tiny.toml").read_text().replace('"synthetic"', '"folder"')
    tiny = re.sub(r"latent_epochs = \d+", "latent_epochs = 3", tiny)
    tiny = re.sub(r"amortized_epochs = \d+", "amortized_epochs = 2", tiny)
    (root / "shapes.toml").write_text(tiny)


def argv(line: str, name: str) -> list[str]:
    words = shlex.split(
        line.replace("my-shapes", name).replace("my_shapes", name.replace("-", "_"))
    )
    head = {
        "lordfx": [str(BIN / "lordfx")],
        "pip": [sys.executable, "-m", "pip"],
        "python": [sys.executable],
    }
    return head[words[0]] + words[1:]


def run_cmd(words: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PIP_NO_INPUT": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    done = subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{shlex.join(words)} failed:\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_docs_walkthrough_end_to_end(tmp_path):
    """Every command of the docs' walkthrough, in order, under a unique name (so concurrent
    runs cannot collide); the package is uninstalled even when a step fails."""
    name = f"shapes-e2e-{uuid.uuid4().hex[:8]}"
    distribution = f"lordfx-{name}"
    make_shapes(tmp_path)
    lines = walkthrough_commands()
    assert [line.split()[:2] for line in lines][:4] == [
        ["lordfx", "train"],
        ["lordfx", "eval"],
        ["lordfx", "package"],
        ["pip", "install"],
    ]
    try:
        for line in lines:
            done = run_cmd(argv(line, name), tmp_path)
            if line.startswith("lordfx plugins"):
                assert (
                    f"domain {name}: 16px, class = colour, content = position (trained model)"
                    in done.stdout
                )
            if line.startswith("lordfx package"):
                assert (
                    tmp_path / distribution / f"lordfx_{name.replace('-', '_')}" / "model"
                ).is_dir()
        for out in ("red_moved.png", "red_moved_api.png"):
            with Image.open(tmp_path / out) as im:
                assert im.size == (16, 16)
        card = (
            tmp_path / distribution / f"lordfx_{name.replace('-', '_')}" / MODEL_CARD
        ).read_text()
        assert "class from content codes" in card  # eval.json made it into the card
        listed = run_cmd([str(BIN / "lordfx"), "plugins"], tmp_path).stdout
        assert name not in listed  # the walkthrough's last step uninstalled it
    finally:
        subprocess.run(
            [sys.executable, "-m", "pip", "uninstall", "-y", "-q", distribution],
            capture_output=True,
            timeout=300,
        )
    from importlib import metadata

    with pytest.raises(metadata.PackageNotFoundError):
        metadata.distribution(distribution)


@pytest.mark.parametrize(
    "plugin",
    sorted(p.name for p in (REPO / "plugins").iterdir() if (p / "pyproject.toml").is_file()),
)
def test_built_in_plugins_have_the_layout_package_writes(plugin, tmp_path):
    """A built-in plugin and a packaged one are read by the same code: same pyproject shape,
    bundle declared through package_model_dir, model card beside it when there is a model."""
    built_in = tomllib.loads((REPO / "plugins" / plugin / "pyproject.toml").read_text())
    packaged = tomllib.loads(
        (write_package(fake_run(tmp_path), "layout", tmp_path / "d") / "pyproject.toml").read_text()
    )
    module = f"lordfx_{plugin}"
    assert built_in["project"]["entry-points"]["lordfx"] == {plugin: module}
    for key in ("package-data", "packages"):
        assert (
            built_in["tool"]["setuptools"][key].keys() == packaged["tool"]["setuptools"][key].keys()
        )
    assert (
        built_in["tool"]["setuptools"]["package-data"]
        == packaged["tool"]["setuptools"]["package-data"]
    )
    mod = importlib.import_module(module)
    host = Host(strict=True)
    host.add_plugin(mod, plugin)
    dom = host.domain(plugin)
    assert dom.bundle == package_model_dir(module) == Path(mod.__file__).parent / "model"
    if dom.has_model:
        assert (dom.bundle.parent / MODEL_CARD).is_file()
