"""The view bank of a bundle: the mean content code of the training images at each known
content label (for Cars3D: each (azimuth, elevation)), so that views can be asked for by name.

Written into the bundle as ``view_bank.safetensors`` (codes (K, content_dim), labels (K, F)
int64, counts (K,) int64; K = label combinations present) plus ``view_bank`` in its
config.json (factor names, the value of every index, e.g. degrees, and the code source):

- automatically by :meth:`lordfx_trainer.run.Run.write_bundle` for data with content labels,
  from the noise-free stage-1 content codes c_i (the targets of stage 2, paper Eq. 8);
- by ``lordfx view-bank RUN_DIR [--source latent|encoder]`` for a finished run: ``encoder``
  averages the stage-2 content encoder's codes E_c(x_i) of the training images instead.

``lordfx ship`` carries the file into the shipped bundle (fp16 like the weights).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

log = logging.getLogger("lordfx.trainer")
VIEW_BANK_FILE = "view_bank.safetensors"
SOURCES = {
    "latent": "stage-1 content codes (noise-free), mean per view",
    "encoder": "stage-2 content encoder E_c on the training images, mean per view",
}


def mean_codes(codes: torch.Tensor, labels: np.ndarray) -> dict[str, torch.Tensor]:
    """Mean code per distinct label row, in sorted label order.

    Shape: codes (N, D), labels (N, F) int → codes (K, D) float32, labels (K, F) int64,
    counts (K,) int64, K = distinct rows of ``labels``.
    """
    if codes.ndim != 2 or labels.ndim != 2 or codes.shape[0] != labels.shape[0]:
        raise ValueError(f"codes {tuple(codes.shape)} and labels {labels.shape} do not pair up")
    uniq, inverse = np.unique(labels, axis=0, return_inverse=True)
    index = torch.from_numpy(inverse.reshape(-1).astype(np.int64)).to(codes.device)
    sums = torch.zeros(len(uniq), codes.shape[1], device=codes.device, dtype=torch.float32)
    sums.index_add_(0, index, codes.float())
    counts = torch.bincount(index, minlength=len(uniq))
    return {
        "codes": (sums / counts[:, None]).cpu(),
        "labels": torch.from_numpy(uniq.astype(np.int64)),
        "counts": counts.cpu().long(),
    }


def factor_values(ds: Any) -> dict[str, list[float]]:
    """The value of each index of each content factor: ``meta[NAME_degrees]`` where the
    reader records it (Cars3D: azimuth 15·a°, elevation 6·e°), else the index itself."""
    values = {}
    for k, name in enumerate(ds.content_names):
        recorded = ds.meta.get(f"{name}_degrees")
        top = int(ds.content_labels[:, k].max()) + 1
        if recorded is not None and len(recorded) >= top:
            values[name] = [float(v) for v in recorded]
        else:
            values[name] = [float(i) for i in range(top)]
    return values


def add_view_bank(bundle: Path, codes: torch.Tensor, ds: Any, source: str) -> Path:
    """Write the view bank of ``codes`` (one per image of ``ds``) into ``bundle``.

    Shape: codes (ds.num_images, content_dim).
    """
    from lordfx.bundle import add_bundle_file

    if ds.content_labels is None:
        raise ValueError(f"dataset {ds.name} has no content labels: no view bank")
    if codes.shape[0] != ds.num_images:
        raise ValueError(f"{codes.shape[0]} codes for {ds.num_images} images")
    tensors = mean_codes(codes, ds.content_labels)
    info = {
        "view_bank": {
            "file": VIEW_BANK_FILE,
            "factors": list(ds.content_names),
            "values": factor_values(ds),
            "source": source,
            "num_views": int(tensors["codes"].shape[0]),
            "num_images": int(ds.num_images),
        }
    }
    path = add_bundle_file(bundle, VIEW_BANK_FILE, tensors, info)
    log.info("view bank: %d views from %d images -> %s", len(tensors["codes"]), ds.num_images, path)
    return path


def view_bank_for_run(
    run_dir: Path,
    source: Literal["latent", "encoder"] = "latent",
    bundle: Path | None = None,
    device: str = "auto",
    batch_size: int = 256,
) -> Path:
    """(Re)build the view bank of a finished run into ``bundle`` [default: RUN_DIR/bundle]."""
    from lordfx.errors import LordfxError, UsageError
    from lordfx_trainer.evaluation.runs import encoder_codes, load_run, stage1_codes, to_float

    if source not in SOURCES:
        raise UsageError(f"unknown view-bank source {source!r}; valid: {', '.join(SOURCES)}")
    run = load_run(Path(run_dir), device)
    if run.train.content_labels is None:
        raise LordfxError(f"{run_dir}: dataset {run.cfg.dataset!r} has no content labels")
    if source == "latent":
        codes = stage1_codes(run, batch_size).content_codes
    else:
        if run.amortized is None:
            raise LordfxError(f"{run_dir}: no stage-2 encoders (amortized_epochs = 0)")
        images, step = run.train.images, 4096  # uint8 in memory; float a chunk at a time
        parts = [
            encoder_codes(run.amortized, to_float(images[s : s + step], run.device), batch_size)
            for s in range(0, len(images), step)
        ]
        codes = torch.cat([p.content_codes for p in parts])
    return add_view_bank(bundle or run.dir / "bundle", codes, run.train, SOURCES[source])
