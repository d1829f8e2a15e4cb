"""Bundle format (DESIGN §5): a trained model as a directory.

    config.json              format version, architecture, domain, class names, training
                             data + licence, metrics, sha256 of every weight file
    model.safetensors        AmortizedModel weights (generator + both encoders)
    class_codes.safetensors  optional: the learned stage-1 class codes (num_classes, class_dim)
    *.safetensors            optional extras listed in config.json "files" (e.g. a view bank:
                             mean content code per known content label), loaded as ``extras``

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
    #: Extra tensor files by file name, e.g. ``{"view_bank.safetensors": {"codes": ...}}``.
    extras: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

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
    extras: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write a bundle directory atomically (built in a temp dir, then renamed into place).

    ``half`` stores weights as fp16 (for shipping); they are loaded back as fp32.
    ``extras`` are further tensor files by name (floating tensors follow ``half`` too).
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
        for name, tensors in (extras or {}).items():
            save_file(_cast(tensors, dtype), str(tmp / _extra_name(name)))
            files[name] = sha256(tmp / name)
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


def _extra_name(name: str) -> str:
    if Path(name).name != name or not name.endswith(".safetensors"):
        raise LordfxError(f"bundle extra {name!r} must be a plain *.safetensors file name")
    if name in (MODEL_FILE, CODES_FILE):
        raise LordfxError(f"bundle extra {name!r} would replace the bundle's own weights")
    return name


def _cast(tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating tensors to ``dtype`` on the CPU; integer tensors (labels) unchanged."""
    return {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in tensors.items()
    }


def add_bundle_file(
    path: Path, name: str, tensors: dict[str, torch.Tensor], info: dict[str, Any]
) -> Path:
    """Add (or replace) the extra tensor file ``name`` in an existing bundle and merge
    ``info`` into its config.json; the sha256 list is updated. Floating tensors take the
    bundle's dtype. Each file is replaced atomically, the weights file last."""
    path = Path(path)
    config = read_bundle_config(path)
    dtype = torch.float16 if config.get("dtype") == "float16" else torch.float32
    target = path / _extra_name(name)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=path)
    os.close(fd)
    try:
        save_file(_cast(tensors, dtype), tmp)
        digest = sha256(Path(tmp))
        config = {**config, **info, "files": {**config.get("files", {}), name: digest}}
        _write_json_atomic(path / "config.json", config)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data, indent=2) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


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
    extras = {
        name: {
            k: (v.float() if v.is_floating_point() else v).to(device)
            for k, v in load_file(str(path / name)).items()
        }
        for name in info.get("files", {})
        if name not in (MODEL_FILE, CODES_FILE) and name.endswith(".safetensors")
    }
    return Bundle(model=model, info=info, class_codes=codes, path=path, extras=extras)
