"""``lordfx bench`` arithmetic and report: FLOPs counted per step, the peak they are compared
with, achieved GFLOP/s and the printed table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

STAGES = ("latent", "amortized")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(fn: Callable[[], Any]) -> tuple[int, Any]:
    """FLOPs of one call of ``fn`` (forward + backward, as executed) and its return value."""
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return counter.get_total_flops(), out


def measure_peak_gflops(device: torch.device, dtype: torch.dtype, seconds: float = 1.0) -> float:
    """Best GFLOP/s of a square ``torch.mm`` in ``dtype`` over ``seconds`` (one call >= 0.1 s,
    or the largest size: 2048 on CPU, 8192 on CUDA)."""
    n, largest = 256, 8192 if device.type == "cuda" else 2048
    while True:
        a = torch.randn(n, n, device=device).to(dtype)
        b, out = torch.randn_like(a), torch.empty_like(a)
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(device)
        if time.perf_counter() - t0 >= 0.1 or n >= largest:
            break
        n *= 2
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t0))
    return best / 1e9


class Peaks:
    """Peak GFLOP/s per dtype: given once by the user, or measured once per dtype."""

    def __init__(self, device: torch.device, given: float | None) -> None:
        self.device, self.given, self.cache = device, given, {}

    def __call__(self, dtype: torch.dtype) -> tuple[float, str]:
        name = str(dtype).removeprefix("torch.")
        if self.given is not None:
            return self.given, "given (--peak-gflops)"
        if dtype not in self.cache:
            self.cache[dtype] = measure_peak_gflops(self.device, dtype)
        return self.cache[dtype], f"measured: best {name} torch.mm over 1 s"


def with_rates(r: dict[str, Any], peaks: Peaks, dtype: torch.dtype) -> dict[str, Any]:
    """Add achieved GFLOP/s (FLOPs per image × images/s) and its fraction of the peak."""
    peak, source = peaks(dtype)
    r["peak_gflops"], r["peak_source"] = peak, source
    for s in STAGES:
        achieved = r[f"{s}_flops_per_image"] * r[f"{s}_images_per_s"] / 1e9
        r[f"{s}_gflops_per_s"] = achieved
        r[f"{s}_fraction_of_peak"] = achieved / peak
    return r


def format_report(result: dict[str, Any]) -> str:
    """The human-readable table ``lordfx bench`` prints (``--json`` prints ``result``)."""
    cfg, prec = result["config"], result["precision"]
    fmt = "channels_last" if prec["channels_last"] else "contiguous"
    lines = [
        f"device {result['device']} ({result['cpu']}, {result['threads']} threads)  "
        f"image {cfg['image_size']}  arch {cfg['arch']}  width {cfg['width']}  "
        f"batch {cfg['batch_size']}  loss {cfg['loss']}",
        f"precision {prec['dtype']} {fmt} (asked: {cfg['precision_requested']}): {prec['reason']}",
        f"{'mode':<10} {'stage':<10} {'img/s':>9} {'GFLOP/img':>10} {'GFLOP/s':>9} "
        f"{'% peak':>7} {'peak':>8} {'first loss':>11}",
    ]
    rows = [result] + ([result["plain"]] if "plain" in result else [])
    for r in rows:
        for s in STAGES:
            lines.append(
                f"{r['mode']:<10} {s:<10} {r[f'{s}_images_per_s']:>9.2f} "
                f"{r[f'{s}_flops_per_image'] / 1e9:>10.3f} {r[f'{s}_gflops_per_s']:>9.2f} "
                f"{100 * r[f'{s}_fraction_of_peak']:>6.1f}% {r['peak_gflops']:>8.1f} "
                f"{r[f'{s}_first_loss']:>11.5g}"
            )
    for r in rows:
        compiled = "".join(
            f", {s} compile+step {r[f'{s}_compile_s']:.1f} s" for s in STAGES if r["compile"]
        )
        lines.append(
            f"{r['mode']}: transfer batch 1 {r['transfer_batch1_ms']:.2f} ms, batch 64 "
            f"{r['transfer_batch64_images_per_s']:.2f} img/s; loss fwd+bwd "
            f"{r['loss_ms']:.0f} ms = {100 * r['loss_share']:.0f} % of a stage-1 step; "
            f"peak memory {r['peak_memory_mb']:.0f} MB{compiled}"
        )
    lines.append(f"peak GFLOP/s: {result['peak_source']}")
    if "speedup_vs_plain" in result:
        up = result["speedup_vs_plain"]
        diff = result.get("first_loss_relative_difference")
        check = (
            "; first-step loss relative difference "
            + ", ".join(f"{s} {diff[s]:.1e}" for s in STAGES)
            if diff
            else " (plain = paper architecture and VGG layers: first losses not comparable)"
        )
        lines.append("speed-up vs plain: " + ", ".join(f"{s} x{up[s]:.2f}" for s in STAGES) + check)
    return "\n".join(lines)
