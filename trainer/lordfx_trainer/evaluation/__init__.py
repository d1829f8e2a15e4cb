"""The paper's evaluation protocol (Gabbay & Hoshen, ICLR 2020, Tables 1–3).

- :mod:`.transfer`: content-transfer error on held-out classes against ground truth, with
  the trivial copy/mean baselines on the same pairs (Table 1 protocol).
- :mod:`.leakage`: class-from-content and content-from-class probes (Table 2).
- :mod:`.report`: one run → RUN_DIR/eval.json + figures; :mod:`.compare`: several runs →
  one table (Table 3 ablations).
"""

from __future__ import annotations

from lordfx_trainer.evaluation.compare import compare_runs, load_or_evaluate, markdown_table
from lordfx_trainer.evaluation.leakage import ProbeSettings, leakage, probe
from lordfx_trainer.evaluation.report import EVAL_FILE, EvalSettings, evaluate_run, summary_lines
from lordfx_trainer.evaluation.transfer import (
    Pairs,
    baselines,
    pair_metrics,
    sample_pairs,
    score_transfers,
    summarize,
)

__all__ = [
    "EVAL_FILE",
    "EvalSettings",
    "Pairs",
    "ProbeSettings",
    "baselines",
    "compare_runs",
    "evaluate_run",
    "leakage",
    "load_or_evaluate",
    "markdown_table",
    "pair_metrics",
    "probe",
    "sample_pairs",
    "score_transfers",
    "summarize",
    "summary_lines",
]
