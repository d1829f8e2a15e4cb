"""``lordfx bench PRESET``: training images/s per stage, FLOPs per step and transfer latency,
measured with the same step functions training uses, on synthetic data of the preset's shape.

Each rate is the median over ``steps`` timed steps after ``warmup`` untimed ones. The first
warm-up step of each stage runs eagerly under ``torch.utils.flop_counter.FlopCounterMode``:
its forward + backward FLOPs (2 per multiply-add, summed over the matmuls and convolutions
actually executed; elementwise ops are not counted) divided by the batch give
``*_flops_per_image``. Achieved GFLOP/s = FLOPs per image × images/s, and its fraction of
``peak_gflops`` (the best rate of a large ``torch.mm`` in the run's dtype, or ``--peak-gflops``).

Modes: ``optimised`` is training's own path (uint8 data on the device, foreach/fused Adam, no
per-step host sync, the precision and memory format ``lordfx.precision`` resolves — "auto"
unless forced — the configured architecture and VGG layers, optionally ``torch.compile``);
``plain`` is the authors' reference implementation's way (``bench_plain``) with the *paper*
architecture and the paper's VGG layers, whatever the preset says: the baseline a speed-up is
measured against. Both modes build their models from the same seed, draw the same noise and
step on the same batch, so with the paper architecture their first-step losses
(``*_first_loss``) agree: the check that a speed-up compares the same maths.

``loss_ms`` / ``loss_share``: the loss's own forward + backward (prediction with a gradient,
target without) at the stage-1 batch, and its share of a stage-1 step.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from lordfx import precision as precision_policy
from lordfx.errors import LordfxError, UsageError
from lordfx.nets import AmortizedModel
from lordfx.precision import Precision
from lordfx_trainer import bench_plain
from lordfx_trainer.bench_report import STAGES, Peaks, count_flops, sync, with_rates
from lordfx_trainer.config import TrainConfig
from lordfx_trainer.loop import DeviceData, make_optimizer
from lordfx_trainer.models import LatentModel
from lordfx_trainer.steps import Batch, amortized_step, latent_step

NUM_CLASSES = 16
#: The plain baseline's numerics, whatever the machine would choose (bench_plain).
PLAIN = Precision("fp32", False, "plain baseline: fp32, contiguous")
MODES = ("optimised", "plain")
LossesFn = Callable[[Batch], dict[str, torch.Tensor]]


@dataclass
class Harness:
    """One mode ready to time: a training step per stage, a transfer call per batch size."""

    steps: dict[str, Callable[[], Any]]  # each returns the step's loss
    transfer: Callable[[int], Callable[[], Any]]
    compile_targets: list[torch.nn.Module]


def _timed(fn: Callable[[], Any], warmup: int, steps: int, device: torch.device) -> float:
    """Median seconds per call of ``fn``."""
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _models(
    cfg: TrainConfig, num_images: int, device: torch.device, fmt: torch.memory_format
) -> tuple[LatentModel, AmortizedModel]:
    """Stage-1 and stage-2 models, freshly seeded: every mode starts from the same weights."""
    torch.manual_seed(cfg.seed)
    latent = LatentModel(
        cfg.model_config(), NUM_CLASSES, num_images, cfg.class_mode, cfg.content_mode
    ).to(device, memory_format=fmt)
    amortized = AmortizedModel(cfg.model_config()).to(device, memory_format=fmt)
    return latent, amortized


def _param_groups(cfg: TrainConfig, latent: LatentModel, amortized: AmortizedModel) -> dict:
    """Per stage, the optimiser's parameter groups as ``run.Run`` builds them."""
    encoders = [*amortized.class_encoder.parameters(), *amortized.content_encoder.parameters()]
    return {
        "latent": latent.param_groups(cfg.generator_lr, cfg.code_lr),
        "amortized": [
            {"params": list(amortized.generator.parameters()), "lr": cfg.amortized_generator_lr},
            {"params": encoders, "lr": cfg.encoder_lr},
        ],
    }


def _step_losses(
    cfg: TrainConfig, latent: LatentModel, amortized: AmortizedModel, loss_fn: Any, n: int
) -> dict[str, LossesFn]:
    """Per stage: Batch → named losses, calling the step functions as training does."""
    device = next(latent.parameters()).device
    noise = torch.Generator(device=device).manual_seed(cfg.seed)  # same draws in every mode
    t_class = torch.zeros(NUM_CLASSES, cfg.class_dim, device=device)
    t_content = torch.zeros(n, cfg.content_dim, device=device)
    return {
        "latent": lambda b: latent_step(
            latent, b, loss_fn, cfg.content_noise_std, cfg.content_decay,
            cfg.content_decay_on, noise,
        ),
        "amortized": lambda b: amortized_step(
            amortized, b, loss_fn, t_class, t_content,
            cfg.class_code_weight, cfg.content_code_weight,
        ),
    }  # fmt: skip


def _optimised(
    cfg: TrainConfig,
    images: np.ndarray,
    ids: np.ndarray,
    loss_fn: Any,
    device: torch.device,
    choice: Precision,
) -> Harness:
    """Training's own path (``run.Run`` + ``loop.run_stage``), as configured."""
    data = DeviceData(images, ids, device, choice.channels_last)
    latent, amortized = _models(cfg, len(images), device, choice.memory_format)
    losses = _step_losses(cfg, latent, amortized, loss_fn, len(images))
    groups = _param_groups(cfg, latent, amortized)
    opts = {s: make_optimizer(groups[s], device) for s in STAGES}
    idx = torch.arange(cfg.batch_size, device=device) % len(images)
    autocast: Callable[[], Any] = lambda: choice.autocast(device.type)  # noqa: E731

    def train_step(stage: str) -> Callable[[], torch.Tensor]:
        def step() -> torch.Tensor:
            with autocast():
                loss = losses[stage](data.batch(idx))["loss"]
            opts[stage].zero_grad(set_to_none=True)
            loss.backward()
            opts[stage].step()
            return loss.detach()  # no host sync: training syncs once per log interval

        return step

    def transfer(n: int) -> Callable[[], Any]:
        x = data.batch(torch.arange(n, device=device) % len(images)).images

        def call() -> None:
            with torch.inference_mode(), autocast():
                amortized.eval().transfer(x, x)

        return call

    nets = [m for m in latent.children() if not isinstance(m, torch.nn.Embedding)]
    nets += [amortized.generator, amortized.class_encoder, amortized.content_encoder]
    return Harness({s: train_step(s) for s in STAGES}, transfer, nets)


def _plain(
    cfg: TrainConfig,
    images: np.ndarray,
    ids: np.ndarray,
    loss_fn: Any,
    device: torch.device,
) -> Harness:
    """The reference implementation's way (``bench_plain``): fp32, contiguous, eager, the
    paper's architecture (``loss_fn`` must be the paper's VGG layers)."""
    cfg = replace(cfg, arch="paper", vgg_layers=TrainConfig.vgg_layers)
    data = bench_plain.HostData(images, ids, device)
    latent, amortized = _models(cfg, len(images), device, torch.contiguous_format)
    losses = _step_losses(cfg, latent, amortized, bench_plain.plain_loss(loss_fn), len(images))
    groups = _param_groups(cfg, latent, amortized)
    indices = [i % len(images) for i in range(cfg.batch_size)]
    steps = {
        s: bench_plain.plain_train_step(
            data, indices, losses[s], bench_plain.plain_optimizer(groups[s])
        )
        for s in STAGES
    }

    def transfer(n: int) -> Callable[[], Any]:
        x = data.batch([i % len(images) for i in range(n)]).images

        def call() -> None:
            with torch.no_grad():
                amortized.eval().transfer(x, x)

        return call

    return Harness(steps, transfer, [])


def _compile(harness: Harness, device: torch.device) -> dict[str, float]:
    """``torch.compile`` the networks in place, then time each stage's first (compiling) step."""
    for net in harness.compile_targets:
        net.compile()
    out = {}
    for stage in STAGES:
        t0 = time.perf_counter()
        try:
            harness.steps[stage]()
        except Exception as exc:  # inductor fails in many ways (no C++ compiler, unsupported op)
            raise LordfxError(
                f"--compile failed in the {stage} step (run without --compile): {exc}"
            ) from exc
        sync(device)
        out[f"{stage}_compile_s"] = time.perf_counter() - t0
    return out


def bench_mode(
    cfg: TrainConfig,
    loss_fn: torch.nn.Module,
    mode: str = "optimised",
    steps: int = 5,
    warmup: int = 2,
    num_images: int = 512,
    compile: bool = False,
    choice: Precision | None = None,
) -> dict[str, Any]:
    """Measure one mode (``optimised`` or ``plain``) for ``cfg``; see the module docstring."""
    if mode not in MODES:
        raise UsageError(f"unknown bench mode {mode!r}; valid: {', '.join(MODES)}")
    device = _device(cfg)
    if mode == "plain":
        choice = PLAIN
    elif choice is None:
        choice = precision_policy.resolve(cfg.precision, device, cfg.memory_format)
    rng = np.random.default_rng(cfg.seed)
    s, c = cfg.image_size, cfg.channels
    images = rng.integers(0, 256, (num_images, s, s, c), dtype=np.uint8)
    ids = np.arange(num_images) % NUM_CLASSES
    if mode == "optimised":
        harness = _optimised(cfg, images, ids, loss_fn, device, choice)
    else:
        harness = _plain(cfg, images, ids, loss_fn, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result: dict[str, Any] = {"mode": mode, "compile": compile}
    for stage in STAGES:  # warm-up step 1, eager and counted
        flops, loss = count_flops(harness.steps[stage])
        result[f"{stage}_flops_per_image"] = flops / cfg.batch_size
        result[f"{stage}_first_loss"] = float(loss)
    if compile:
        result.update(_compile(harness, device))
    for stage in STAGES:
        sec = _timed(harness.steps[stage], max(0, warmup - 1), steps, device)
        result[f"{stage}_images_per_s"] = cfg.batch_size / sec
    loss_s = _timed(_loss_call(cfg, images, loss_fn, device, choice), warmup, steps, device)
    result["loss_ms"] = 1000 * loss_s
    result["loss_share"] = loss_s * result["latent_images_per_s"] / cfg.batch_size
    for n in (1, 64):
        sec = _timed(harness.transfer(n), warmup, steps, device)
        result[f"transfer_batch{n}_ms"] = 1000 * sec
        result[f"transfer_batch{n}_images_per_s"] = n / sec
    result["peak_memory_mb"] = _peak_memory_mb(device)
    return result


def _loss_call(
    cfg: TrainConfig,
    images: np.ndarray,
    loss_fn: Any,
    device: torch.device,
    choice: Precision,
) -> Callable[[], Any]:
    """One loss forward + backward at the stage-1 batch, in ``choice``'s numerics and layout."""
    idx = np.arange(cfg.batch_size) % len(images)
    x = torch.from_numpy(images[idx].transpose(0, 3, 1, 2).copy()).to(device).float() / 255
    x = x.contiguous(memory_format=choice.memory_format)
    pred = x.flip(0).requires_grad_(True)

    def call() -> None:
        with choice.autocast(device.type):
            loss = loss_fn(pred, x)
        loss.backward()
        pred.grad = None

    return call


def bench(
    cfg: TrainConfig,
    steps: int = 5,
    warmup: int = 2,
    num_images: int = 512,
    mode: str = "optimised",
    compare_plain: bool = False,
    compile: bool = False,
    peak_gflops: float | None = None,
) -> dict[str, Any]:
    """The ``lordfx bench`` report: ``mode``'s numbers at the top level; with
    ``compare_plain``, the plain mode's under ``"plain"`` and the speed-up per stage."""
    from lordfx_trainer.losses import build_loss

    if compile and (mode == "plain"):
        raise UsageError("--compile applies to the optimised path, not to --plain")
    device = _device(cfg)
    keys = ("image_size", "channels", "width", "arch", "batch_size", "loss", "vgg_layers")
    result: dict[str, Any] = {"config": {k: getattr(cfg, k) for k in keys}}
    result["config"]["precision_requested"] = cfg.precision
    if mode == "plain":
        choice = PLAIN
    else:
        choice = precision_policy.resolve(cfg.precision, device, cfg.memory_format)
    result["precision"] = choice.to_dict()
    result["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result["cpu"] = precision_policy.cpu_model()
    result.update(torch=torch.__version__, threads=torch.get_num_threads())
    result.update(steps=steps, warmup=warmup)
    loss_fn = build_loss(cfg.loss, True, cfg.vgg_layers).to(device)  # random weights: speed only
    plain_loss = build_loss(cfg.loss, True).to(device)  # the paper's layers
    peaks = Peaks(device, peak_gflops)
    main = bench_mode(
        cfg,
        plain_loss if mode == "plain" else loss_fn,
        mode,
        steps,
        warmup,
        num_images,
        compile,
        choice,
    )
    result.update(with_rates(main, peaks, choice.torch_dtype))
    if compare_plain and mode != "plain":
        plain = bench_mode(cfg, plain_loss, "plain", steps, warmup, num_images)
        result["plain"] = with_rates(plain, peaks, torch.float32)
        result["speedup_vs_plain"] = {
            s: main[f"{s}_images_per_s"] / plain[f"{s}_images_per_s"] for s in STAGES
        }
        if cfg.arch == "paper" and cfg.vgg_layers == TrainConfig.vgg_layers:
            result["first_loss_relative_difference"] = {
                s: abs(main[f"{s}_first_loss"] - plain[f"{s}_first_loss"])
                / max(abs(plain[f"{s}_first_loss"]), 1e-12)
                for s in STAGES
            }
    return result


def _device(cfg: TrainConfig) -> torch.device:
    from lordfx_trainer.run import resolve_device

    return resolve_device(cfg.device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # process-wide maximum RSS: in a --compare-plain run it includes the mode measured first
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def with_overrides(cfg: TrainConfig, **kw: Any) -> TrainConfig:
    return replace(cfg, **{k: v for k, v in kw.items() if v is not None})
