"""The MODEL_CARD.md and README.md of a packaged plugin, generated from what the run recorded:
its config.json (data, split, recipe), the bundle (licence, classes, file hashes) and
eval.json (``lordfx eval``) when present. Nothing here is invented: a missing fact is
written as missing, with the command that would supply it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lordfx.domain import Domain
    from lordfx_trainer.packaging import PackageNames, RunFiles

#: The recipe keys a reader needs to judge a model (the full config is in model/config.json).
RECIPE_KEYS = (
    "image_size",
    "channels",
    "width",
    "arch",
    "content_dim",
    "class_dim",
    "loss",
    "latent_epochs",
    "amortized_epochs",
    "batch_size",
    "content_noise_std",
    "content_decay",
    "seed",
)
MAX_LISTED_CLASSES = 40
MAX_CURVE_ROWS = 12  # per stage; evenly spaced, the last point always kept


def model_card(
    names: PackageNames, domain: Domain, run: RunFiles, bundle: Path, info: dict[str, Any]
) -> str:
    """Shape: the run's records → markdown (data, licence, recipe, evaluation, files)."""
    parts = [
        f"# Model card: {names.distribution} (`{names.module}/model/`)\n",
        f"**What it does.** LORD (Gabbay & Hoshen, ICLR 2020) on the `{domain.name}` domain: "
        f"class = {domain.class_label}, content = {domain.content_label}. "
        f"`lordfx transfer CLASS_IMAGE CONTENT_IMAGE --domain {domain.name}` keeps the class of "
        "the first image and takes the content of the second; "
        f'`lordfx.load("{domain.name}")` returns the Python editor. Images are centre-cropped '
        f"to a square and resized to {domain.image_size}×{domain.image_size} "
        f"({'grey' if domain.channels == 1 else 'RGB'}); results come at that size.\n",
        _data_section(run, info),
        _recipe_section(run),
        _eval_section(run),
        _curve_section(run),
        _files_section(bundle, info),
    ]
    return "\n".join(parts)


def _data_section(run: RunFiles, info: dict[str, Any]) -> str:
    data = info.get("data", {})
    train = (run.config.get("run") or {}).get("train") or {}
    split = train.get("split") or data.get("split") or {}
    classes = info.get("class_names", [])
    listed = ", ".join(classes[:MAX_LISTED_CLASSES]) + (
        ", …" if len(classes) > MAX_LISTED_CLASSES else ""
    )
    licence = data.get("licence") or (
        "**not recorded.** The weights inherit the terms of the training images: state them "
        "(`lordfx package … --data-licence TEXT`) before sharing this package"
    )
    held = split.get("heldout_class_names") or []
    rows = [
        (
            "data",
            f"`{data.get('source', '?')}` ({data.get('reader', run.config.get('dataset'))} reader)",
        ),
        ("training images", str(train.get("num_images", "not recorded"))),
        ("classes", f"{len(classes)}: {listed}" if classes else "not recorded"),
        (
            "held out",
            f"{len(held)} classes (seed {split.get('seed', '?')}): {', '.join(held)}"
            if held
            else "none",
        ),
        ("licence", licence),
        ("preprocessing", _preprocessing(data.get("reader", run.config.get("dataset")))),
    ]
    return "## Training data\n\n| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def _preprocessing(reader: str | None) -> str:
    edit = "at edit time: centre square crop + resize (`lordfx.preprocess.ResizePreprocessor`)"
    if reader in ("folder", "synthetic"):
        return f"{edit}, as the {reader} reader prepared the training images"
    return (
        f"{edit}; the training images came through the {reader} reader: if it crops or aligns "
        "differently, give the domain a matching `preprocessor` (docs/plugins.md)"
    )


def _recipe_section(run: RunFiles) -> str:
    cfg = run.config
    rows = "".join(f"| {k} | {cfg[k]} |\n" for k in RECIPE_KEYS if k in cfg)
    extra = run.config.get("run") or {}
    precision = (extra.get("precision") or {}).get("dtype")
    note = (
        f"\nTrained in {precision}; shipped as fp16 (loaded back as fp32).\n" if precision else ""
    )
    return (
        f"## Recipe\n\nRun `{run.run_dir.name}` (the whole resolved config is in "
        f"`model/config.json` → `training.config`).\n\n| key | value |\n|---|---|\n{rows}{note}"
    )


def _eval_section(run: RunFiles) -> str:
    result = run.eval_result
    if result is None:
        return (
            "## Evaluation\n\nNot evaluated: the run had no eval.json when it was packaged "
            f"(`lordfx eval {run.run_dir}` writes one; package again to include it).\n"
        )
    lines = ["## Evaluation\n", f"From `{run.run_dir.name}/eval.json` (`lordfx eval`).\n"]
    transfer = result.get("transfer", {})
    if "metrics" in transfer:
        lines.append(_transfer_table(transfer))
    else:
        lines.append(f"Content transfer: skipped ({transfer.get('skipped', 'not computed')}).\n")
    lines.append(_leakage_table(result.get("leakage", {})))
    return "\n".join(lines)


def _transfer_table(transfer: dict[str, Any]) -> str:
    metrics = transfer["metrics"]
    keys = [k for k in ("lpips_alex", "lpips_vgg", "l1", "ssim") if k in metrics["model"]]
    head = "| | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n"
    body = "".join(
        f"| {name} | "
        + " | ".join(f"{m[k]['mean']:.3f} ± {m[k]['std']:.3f}" for k in keys)
        + " |\n"
        for name, m in metrics.items()
    )
    return f"Content transfer on {transfer.get('num_pairs', '?')} held-out pairs (lower LPIPS/L1 is better):\n\n{head}{body}"


def _leakage_table(leakage: dict[str, Any]) -> str:
    rows = []
    for part, values in leakage.items():
        if "skipped" in values:
            rows.append(f"| {part} | skipped: {values['skipped']} | |\n")
            continue
        for probe, r in values.get("class_from_content", {}).items():
            rows.append(
                f"| {part} ({values.get('source', '?')}) | class from content codes, {probe} | "
                f"{r['accuracy']:.3f} (chance {r['chance']:.3f}, {r['num_test']} test codes) |\n"
            )
    if not rows:
        return "Leakage probes: not computed.\n"
    return (
        "Leakage (how much class information the content codes carry; near chance is good):\n\n"
        "| codes | probe | accuracy |\n|---|---|---|\n" + "".join(rows)
    )


def _curve_section(run: RunFiles) -> str:
    """Transfer quality over training time from curve.jsonl (``curve_every``), if recorded."""
    import json

    path = run.run_dir / "curve.jsonl"
    if not path.is_file():
        return ""  # older runs and runs without curve_every: nothing to show, nothing claimed
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    stage1_end = max((r["elapsed_s"] for r in rows if r["stage"] == "latent"), default=0.0)
    lines = []
    for stage, part in (("latent", "train"), ("amortized", "heldout")):
        sel = [r for r in rows if r["stage"] == stage and f"{part}_lpips_alex" in r]
        keep = sorted(
            {round(k * (len(sel) - 1) / max(1, MAX_CURVE_ROWS - 1)) for k in range(MAX_CURVE_ROWS)}
        )
        for r in [sel[k] for k in keep if k < len(sel)]:
            hours = (r["elapsed_s"] + (stage1_end if stage == "amortized" else 0.0)) / 3600
            probe = r.get("content_labels_from_content")
            lines.append(
                f"| {stage} | {r['step']} | {hours:.2f} | "
                f"{'training' if part == 'train' else 'held-out'} | "
                f"{r[f'{part}_lpips_alex']:.3f} | {r[f'{part}_copy_class_lpips_alex']:.3f} | "
                f"{'' if probe is None else f'{probe:.3f}'} |\n"
            )
    if not lines:
        return ""
    return (
        "## Training curve\n\nFrom `curve.jsonl` (`lordfx train … --set curve_every=N`): "
        "content-transfer LPIPS alex on 500 seeded pairs with ground truth — of training classes "
        "in stage 1 (the encoders do not exist yet), of held-out classes in stage 2 — beside "
        "copying the class image on the same pairs; stage 1 also probes its content codes for the "
        "content labels. Hours are training time (stage 2 continues stage 1's clock).\n\n"
        "| stage | step | hours | pairs | transfer LPIPS | copy class | content labels from "
        "content codes |\n|---|---|---|---|---|---|---|\n" + "".join(lines)
    )


def _files_section(bundle: Path, info: dict[str, Any]) -> str:
    rows = "".join(
        f"| `{name}` | {(bundle / name).stat().st_size:,} | `{digest}` |\n"
        for name, digest in info.get("files", {}).items()
    )
    return (
        f"## Files\n\n`model/` is a lordfx bundle ({info.get('dtype')}); `lordfx.load` checks "
        "every sha256 below (also in `model/config.json`) before using a file.\n\n"
        f"| file | bytes | sha256 |\n|---|---|---|\n{rows}"
    )


def readme(names: PackageNames, domain: Domain) -> str:
    """The distribution's README.md (its PyPI/long description)."""
    return (
        f"# {names.distribution}\n\n"
        f"A lordfx plugin: the `{domain.name}` domain ({domain.description}).\n\n"
        f"    pip install .                 # registers the domain with lordfx\n"
        f"    lordfx plugins                # lists {domain.name}\n"
        f"    lordfx transfer CLASS.png CONTENT.png --domain {domain.name}\n"
        f"    pip uninstall {names.distribution}\n\n"
        f"What the model was trained on, its licence and how well it works: "
        f"[{names.module}/MODEL_CARD.md]({names.module}/MODEL_CARD.md).\n"
    )
