"""``lordfx eval RUN_DIR``: the paper's evaluation of one run, written to RUN_DIR/eval.json
(atomically) with its figures in RUN_DIR/eval/.

eval.json:
    format, format_version        "lordfx-eval", 1
    run, dataset, ablation        the run directory, TrainConfig.dataset, TrainConfig.ablation
    settings                      EvalSettings (pairs, seed, lpips, tto_*, probes, ...)
    paper.lpips_alex              Table 1 LORD number for this dataset (null if none)
    heldout                       num_classes, num_images, class_names | {skipped}
    codes                         how codes were obtained: stage1_train, heldout
    transfer                      num_pairs, num_without_target, notes, metrics: {model,
                                  copy_class, copy_content, mean_image} → {lpips_alex,
                                  lpips_vgg, l1, ssim} → {mean, std}   | {skipped}
    leakage.{stage1_train,heldout}  source, class_from_content (y←c) → {logistic, mlp},
                                  content_from_class (y→c) → {joint, <column>...} →
                                  {logistic, mlp}; each {accuracy, chance, num_train,
                                  num_test, num_labels}   | {skipped}
    figures                       swap_grid, transfer_examples (paths relative to RUN_DIR)
    elapsed_s
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lordfx_trainer.data.base import ImageDataset
from lordfx_trainer.evaluation import figures
from lordfx_trainer.evaluation.leakage import ProbeSettings, leakage, settings_dict
from lordfx_trainer.evaluation.runs import (
    Codes,
    LoadedRun,
    encoder_codes,
    generate,
    load_run,
    optimized_codes,
    stage1_codes,
    to_float,
)
from lordfx_trainer.evaluation.transfer import baselines, sample_pairs, score_transfers, summarize

log = logging.getLogger("lordfx.eval")
FORMAT, FORMAT_VERSION = "lordfx-eval", 1
EVAL_FILE = "eval.json"
#: Paper Table 1 content-transfer LPIPS (alex) of LORD at 64×64 (DESIGN §3).
PAPER_LPIPS = {"cars3d": 0.078, "smallnorb": 0.117, "smallnorb-poses": 0.106, "celeba": 0.197}
#: AlexNet's strided conv1 and two max-pools leave nothing of images under 31 px.
LPIPS_MIN_SIZE = {"alex": 32, "vgg": 16}
TRAIN_GRID_POOL = 2048


@dataclass(frozen=True)
class EvalSettings:
    """What ``lordfx eval`` computes; recorded in eval.json so a result says how it was made."""

    pairs: int = 2000
    seed: int = 0
    lpips: tuple[str, ...] = ("alex", "vgg")
    tto_steps: int = 200  # test-time optimisation steps ("w/o stage 2" runs only)
    tto_lr: float = 1e-2
    batch_size: int = 256
    grid_size: int = 8
    device: str = "auto"
    probes: ProbeSettings = field(default_factory=ProbeSettings)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["lpips"] = list(self.lpips)
        out["probes"] = settings_dict(self.probes)
        return out


def evaluate_run(run_dir: Path, settings: EvalSettings = EvalSettings()) -> dict[str, Any]:
    """Evaluate one run (Tables 1–3 protocol) and write ``run_dir/eval.json``; returns it.

    transfer: Table 1 error of x(i←j) = G(E_c(x_j), E_y(x_i)) against the real image of
    i's class at j's content, beside the copy/mean baselines on the same pairs.
    leakage: Table 2 probes on the stage-1 training codes and on held-out codes.
    """
    start = time.time()
    run = load_run(Path(run_dir), settings.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        result = _evaluate(run, settings)
    result["elapsed_s"] = round(time.time() - start, 2)
    write_json_atomic(result, run.dir / EVAL_FILE)
    log.info("wrote %s", run.dir / EVAL_FILE)
    return result


def _evaluate(run: LoadedRun, s: EvalSettings) -> dict[str, Any]:
    result: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "run": str(run.dir),
        "dataset": run.cfg.dataset,
        "ablation": run.cfg.ablation,
        "settings": s.to_dict(),
        "paper": {"lpips_alex": PAPER_LPIPS.get(run.cfg.dataset)},
    }
    train_codes = stage1_codes(run, s.batch_size)
    result["codes"] = {"stage1_train": train_codes.source}
    result["leakage"] = {"stage1_train": _leakage(train_codes, run.train, s)}
    heldout = run.heldout
    if heldout is None or heldout.num_classes < 2:
        note = "the run has fewer than two held-out classes (num_heldout_classes)"
        result["heldout"] = result["transfer"] = result["leakage"]["heldout"] = {"skipped": note}
        result["figures"] = _train_figures(run, train_codes, s)
        return result
    images = to_float(heldout.images, run.device)
    codes = heldout_codes(run, images, s)
    result["heldout"] = {
        "num_classes": heldout.num_classes,
        "num_images": heldout.num_images,
        "class_names": list(heldout.class_names),
    }
    result["codes"]["heldout"] = codes.source
    result["leakage"]["heldout"] = _leakage(codes, heldout, s)
    result["transfer"], pairs = _transfer(run, images, codes, s)
    result["figures"] = figures.write_figures(
        run.dir / figures.FIGURE_DIR,
        run.generator,
        images,
        heldout.class_ids,
        codes,
        pairs,
        s.grid_size,
        s.seed,
    )
    return result


def _leakage(codes: Codes, data: ImageDataset, s: EvalSettings) -> dict[str, Any]:
    probes = leakage(
        codes.class_codes,
        codes.content_codes,
        data.class_ids,
        data.content_labels,
        data.content_names,
        s.probes,
    )
    return {"source": codes.source, **probes}


def heldout_codes(run: LoadedRun, images: torch.Tensor, s: EvalSettings) -> Codes:
    """Codes of held-out images: stage-2 encoders, or test-time optimisation without them.

    Shape: images (N, C, H, W) in [0, 1] → Codes with N rows.
    """
    if run.amortized is not None:
        return encoder_codes(run.amortized, images, s.batch_size)
    log.info("no stage 2: optimising codes of %d held-out images", len(images))
    return optimized_codes(run, images, s.tto_steps, s.tto_lr, s.batch_size, s.seed)


def _transfer(run: LoadedRun, images: torch.Tensor, codes: Codes, s: EvalSettings) -> tuple:
    heldout = run.heldout
    if heldout.content_labels is None:
        note = f"{heldout.name} has no content labels: no ground truth for x(i←j)"
        return {"skipped": note}, None
    pairs = sample_pairs(heldout.class_ids, heldout.content_labels, s.pairs, s.seed)
    if len(pairs) == 0:
        note = "no held-out pair of different classes has a ground-truth image"
        return {"skipped": note, "num_without_target": pairs.num_without_target}, None
    from lordfx_trainer.lpips_metric import make_lpips

    size = run.cfg.image_size
    nets = [n for n in s.lpips if size >= LPIPS_MIN_SIZE.get(n, 0)]
    notes = [f"lpips_{n} needs images >= {LPIPS_MIN_SIZE[n]} px" for n in s.lpips if n not in nets]
    lpips_models = {net: make_lpips(net).to(run.device) for net in nets}

    def model(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return generate(run.generator, codes.content_codes[j], codes.class_codes[i], s.batch_size)

    log.info("content transfer on %d held-out pairs", len(pairs))
    scores = score_transfers(
        {"model": model, **baselines(images)}, images, pairs, lpips_models, s.batch_size
    )
    return {
        "num_pairs": len(pairs),
        "num_without_target": pairs.num_without_target,
        "metrics": summarize(scores),
        "notes": notes,
    }, pairs


def _train_figures(run: LoadedRun, codes: Codes, s: EvalSettings) -> dict[str, str]:
    # No held-out classes: the swap grid shows training images through the stage-1 codes,
    # drawn from a seeded subset so a large dataset is never put on the device whole.
    n = run.train.num_images
    keep = np.sort(np.random.default_rng(s.seed).choice(n, min(n, TRAIN_GRID_POOL), replace=False))
    images = to_float(run.train.images[keep], run.device)
    rows = torch.from_numpy(keep).to(run.device)
    pool = Codes(codes.class_codes[rows], codes.content_codes[rows], codes.source)
    out_dir = run.dir / figures.FIGURE_DIR
    class_ids = run.train.class_ids[keep]
    return figures.write_figures(
        out_dir, run.latent.generator, images, class_ids, pool, None, s.grid_size, s.seed
    )


def write_json_atomic(data: Any, path: Path) -> Path:
    """``json.dumps(data)`` to ``path`` via a temp file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(data, indent=2, default=_jsonable) + "\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is as readable as any file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def summary_lines(result: dict[str, Any]) -> list[str]:
    """A short human summary of one eval.json (for stderr)."""
    lines = [f"{result['run']}: {result['dataset']}, {result['ablation']}"]
    transfer = result.get("transfer", {})
    if "metrics" in transfer:
        m = transfer["metrics"]
        key = "lpips_alex" if "lpips_alex" in m["model"] else "l1"
        base = ", ".join(f"{b} {m[b][key]['mean']:.3f}" for b in m if b != "model")
        lines.append(
            f"  transfer {key} {m['model'][key]['mean']:.3f} ± {m['model'][key]['std']:.3f} "
            f"({base}); L1 {m['model']['l1']['mean']:.3f}, SSIM {m['model']['ssim']['mean']:.3f} on {transfer['num_pairs']} pairs"
        )
    else:
        lines.append(f"  transfer skipped: {transfer.get('skipped')}")
    for part, values in result["leakage"].items():
        if "skipped" in values:
            continue
        yc = values["class_from_content"]["mlp"]
        text = f"  leakage ({part}, mlp): y←c {yc['accuracy']:.3f} (chance {yc['chance']:.3f})"
        cy = values["content_from_class"].get("joint")
        if cy is not None:
            text += f", y→c {cy['mlp']['accuracy']:.3f} (chance {cy['mlp']['chance']:.3f})"
        lines.append(text)
    return lines
