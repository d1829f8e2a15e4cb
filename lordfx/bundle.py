"""Bundle format (DESIGN §5): a trained model as a directory.

    config.json              format version, architecture, domain, class names, training
                             data + licence, metrics, sha256 of every weight file
    model.safetensors        AmortizedModel weights (generator + both encoders)
    class_codes.safetensors  optional: the learned stage-1 class codes (num_classes, class_dim)

No pickles: weights are safetensors, configs JSON; hashes are verified on load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lordfx.errors import InputError, LordfxError
from lordfx.nets import AmortizedModel, ModelConfig

FORMAT = "lordfx-bundle"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CODES_FILE = "class_codes.safetensors"


@dataclass
class Bundle:
    model: AmortizedModel
    info: dict[str, Any]
    class_codes: torch.Tensor | None = None
    path: Path | None = field(default=None)

    @property
    def class_names(self) -> list[str]:
        return list(self.info.get("class_names", []))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_bundle(
    path: Path,
    model: AmortizedModel,
    info: dict[str, Any],
    class_codes: torch.Tensor | None = None,
    half: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write a bundle directory atomically (built in a temp dir, then renamed into place).

    ``half`` stores weights as fp16 (for shipping); they are loaded back as fp32.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise LordfxError(f"{path}: bundle already exists (pass overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        dtype = torch.float16 if half else torch.float32
        tensors = {
            k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()
        }
        save_file(tensors, str(tmp / MODEL_FILE))
        files = {MODEL_FILE: sha256(tmp / MODEL_FILE)}
        if class_codes is not None:
            save_file(
                {"class_codes": class_codes.detach().to("cpu", dtype).contiguous()},
                str(tmp / CODES_FILE),
            )
            files[CODES_FILE] = sha256(tmp / CODES_FILE)
        config = {
            **info,
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "architecture": model.cfg.to_dict(),
            "dtype": "float16" if half else "float32",
            "files": files,
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_bundle_config(path: Path) -> dict[str, Any]:
    cfg_path = Path(path) / "config.json"
    try:
        info = json.loads(cfg_path.read_text())
    except FileNotFoundError:
        raise InputError(cfg_path, "no such file (not a lordfx bundle)") from None
    except json.JSONDecodeError as exc:
        raise InputError(cfg_path, f"invalid JSON ({exc})") from None
    if info.get("format") != FORMAT:
        raise InputError(cfg_path, "not a lordfx bundle (format field missing)")
    if info.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(
            cfg_path,
            f"bundle format {info['format_version']} is newer than this lordfx "
            f"(reads up to {FORMAT_VERSION}); upgrade lordfx",
        )
    return info


def load_bundle(path: Path, device: str | torch.device = "cpu", verify: bool = True) -> Bundle:
    """Load a bundle as fp32 on ``device`` in eval mode; checks the sha256 of every file."""
    path = Path(path)
    info = read_bundle_config(path)
    for name, digest in info.get("files", {}).items():
        f = path / name
        if not f.is_file():
            raise InputError(f, "missing from the bundle")
        if verify and sha256(f) != digest:
            raise InputError(f, "sha256 mismatch: the file is corrupt or was modified")
    model = AmortizedModel(ModelConfig.from_dict(info["architecture"]))
    state = {k: v.float() for k, v in load_file(str(path / MODEL_FILE)).items()}
    model.load_state_dict(state, strict=True)
    model.to(device).eval().requires_grad_(False)
    codes = None
    if (path / CODES_FILE).is_file():
        codes = load_file(str(path / CODES_FILE))["class_codes"].float().to(device)
    return Bundle(model=model, info=info, class_codes=codes, path=path)
