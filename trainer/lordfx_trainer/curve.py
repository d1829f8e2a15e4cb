"""Quality over training time (``curve_every``): what the loss alone does not show.

Stage 1 (latent): linear probes on the stage-1 content codes of training images — do they
carry the known content labels (e.g. Cars3D azimuth/elevation) and do they stay free of
the class (y←c)? — and content-transfer LPIPS between training classes, G(c_j, e_y(i))
against the real image of i's class at j's content labels, beside copying i. A run whose
content codes carry too little renders every image with one average view however low its
loss goes, which only such a measure or a swap grid reveals. For any data set, with or
without content labels (faces, shoes): *content use*, the reconstruction LPIPS of seeded
training images G(c_i, e_y(i)) against x_i beside the same with another image's content code
G(c_j, e_y(i)); while the two are equal the generator ignores the content codes.

Stage 2 (amortized): content-transfer LPIPS (alex v0.1) on seeded held-out pairs with
ground truth (paper Table 1 protocol, :mod:`lordfx_trainer.evaluation.transfer`).

Each point is one row of ``curve.jsonl`` in the run directory: stage, step, epoch, the
stage's training seconds so far and the metrics. Rows after a resumed checkpoint are
dropped like those of metrics.jsonl. Points need ImageNet LPIPS weights for stage 2
(``lordfx weights``, looked up locally only); without them, or below 32², the points have no
LPIPS columns (one warning).
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
CURVE_PAIRS = 500  # transfer pairs per point (seed 0), training or held-out classes
CONTENT_USE_IMAGES = 500  # training images of the content-use measure (seed 0)
CONTENT_USE_PARTS = ("recon", "shuffled_content")  # own content code, another image's
MIN_LPIPS_SIZE = 32  # AlexNet's strides leave nothing of smaller images
PROBE_CODES = 6000  # at most this many stage-1 codes per probe (seeded subset)


class TrainingCurve:
    """Writes curve points of one run; cheap state (pairs, LPIPS net) is built on first use."""

    def __init__(self, run_dir: Path, train: Any, heldout: Any, device: torch.device) -> None:
        self.path = Path(run_dir) / CURVE_FILE
        self.train, self.heldout, self.device = train, heldout, device
        self._lpips: Any = None
        # part → (images the pairs use, their indices (sorted), pairs, copy-class LPIPS);
        # parts: "train", "heldout" and the CONTENT_USE_PARTS (copy-class 0: not used)
        self._pairs: dict[str, tuple[torch.Tensor, np.ndarray, Any, float]] = {}
        self._disabled: set[str] = set()

    def truncate(self, stage: str, step: int) -> None:
        loop.truncate_jsonl(self.path, stage, step)

    @torch.no_grad()
    def latent_point(
        self,
        model: Any,
        state: loop.LoopState,
        autocast: Callable[[], AbstractContextManager],
    ) -> dict | None:
        """Probes of the stage-1 content codes and transfer between *training* cars.

        Transfer: G(c_j, e_y(i)) for seeded training pairs with ground truth (same protocol as
        the held-out one, on training classes: stage 1 has no encoders for unseen ones).
        """
        if model.content_mode != "latent":
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
        class_ids = torch.from_numpy(self.train.class_ids).to(self.device)

        def transfer_in(part: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
            def transfer(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
                content = model.content_embedding(j)
                x_i = self._images(part, i)
                return model.generator(content, model.class_codes(x_i, class_ids[i]))

            return transfer

        if self._ready("train"):
            copy = self._pairs["train"][3]
            row.update(self._score("train", transfer_in("train"), model, autocast))
            row["train_copy_class_lpips_alex"] = copy
        if self._ready_content_use():  # the same transfer with pairs (i, i) and (i, another)
            for part in CONTENT_USE_PARTS:
                row[f"{part}_lpips_alex"] = self._score(part, transfer_in(part), model, autocast)[
                    f"{part}_lpips_alex"
                ]
        return self._write("latent", state, row)

    def _ready_content_use(self) -> bool:
        """Pairs of the content-use measure, built once: CONTENT_USE_IMAGES seeded training
        images (sorted), each with its own content code ("recon") and with the next sampled
        image's ("shuffled_content"); the target is the image itself."""
        if CONTENT_USE_PARTS[0] in self._pairs:
            return True
        if self.train is None or not self._lpips_ready(self.train):
            return False
        from lordfx_trainer.evaluation.transfer import Pairs

        n = len(self.train.class_ids)
        rng = np.random.default_rng(0)
        idx = np.sort(rng.choice(n, size=min(n, CONTENT_USE_IMAGES), replace=False))
        images = torch.from_numpy(self.train.images[idx].transpose(0, 3, 1, 2).copy())
        images = images.to(self.device).float() / 255
        for part, content in zip(CONTENT_USE_PARTS, (idx, np.roll(idx, 1)), strict=True):
            self._pairs[part] = (images, idx, Pairs(idx, content, idx, 0), 0.0)
        return True

    @torch.no_grad()
    def amortized_point(
        self,
        model: Any,
        state: loop.LoopState,
        autocast: Callable[[], AbstractContextManager],
    ) -> dict | None:
        """Held-out content-transfer LPIPS/L1 of the encoders as they are now."""
        if not self._ready("heldout"):
            return None
        copy = self._pairs["heldout"][3]

        def transfer(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
            return model.transfer(self._images("heldout", i), self._images("heldout", j))

        row = self._score("heldout", transfer, model, autocast)
        row["heldout_copy_class_lpips_alex"] = copy
        return self._write("amortized", state, row)

    def _score(
        self,
        part: str,
        transfer: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        model: Any,
        autocast: Callable[[], AbstractContextManager],
    ) -> dict:
        """Mean LPIPS alex and L1 of ``transfer`` on the part's pairs, model in eval mode."""
        from lordfx_trainer.evaluation.transfer import pair_metrics

        pairs = self._pairs[part][2]
        was_training = model.training
        model.eval()
        lpips, l1 = [], []
        for start in range(0, len(pairs), 100):
            sl = slice(start, start + 100)
            i = torch.from_numpy(pairs.class_idx[sl]).to(self.device)
            j = torch.from_numpy(pairs.content_idx[sl]).to(self.device)
            target = self._images(part, torch.from_numpy(pairs.target_idx[sl]))
            with autocast():
                out = transfer(i, j)
            m = pair_metrics(out.float(), target, {"alex": self._lpips})
            lpips.append(m["lpips_alex"].cpu().numpy())
            l1.append(m["l1"].cpu().numpy())
        model.train(was_training)
        return {
            f"{part}_lpips_alex": float(np.concatenate(lpips).mean()),
            f"{part}_l1": float(np.concatenate(l1).mean()),
            f"{part}_pairs": len(pairs),
        }

    def _ready(self, part: str) -> bool:
        """Pairs of ``part`` ("train" or "heldout") and the LPIPS net, built once."""
        if part in self._pairs:
            return True
        if part in self._disabled or "lpips" in self._disabled:
            return False
        data = self.train if part == "train" else self.heldout
        if data is None or data.content_labels is None or data.num_classes < 2:
            self._disabled.add(part)  # nothing with ground truth to score against
            return False
        if not self._lpips_ready(data):
            return False
        from lordfx_trainer.evaluation.transfer import pair_metrics, sample_pairs

        pairs = sample_pairs(data.class_ids, data.content_labels, CURVE_PAIRS, seed=0)
        used = np.unique(np.concatenate([pairs.class_idx, pairs.content_idx, pairs.target_idx]))
        images = torch.from_numpy(data.images[used].transpose(0, 3, 1, 2).copy())
        self._pairs[part] = (images.to(self.device).float() / 255, used, pairs, 0.0)
        copy = []
        for start in range(0, len(pairs), 100):
            sl = slice(start, start + 100)
            i = self._images(part, torch.from_numpy(pairs.class_idx[sl]))
            t = self._images(part, torch.from_numpy(pairs.target_idx[sl]))
            copy.append(pair_metrics(i, t, {"alex": self._lpips})["lpips_alex"].cpu().numpy())
        self._pairs[part] = (*self._pairs[part][:3], float(np.concatenate(copy).mean()))
        return True

    def _lpips_ready(self, data: Any) -> bool:
        """The LPIPS net, loaded once; False (one warning) when it cannot be."""
        if "lpips" in self._disabled:
            return False
        if self._lpips is None and not self._load_lpips(data):
            self._disabled.add("lpips")
            return False
        return True

    def _images(self, part: str, idx: torch.Tensor) -> torch.Tensor:
        """Images of dataset indices ``idx`` (only those some pair uses are kept)."""
        images, used = self._pairs[part][:2]
        rows = np.searchsorted(used, idx.cpu().numpy())
        return images[torch.from_numpy(rows).to(self.device)]

    def _load_lpips(self, data: Any) -> bool:
        from lordfx.errors import LordfxError
        from lordfx_trainer import weights
        from lordfx_trainer.lpips_metric import make_lpips

        if min(data.images.shape[1:3]) < MIN_LPIPS_SIZE:
            log.warning("training curve: no LPIPS points (images under %d² are too small for "
                        "LPIPS alex)", MIN_LPIPS_SIZE)  # fmt: skip
            return False
        try:
            weights.provision("alexnet", download=False)  # never a download mid-training
            self._lpips = make_lpips("alex").to(self.device).eval()
        except (LordfxError, OSError) as exc:
            log.warning("training curve: no LPIPS points (%s)", str(exc).splitlines()[0])
            return False
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
