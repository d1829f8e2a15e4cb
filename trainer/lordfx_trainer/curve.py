"""Quality over training time (``curve_every``): what the loss alone does not show.

Stage 1 (latent): linear probes on the stage-1 content codes of training images — do they
carry the known content labels (e.g. Cars3D azimuth/elevation) and do they stay free of
the class (y←c)? A run whose content codes stay at chance renders every image with one
average view however low its loss goes, which only a probe or a swap grid reveals.

Stage 2 (amortized): content-transfer LPIPS (alex v0.1) on seeded held-out pairs with
ground truth (paper Table 1 protocol, :mod:`lordfx_trainer.evaluation.transfer`).

Each point is one row of ``curve.jsonl`` in the run directory: stage, step, epoch, the
stage's training seconds so far and the metrics. Rows after a resumed checkpoint are
dropped like those of metrics.jsonl. Points need ImageNet LPIPS weights for stage 2
(``lordfx weights``, looked up locally only); without them the stage-2 points are skipped
with one warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lordfx_trainer import loop

log = logging.getLogger("lordfx.trainer")
CURVE_FILE = "curve.jsonl"
CURVE_PAIRS = 500  # held-out transfer pairs per stage-2 point (seed 0)
MIN_LPIPS_SIZE = 32  # AlexNet's strides leave nothing of smaller images
PROBE_CODES = 6000  # at most this many stage-1 codes per probe (seeded subset)


class TrainingCurve:
    """Writes curve points of one run; cheap state (pairs, LPIPS net) is built on first use."""

    def __init__(self, run_dir: Path, train: Any, heldout: Any, device: torch.device) -> None:
        self.path = Path(run_dir) / CURVE_FILE
        self.train, self.heldout, self.device = train, heldout, device
        self._lpips: Any = None
        self._heldout: tuple[torch.Tensor, Any] | None = None
        self._disabled: set[str] = set()

    def truncate(self, stage: str, step: int) -> None:
        loop.truncate_jsonl(self.path, stage, step)

    @torch.no_grad()
    def latent_point(self, model: Any, state: loop.LoopState) -> dict | None:
        """Probe accuracies of the stage-1 content codes (latent content codes only)."""
        if model.content_mode != "latent" or "latent" in self._disabled:
            return None
        from lordfx_trainer.evaluation.leakage import ProbeSettings, probe

        codes = model.content_embedding.weight.detach().float()
        settings = ProbeSettings(max_codes=PROBE_CODES)
        row: dict[str, Any] = {"content_code_rms": float(codes.pow(2).mean().sqrt())}
        y_from_c = probe(codes, self.train.class_ids, "logistic", settings)
        row["class_from_content"] = y_from_c["accuracy"]
        row["class_from_content_chance"] = y_from_c["chance"]
        labels = self.train.content_labels
        if labels is not None:
            views = probe(codes, labels, "logistic", settings)
            row["content_labels_from_content"] = views["accuracy"]
            row["content_labels_from_content_chance"] = views["chance"]
        return self._write("latent", state, row)

    @torch.no_grad()
    def amortized_point(
        self,
        model: Any,
        state: loop.LoopState,
        autocast: Callable[[], AbstractContextManager],
    ) -> dict | None:
        """Held-out content-transfer LPIPS/L1 of the encoders as they are now."""
        if "amortized" in self._disabled or not self._heldout_ready():
            return None
        from lordfx_trainer.evaluation.transfer import pair_metrics

        images, pairs = self._heldout  # type: ignore[misc]
        was_training = model.training
        model.eval()
        lpips, l1 = [], []
        for start in range(0, len(pairs), 100):
            sl = slice(start, start + 100)
            i = torch.from_numpy(pairs.class_idx[sl]).to(self.device)
            j = torch.from_numpy(pairs.content_idx[sl]).to(self.device)
            target = images[torch.from_numpy(pairs.target_idx[sl]).to(self.device)]
            with autocast():
                out = model.transfer(images[i], images[j])
            m = pair_metrics(out.float(), target, {"alex": self._lpips})
            lpips.append(m["lpips_alex"].cpu().numpy())
            l1.append(m["l1"].cpu().numpy())
        model.train(was_training)
        row = {
            "heldout_lpips_alex": float(np.concatenate(lpips).mean()),
            "heldout_l1": float(np.concatenate(l1).mean()),
            "pairs": len(pairs),
        }
        return self._write("amortized", state, row)

    def _heldout_ready(self) -> bool:
        if self._heldout is not None:
            return True
        held = self.heldout
        if held is None or held.content_labels is None or held.num_classes < 2:
            self._disabled.add("amortized")  # nothing with ground truth to score against
            return False
        if min(held.images.shape[1:3]) < MIN_LPIPS_SIZE:
            log.warning("training curve: no held-out LPIPS points (images under %d² are too "
                        "small for LPIPS alex)", MIN_LPIPS_SIZE)  # fmt: skip
            self._disabled.add("amortized")
            return False
        from lordfx.errors import LordfxError
        from lordfx_trainer import weights
        from lordfx_trainer.evaluation.transfer import sample_pairs
        from lordfx_trainer.lpips_metric import make_lpips

        try:
            weights.provision("alexnet", download=False)  # never a download mid-training
            self._lpips = make_lpips("alex").to(self.device).eval()
        except (LordfxError, OSError) as exc:
            log.warning("training curve: no held-out LPIPS points (%s)", str(exc).splitlines()[0])
            self._disabled.add("amortized")
            return False
        pairs = sample_pairs(held.class_ids, held.content_labels, CURVE_PAIRS, seed=0)
        images = torch.from_numpy(held.images.transpose(0, 3, 1, 2).copy()).to(self.device)
        self._heldout = (images.float() / 255, pairs)
        return True

    def _write(self, stage: str, state: loop.LoopState, row: dict) -> dict:
        row = {
            "stage": stage,
            "step": state.global_step,
            "epoch": state.epoch,
            "elapsed_s": round(state.elapsed_s, 1),
            **row,
        }
        loop.append_jsonl(self.path, row)
        shown = {k: round(v, 4) for k, v in row.items() if isinstance(v, float)}
        log.info("curve %s step %d: %s", stage, state.global_step, shown)
        return row
