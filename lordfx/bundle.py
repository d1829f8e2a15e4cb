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
from safetensors import safe_open
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
    """``path/config.json``, checked: a lordfx bundle of a known format version whose
    ``files`` map plain file names to sha256 digests. Any problem is one
    :class:`InputError` naming the file."""
    cfg_path = Path(path) / "config.json"
    try:
        info = json.loads(cfg_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(cfg_path, "no such file (not a lordfx bundle)") from None
    except json.JSONDecodeError as exc:
        raise InputError(cfg_path, f"invalid JSON ({exc})") from None
    except UnicodeDecodeError:
        raise InputError(cfg_path, "not a text file (not a lordfx bundle)") from None
    except OSError as exc:
        raise InputError(cfg_path, f"cannot read ({exc.strerror or exc})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise InputError(cfg_path, "not a lordfx bundle (format field missing)")
    version = info.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise InputError(cfg_path, f"format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise InputError(
            cfg_path,
            f"bundle format {version} is newer than this lordfx "
            f"(reads up to {FORMAT_VERSION}); upgrade lordfx",
        )
    if version < 1:
        raise InputError(cfg_path, f"unknown bundle format version {version}")
    files = info.get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise InputError(cfg_path, "'files' must map file names to sha256 digests")
    for name in files:
        if Path(name).name != name or name in ("", ".", ".."):
            raise InputError(cfg_path, f"'files' names {name!r}, not a file inside the bundle")
    return info


def _tensors(f: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; anything else (a pickle renamed .safetensors, a
    truncated file) is refused naming the file. Nothing is ever unpickled."""
    try:
        return load_file(str(f))
    except Exception as exc:  # safetensors raises its own error type for a bad header
        raise InputError(f, _not_safetensors(f, exc)) from None


def _not_safetensors(f: Path, exc: Exception) -> str:
    with f.open("rb") as fh:
        head = fh.read(4)
    if head[:1] == b"\x80":
        kind = "a Python pickle (e.g. torch.save)"
    elif head == b"PK\x03\x04":
        kind = "a zip archive (a torch.save checkpoint?)"
    else:
        kind = f"corrupt or not safetensors ({str(exc).strip() or type(exc).__name__})"
    return f"not a valid safetensors file: {kind}; lordfx never unpickles model files"


def _check_weights(f: Path, cfg: ModelConfig) -> None:
    """The weights file holds exactly the architecture's tensors, with their shapes: checked
    on the header and a model on the meta device, so a hostile config cannot make lordfx
    allocate more than the weights file holds."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in AmortizedModel(cfg).state_dict().items()}
    try:
        with safe_open(str(f), "pt") as fh:
            found = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:  # see _tensors
        raise InputError(f, _not_safetensors(f, exc)) from None
    if found != expected:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        shapes = sorted(k for k in set(found) & set(expected) if found[k] != expected[k])
        what = (
            f"missing {missing[0]}"
            if missing
            else f"unexpected tensor {extra[0]}"
            if extra
            else f"{shapes[0]} is {found[shapes[0]]}, the architecture needs {expected[shapes[0]]}"
        )
        raise InputError(f, f"weights do not match the architecture in config.json ({what})")


def load_bundle(path: Path, device: str | torch.device = "cpu", verify: bool = True) -> Bundle:
    """Load a bundle as fp32 on ``device`` in eval mode; checks the sha256 of every file.

    Refused with one :class:`InputError` naming the file: a config of an unknown format
    version or architecture, a weights file missing from ``files`` or whose sha256 does not
    match, a file that is not safetensors (pickles are never loaded), weights that do not
    fit the architecture.
    """
    path = Path(path)
    info = read_bundle_config(path)
    cfg_path = path / "config.json"
    files = info.get("files", {})
    if verify and MODEL_FILE not in files:
        raise InputError(cfg_path, f"'files' does not list {MODEL_FILE} with its sha256")
    for name, digest in files.items():
        f = path / name
        if not f.is_file():
            raise InputError(f, "missing from the bundle")
        if verify and sha256(f) != digest:
            raise InputError(f, "sha256 mismatch: the file is corrupt or was modified")
    if verify and (path / CODES_FILE).is_file() and CODES_FILE not in files:
        raise InputError(path / CODES_FILE, "not listed in config.json (no sha256 to check)")
    arch = info.get("architecture")
    if not isinstance(arch, dict):
        raise InputError(cfg_path, "'architecture' is missing or not a JSON object")
    try:
        cfg = ModelConfig.from_dict(arch)
    except (ValueError, TypeError) as exc:
        raise InputError(cfg_path, f"invalid architecture: {exc}") from None
    _check_weights(path / MODEL_FILE, cfg)
    model = AmortizedModel(cfg)
    state = {k: v.float() for k, v in _tensors(path / MODEL_FILE).items()}
    model.load_state_dict(state, strict=True)
    model.to(device).eval().requires_grad_(False)
    codes = None
    if (path / CODES_FILE).is_file():
        stored = _tensors(path / CODES_FILE)
        if "class_codes" not in stored:
            raise InputError(path / CODES_FILE, "has no 'class_codes' tensor")
        codes = stored["class_codes"].float().to(device)
    extras = {
        name: {
            k: (v.float() if v.is_floating_point() else v).to(device)
            for k, v in _tensors(path / name).items()
        }
        for name in files
        if name not in (MODEL_FILE, CODES_FILE) and name.endswith(".safetensors")
    }
    return Bundle(model=model, info=info, class_codes=codes, path=path, extras=extras)
