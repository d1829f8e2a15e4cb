"""Named-view metrics of a Cars3D bundle (issue 16), on the held-out cars of its run.

- ``view``: LPIPS (alex v0.1) and L1 between view(x, a, e) = G(bank[a, e], E_y(x)) and the
  real render of x's car at (a, e), over seeded (image, view) pairs of held-out cars; on
  the same pairs, copying the input x (the trivial baseline) and the ordinary transfer
  G(E_c(r), E_y(x)) from a real render r of *another* held-out car at (a, e) (what a
  reference image gives instead of the bank).
- ``where``: the bank view nearest to E_c(x) against x's true (azimuth, elevation) on every
  held-out image: exact, azimuth and elevation separately, within ±1 azimuth step
  (elevation exact), and the share read back to front (azimuth off by 180°), beside chance.

The bank and model come from the run's bundle, or any bundle of the same run (``--bundle``:
e.g. the fp16 one shipped in the plugin, or one with an encoder-built bank).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lordfx.errors import LordfxError

log = logging.getLogger("lordfx.eval")
EVAL_CARS_FILE = "eval_cars.json"
BANK_FILE = "view_bank.safetensors"


@dataclass(frozen=True)
class CarsEvalSettings:
    pairs: int = 2000
    seed: int = 0
    lpips: bool = True
    device: str = "auto"
    batch_size: int = 128


def read_bank(bundle: Any) -> tuple[torch.Tensor, tuple, torch.Tensor, dict[str, Any]]:
    """codes (K, D) (rendered from); (locate codes (K, D), whitening (D, D) or None): what
    ``where`` compares E_c with (the codes when the bank has none); labels (K, 2)
    (azimuth index, elevation index); the config entry."""
    info, tensors = bundle.info.get("view_bank"), bundle.extras.get(BANK_FILE)
    if info is None or tensors is None:
        raise LordfxError(f"{bundle.path}: no view bank; add one with `lordfx view-bank RUN_DIR`")
    if tuple(info["factors"]) != ("azimuth", "elevation"):
        raise LordfxError(
            f"{bundle.path}: view bank factors {info['factors']}, need azimuth/elevation"
        )
    locate = (tensors.get("locate_codes", tensors["codes"]), tensors.get("locate_whiten"))
    return tensors["codes"], locate, tensors["labels"].long(), info


def nearest_views(
    content: torch.Tensor, bank_codes: torch.Tensor, whiten: torch.Tensor | None = None
) -> torch.Tensor:
    """Index of the bank entry nearest to each code (Euclidean, after multiplying both by
    ``whiten`` when given): what ``where`` reports.

    Shape: (N, D), (K, D), (D, D) → (N,) int64.
    """
    x, bank = content.float(), bank_codes.to(content.device).float()
    if whiten is not None:
        w = whiten.to(x.device).float()
        x, bank = x @ w.T, bank @ w.T
    return torch.cdist(x, bank).argmin(dim=1)


def where_accuracy(found: np.ndarray, truth: np.ndarray, num_azimuths: int) -> dict[str, float]:
    """Shape: found, truth (N, 2) (azimuth index, elevation index)."""
    d_az = np.abs(found[:, 0] - truth[:, 0]) % num_azimuths
    d_az = np.minimum(d_az, num_azimuths - d_az)
    same_el = found[:, 1] == truth[:, 1]
    return {
        "exact": float(np.mean((d_az == 0) & same_el)),
        "azimuth": float(np.mean(d_az == 0)),
        "elevation": float(np.mean(same_el)),
        "within_1_azimuth_step": float(np.mean((d_az <= 1) & same_el)),
        "back_to_front": float(np.mean(d_az == num_azimuths // 2)),
    }


def sample_view_pairs(heldout: Any, num: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded (source image, target image, reference image) index triples in ``heldout``:
    target = source's car at a random view; reference = another car at that view."""
    labels = heldout.content_labels
    key = {
        (int(c), int(a), int(e)): i
        for i, (c, (a, e)) in enumerate(zip(heldout.class_ids, labels, strict=True))
    }
    rng = np.random.default_rng(seed)
    src, tgt, ref = [], [], []
    for _ in range(100 * num):
        if len(src) == num:
            break
        i, j = rng.integers(heldout.num_images, size=2)
        car, view = int(heldout.class_ids[i]), tuple(int(v) for v in labels[j])
        other = int(heldout.class_ids[j])
        if other == car or (car, *view) not in key:  # reference must be another car
            continue
        src.append(i)
        tgt.append(key[(car, *view)])
        ref.append(j)
    if len(src) < num:
        raise LordfxError(f"held-out set has too few cars sharing views for {num} pairs")
    return {"source": np.array(src), "target": np.array(tgt), "reference": np.array(ref)}


def _score(outputs: torch.Tensor, targets: torch.Tensor, lpips_model: Any) -> dict[str, float]:
    from lordfx_trainer.lpips_metric import lpips_distance

    row = {"l1": float((outputs - targets).abs().mean())}
    if lpips_model is not None:
        d = torch.cat(
            [
                lpips_distance(lpips_model, a, b)
                for a, b in zip(outputs.split(64), targets.split(64), strict=True)
            ]
        )
        row["lpips_alex"] = float(d.mean())
        row["lpips_alex_sem"] = float(d.std() / np.sqrt(len(d)))
    return row


@torch.no_grad()
def evaluate_cars(
    run_dir: Path,
    settings: CarsEvalSettings,
    bundle_dir: Path | None = None,
    figures: Path | None = None,
) -> dict[str, Any]:
    """View and where metrics of ``bundle_dir`` [default: RUN_DIR/bundle] on the run's
    held-out cars (re-created and checked against the recorded split). ``run_dir`` may also
    be a bundle whose run directory is gone: its recorded config, data source and split are
    used (:func:`~lordfx_trainer.evaluation.runs.bundle_heldout`). With ``figures``,
    turntable figures of a few held-out cars there (:func:`turntable_figures`)."""
    from lordfx.bundle import load_bundle
    from lordfx_trainer.evaluation.runs import bundle_heldout, encoder_codes, load_run, to_float
    from lordfx_trainer.run import resolve_device

    start = time.perf_counter()
    run_dir = Path(run_dir)
    if (run_dir / "latent.safetensors").is_file() or not (run_dir / "model.safetensors").is_file():
        run = load_run(run_dir, settings.device)
        heldout, device, bundle_dir = run.heldout, run.device, bundle_dir or run.dir / "bundle"
    else:  # a bundle on its own (e.g. the shipped one): its recorded split and data source
        heldout, device = bundle_heldout(run_dir), resolve_device(settings.device)
        bundle_dir = bundle_dir or run_dir
    if heldout is None or heldout.content_labels is None or heldout.num_classes < 2:
        raise LordfxError(f"{run_dir}: needs held-out classes (>= 2) with content labels")
    bundle = load_bundle(bundle_dir, device=device)
    bank_codes, locate_codes, bank_labels, info = read_bank(bundle)
    model, bs = bundle.model, settings.batch_size
    images = to_float(heldout.images, device)
    codes = encoder_codes(model, images, bs)
    found = bank_labels[nearest_views(codes.content_codes, *locate_codes)].cpu().numpy()
    num_az = len(info["values"]["azimuth"])
    where = where_accuracy(found, heldout.content_labels, num_az)
    where["chance_exact"] = 1.0 / len(bank_labels)

    pairs = sample_view_pairs(heldout, settings.pairs, settings.seed)
    lookup = {tuple(v): k for k, v in enumerate(bank_labels.tolist())}
    missing = {tuple(heldout.content_labels[t]) for t in pairs["target"]} - set(lookup)
    if missing:
        raise LordfxError(f"view bank lacks views {sorted(missing)[:4]} of the held-out renders")
    views = [lookup[tuple(heldout.content_labels[t])] for t in pairs["target"]]
    cls = codes.class_codes[pairs["source"]]
    outputs = _decode(model, bank_codes[views].to(device), cls, bs)
    transfer = _decode(model, codes.content_codes[pairs["reference"]], cls, bs)
    targets = images[pairs["target"]]
    lpips_model = None
    if settings.lpips:
        from lordfx_trainer.lpips_metric import make_lpips

        lpips_model = make_lpips("alex").to(device)
    spins = []
    if figures is not None:
        spins = turntable_figures(
            heldout,
            images,
            codes,
            (bank_codes, locate_codes, bank_labels),
            model,
            figures,
            3,
            settings.seed,
        )
    return {
        "run": str(run_dir),
        "bundle": str(bundle.path),
        "view_bank": {
            k: info.get(k)
            for k in ("source", "locate_source", "locate_metric", "num_views", "num_images")
        },
        "heldout": {"cars": heldout.num_classes, "images": heldout.num_images},
        "settings": settings.__dict__,
        "where": where,
        "view": {
            "pairs": settings.pairs,
            "view": _score(outputs, targets, lpips_model),
            "copy_input": _score(images[pairs["source"]], targets, lpips_model),
            "transfer_from_reference": _score(transfer, targets, lpips_model),
        },
        "turntables": spins,
        "seconds": round(time.perf_counter() - start, 1),
    }


@torch.no_grad()
def turntable_figures(
    heldout: Any,
    images: torch.Tensor,
    codes: Any,
    bank: tuple[torch.Tensor, tuple, torch.Tensor],
    model: Any,
    out_dir: Path,
    num: int,
    seed: int,
) -> list[dict[str, Any]]:
    """For ``num`` held-out cars (seeded): one random render x; the real renders of its car
    at x's true elevation, azimuths in order from x's own (top row), above what
    ``lordfx cars turntable x`` makes (bottom row: the bank ring at the elevation ``where``
    reads, from the azimuth it reads). Writes OUT_DIR/turntable_CAR.png (not for committing:
    Cars3D pixels) and returns per car the views read and the mean L1 of the two rows.
    """
    from lordfx_trainer.grids import save_grid, to_uint8

    bank_codes, locate_codes, bank_labels = bank
    labels, num_az = heldout.content_labels, int(bank_labels[:, 0].max()) + 1
    rng = np.random.default_rng([seed, 16])
    rows = []
    for car in rng.permutation(heldout.num_classes)[:num]:
        members = np.flatnonzero(heldout.class_ids == car)
        i = int(rng.choice(members))
        k = int(nearest_views(codes.content_codes[i : i + 1], *locate_codes)[0])
        a, e = labels[i]
        fa, fe = bank_labels[k].tolist()
        real = [members[(labels[members, 0] == (a + s) % num_az) & (labels[members, 1] == e)]
                for s in range(num_az)]  # fmt: skip
        ring = [bank_labels.tolist().index([(fa + s) % num_az, fe]) for s in range(num_az)]
        spin = model.decode(
            bank_codes[ring].to(images.device), codes.class_codes[i : i + 1].expand(num_az, -1)
        ).float()
        top = torch.cat([images[r] for r in real])
        grid = np.concatenate(
            [np.concatenate(list(to_uint8(row)), axis=1) for row in (top, spin)], axis=0
        )
        name = heldout.class_names[car]
        save_grid(grid, out_dir / f"turntable_{name}.png", scale=2)
        rows.append({"car": name, "true": [int(a), int(e)], "where": [fa, fe],
                     "l1_to_real_ring": float((spin - top).abs().mean())})  # fmt: skip
    return rows


def _decode(model: Any, content: torch.Tensor, cls: torch.Tensor, bs: int) -> torch.Tensor:
    return torch.cat(
        [model.decode(c, y).float() for c, y in zip(content.split(bs), cls.split(bs), strict=True)]
    )


def summary_markdown(result: dict[str, Any]) -> str:
    """The numbers as a short markdown block (for the model card)."""
    w, v = result["where"], result["view"]
    metric = "lpips_alex" if "lpips_alex" in v["view"] else "l1"
    lines = [
        f"view ({v['pairs']} held-out pairs, {metric}; lower is better):",
        "| method | " + metric + " | L1 |",
        "|---|---|---|",
    ]
    for name in ("view", "transfer_from_reference", "copy_input"):
        row = v[name]
        lines.append(f"| {name.replace('_', ' ')} | {row[metric]:.3f} | {row['l1']:.3f} |")
    n = result["heldout"]["images"]
    lines += [
        "",
        f"where ({n} held-out images): exact {w['exact']:.3f} (chance {w['chance_exact']:.3f}), "
        f"azimuth {w['azimuth']:.3f}, elevation {w['elevation']:.3f}, within ±1 azimuth step "
        f"{w['within_1_azimuth_step']:.3f}, back-to-front {w['back_to_front']:.3f}",
    ]
    return "\n".join(lines)
