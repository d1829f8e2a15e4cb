"""The main job of `./dev demo`: train a small LORD model on the built-in synthetic shapes
(class = shape × colour, content = rotation × position; made by code, no data needed) through
both stages, then transfer between held-out classes the model never saw.

    python -m lordfx_trainer.demo [--out DIR]

Writes DIR/latent_grid_*.png (stage 1, training classes) and DIR/amortized_grid_*.png
(stage 2 encoders on the held-out classes) and prints their paths.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="run directory [runs/demo-TIME]")
    parser.add_argument("--preset", default="synthetic-tiny")
    args = parser.parse_args(argv)
    from lordfx.cli import _setup_logging
    from lordfx.errors import LordfxError
    from lordfx_trainer.train import resolve_config, start_run

    _setup_logging(False)
    out = args.out or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    t0 = time.perf_counter()
    try:
        bundle = start_run(resolve_config(args.preset, {}), out, None)
    except LordfxError as exc:
        print(f"lordfx: error: {exc}", file=sys.stderr)
        return 1
    logging.getLogger("lordfx").info(
        "trained in %.0f s; bundle: %s", time.perf_counter() - t0, bundle
    )
    for grid in sorted(out.glob("*_grid_*.png")):
        print(grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
