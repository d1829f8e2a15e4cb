"""Numeric precision and memory format, chosen per machine (training, benchmarks, editing).

``precision = "auto"`` picks bf16 autocast + channels_last only where the device computes
bf16 natively: CUDA devices that report bf16 support, and CPUs with AVX-512 BF16 or AMX
(``/proc/cpuinfo`` flags ``avx512_bf16`` / ``amx_bf16``, or oneDNN's own bf16 check). On
such a CPU a sub-second probe still has to confirm it (one 3×3 convolution of a typical
generator shape, forward + backward, timed in bf16 and in fp32): an emulated bf16 is 10–20×
slower than fp32 (measured on a 2-core AVX2 EPYC) and is never chosen. Everywhere else the
answer is fp32 with whichever memory format (channels_last or contiguous) the same probe
measures faster. The verdict is cached per machine (CPU model + flags + torch version +
threads) in ``$LORDFX_CACHE/precision.json`` (default ``~/.cache/lordfx``), so the probe
runs once. ``"fp32"`` / ``"bf16"`` force a precision; a run records the choice and the
reason in its config.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

log = logging.getLogger("lordfx.precision")

PRECISIONS = ("auto", "fp32", "bf16")
MEMORY_FORMATS = ("auto", "channels_last", "contiguous")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
#: bf16 must beat fp32 by this factor in the probe to be chosen (noise margin).
BF16_MARGIN = 1.15
PROBE_VERSION = 1


@dataclass(frozen=True)
class Precision:
    """The resolved choice: ``dtype`` "fp32" | "bf16", memory format, and why."""

    dtype: str
    channels_last: bool
    reason: str

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.dtype == "bf16" else torch.float32

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        """bf16 autocast for bf16, a no-op context for fp32."""
        if self.dtype == "bf16":
            return torch.autocast(device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def autocast_module(module: torch.nn.Module, choice: Precision, device_type: str) -> None:
    """Make ``module``'s forward run under ``choice``'s autocast and return fp32 (editing:
    callers keep fp32 tensors). A no-op for fp32."""
    if choice.dtype != "bf16":
        return
    inner = module.forward

    def forward(*args: object, **kwargs: object) -> torch.Tensor:
        with choice.autocast(device_type):
            return inner(*args, **kwargs).float()

    module.forward = forward  # type: ignore[method-assign]


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def onednn_bf16() -> bool:
    """oneDNN's own verdict on native bf16 (a private torch op; False if it moved)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_has_native_bf16(flags: frozenset[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in NATIVE_BF16_FLAGS) or onednn_bf16()


# -- the probe ----------------------------------------------------------------------------------
def _time_conv(dtype: torch.dtype, channels_last: bool, repeats: int = 3) -> float:
    """Best-of seconds for one forward + backward 3×3 conv, 64→64 channels at 32², batch 4
    (a tapered generator's late layers, VGG's conv1/conv2; ~0.5 GFLOP: milliseconds)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, 32, 32, generator=g)
    w = torch.randn(64, 64, 3, 3, generator=g) * 0.05
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = x.contiguous(memory_format=fmt).requires_grad_(True)
    w = w.contiguous(memory_format=fmt).requires_grad_(True)
    ctx = (
        torch.autocast("cpu", dtype=torch.bfloat16)
        if dtype == torch.bfloat16
        else contextlib.nullcontext()
    )
    best = float("inf")
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        with ctx:
            y = F.conv2d(x, w, padding=1)
        y.float().sum().backward()
        if i:  # the first call pays oneDNN's primitive creation
            best = min(best, time.perf_counter() - t0)
    return best


def probe_cpu(native_bf16: bool) -> dict[str, float]:
    """Seconds per probe conv for fp32 contiguous / channels_last (and bf16 where native)."""
    out = {
        "fp32_contiguous_s": _time_conv(torch.float32, False),
        "fp32_channels_last_s": _time_conv(torch.float32, True),
    }
    if native_bf16:
        out["bf16_channels_last_s"] = _time_conv(torch.bfloat16, True)
    return out


def decide_cpu(native_bf16: bool, timings: dict[str, float], reason_hw: str) -> Precision:
    """The CPU verdict from the hardware check and the probe's timings (pure; tested)."""
    fp32_cl = timings["fp32_channels_last_s"] <= timings["fp32_contiguous_s"]
    fp32_best = min(timings["fp32_channels_last_s"], timings["fp32_contiguous_s"])
    fmt = "channels_last" if fp32_cl else "contiguous"
    if native_bf16 and "bf16_channels_last_s" in timings:
        ratio = fp32_best / timings["bf16_channels_last_s"]
        if ratio >= BF16_MARGIN:
            return Precision("bf16", True, f"{reason_hw}; probe: bf16 {ratio:.2f}× fp32")
        return Precision(
            "fp32",
            fp32_cl,
            f"{reason_hw}, but the probe measured bf16 at only {ratio:.2f}× fp32 "
            f"(needs ≥ {BF16_MARGIN}×): fp32, {fmt} faster",
        )
    return Precision("fp32", fp32_cl, f"{reason_hw}: fp32; probe: {fmt} faster")


def _cache_path() -> Path:
    root = os.environ.get("LORDFX_CACHE") or Path.home() / ".cache" / "lordfx"
    return Path(root) / "precision.json"


def _machine_key(flags: frozenset[str]) -> str:
    text = "|".join(
        [
            str(PROBE_VERSION),
            cpu_model(),
            " ".join(sorted(flags)),
            torch.__version__,
            str(torch.get_num_threads()),
        ]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cached(key: str, compute: Callable[[], Precision]) -> Precision:
    path = _cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache.get(key), dict):
        try:
            return Precision(**cache[key])
        except TypeError:
            pass
    verdict = compute()
    cache[key] = verdict.to_dict()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as exc:  # a read-only home must not stop training
        log.debug("precision cache not written: %s", exc)
    return verdict


def auto_cpu(flags: frozenset[str] | None = None) -> Precision:
    """The cached CPU verdict (probing once per machine)."""
    flags = cpu_flags() if flags is None else flags
    native = cpu_has_native_bf16(flags)
    found = sorted(f for f in NATIVE_BF16_FLAGS if f in flags)
    if native:
        hw = f"CPU has native bf16 ({', '.join(found) or 'oneDNN bf16'})"
    else:
        hw = f"CPU has no native bf16 (capability {torch.backends.cpu.get_cpu_capability()})"
    return _cached(_machine_key(flags), lambda: decide_cpu(native, probe_cpu(native), hw))


def resolve(
    requested: str = "auto", device: torch.device | str = "cpu", memory_format: str = "auto"
) -> Precision:
    """The precision to use on ``device``: ``requested`` is "auto" | "fp32" | "bf16";
    ``memory_format`` "auto" | "channels_last" | "contiguous" overrides the layout."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(
            f"memory_format must be one of {', '.join(MEMORY_FORMATS)}, got {memory_format!r}"
        )
    device = torch.device(device)
    if requested != "auto":  # a forced memory_format is applied below, as for "auto"
        choice = Precision(requested, requested == "bf16", f"forced: precision={requested}")
    elif device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        name = torch.cuda.get_device_name(device)
        choice = Precision(
            "bf16" if ok else "fp32",
            True,
            f"CUDA {name} {'supports' if ok else 'lacks'} bf16",
        )
    elif device.type == "cpu":
        choice = auto_cpu()
    else:
        choice = Precision("fp32", False, f"{device.type}: fp32 (no bf16 policy for it)")
    if memory_format != "auto":
        choice = Precision(
            choice.dtype,
            memory_format == "channels_last",
            f"{choice.reason}; {memory_format} forced",
        )
    return choice
