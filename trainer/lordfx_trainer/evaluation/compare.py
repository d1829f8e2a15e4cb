"""``lordfx eval --compare RUN...``: one markdown table over several runs (paper Table 3
layout), built from their eval.json files (computed when missing or made differently).

Leakage columns use the MLP probe on the stage-1 training codes, which every variant has
(w/o stage 2 included); the held-out probes stay in each run's eval.json.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lordfx.errors import LordfxError
from lordfx_trainer.evaluation.report import EVAL_FILE, FORMAT, EvalSettings, evaluate_run
from lordfx_trainer.evaluation.runs import read_config

log = logging.getLogger("lordfx.eval")
#: Settings that do not change the numbers, so an eval.json made with others is reused.
_COSMETIC = ("batch_size", "device", "grid_size")
BASELINE_NAMES = {
    "copy_class": "baseline: copy class image",
    "copy_content": "baseline: copy content image",
    "mean_image": "baseline: mean image",
}
COLUMNS = ("run", "ablation", "LPIPS alex ↓", "L1 ↓", "SSIM ↑", "y←c (chance)", "y→c (chance)")


#: Test-time optimisation settings: they change only the numbers of runs without stage 2.
_TTO = ("tto_steps", "tto_lr")


def _comparable(settings: dict[str, Any], uses_tto: bool = True) -> dict[str, Any]:
    ignored = _COSMETIC if uses_tto else _COSMETIC + _TTO
    return {k: v for k, v in settings.items() if k not in ignored}


def _uses_tto(run_dir: Path) -> bool:
    """True for a "w/o stage 2" run (held-out codes come from test-time optimisation)."""
    try:
        cfg, _ = read_config(run_dir)
    except LordfxError:
        return True  # not readable as a run: compare everything (evaluate_run says why)
    return cfg.amortized_epochs == 0


def load_or_evaluate(
    run_dir: Path, settings: EvalSettings, recompute: bool = False
) -> dict[str, Any]:
    """The run's eval.json if it exists and was made with the same ``settings``, else a
    fresh evaluation (which rewrites it)."""
    path = Path(run_dir) / EVAL_FILE
    if path.is_file() and not recompute:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
        tto = _uses_tto(Path(run_dir))
        same = _comparable(data.get("settings", {}), tto) == _comparable(settings.to_dict(), tto)
        if data.get("format") == FORMAT and same:
            log.info("%s: reusing %s", run_dir, path)
            return data
        log.info("%s: %s was made with other settings; recomputing", run_dir, path)
    return evaluate_run(Path(run_dir), settings)


def _metric(transfer: dict[str, Any], method: str, key: str) -> dict[str, float] | None:
    return transfer.get("metrics", {}).get(method, {}).get(key)


def _leak(result: dict[str, Any], direction: str) -> dict[str, float] | None:
    part = result["leakage"].get("stage1_train", {})
    values = part.get(direction, {})
    if direction == "content_from_class":
        values = values.get("joint", {})
    mlp = values.get("mlp")
    return None if mlp is None else {"accuracy": mlp["accuracy"], "chance": mlp["chance"]}


def table_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run, then each distinct set of baselines once (same data and pairs)."""
    rows, seen = [], set()
    for r in results:
        transfer = r.get("transfer", {})
        rows.append(
            {
                "run": Path(r["run"]).name,
                "ablation": r["ablation"],
                **{k: _metric(transfer, "model", k) for k in ("lpips_alex", "l1", "ssim")},
                "y_from_c": _leak(r, "class_from_content"),
                "c_from_y": _leak(r, "content_from_class"),
                "eval_json": str(Path(r["run"]) / EVAL_FILE),
            }
        )
    for r in results:
        transfer = r.get("transfer", {})
        names = tuple(r.get("heldout", {}).get("class_names", ()))
        key = (r["dataset"], names, r["settings"]["pairs"], r["settings"]["seed"])
        if "metrics" not in transfer or key in seen:
            continue
        seen.add(key)
        for method, label in BASELINE_NAMES.items():
            metrics = {k: _metric(transfer, method, k) for k in ("lpips_alex", "l1", "ssim")}
            rows.append({"run": label, "ablation": f"({r['dataset']})", **metrics})
    return rows


def _mean_std(value: dict[str, float] | None) -> str:
    return "—" if value is None else f"{value['mean']:.3f} ± {value['std']:.3f}"


def _accuracy(value: dict[str, float] | None) -> str:
    return "—" if value is None else f"{value['accuracy']:.3f} ({value['chance']:.3f})"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a GitHub markdown table (mean ± std; accuracy (chance))."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [
            row["run"],
            row["ablation"],
            _mean_std(row.get("lpips_alex")),
            _mean_std(row.get("l1")),
            _mean_std(row.get("ssim")),
            _accuracy(row.get("y_from_c")),
            _accuracy(row.get("c_from_y")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compare_runs(
    run_dirs: list[Path], settings: EvalSettings, recompute: bool = False
) -> tuple[dict[str, Any], str]:
    """(the comparison as JSON-able dict, its markdown table) over ``run_dirs``."""
    results = [load_or_evaluate(Path(d), settings, recompute) for d in run_dirs]
    rows = table_rows(results)
    data = {
        "format": "lordfx-eval-compare",
        "format_version": 1,
        "settings": settings.to_dict(),
        "leakage_columns": "MLP probe on the stage-1 training codes; y→c on the joint label",
        "rows": rows,
    }
    return data, markdown_table(rows)
