"""Measure taiwanese_expressions' face framing with the expressions plugin's own detector.

The database's photos are 128×128 head-and-shoulders shots on a light background. Each
photo goes through ``ExpressionPreprocessor.detect`` (the path ``lordfx expression`` uses:
small images are searched upscaled with an edge-replicated margin), and for the largest face

    scale = image side / box width
    dx, dy = (image centre − box centre) / box width, / box height

are summarised (median, IQR, 5th/95th percentiles) with the roll and the box width in
pixels. ``lordfx_expressions.preprocess.POSED_FRAMING`` is chosen from these numbers.
Takes ~4 min on one core (0.2 s a photo).

    nice -n 19 .venv/bin/python scripts/measure_posed_framing.py \\
        /work/shared/data/taiwanese_expressions
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from lordfx_expressions.preprocess import ExpressionPreprocessor
from PIL import Image


def summary(values: np.ndarray) -> dict[str, float]:
    p5, q1, med, q3, p95 = np.percentile(values, [5, 25, 50, 75, 95])
    return {k: round(float(v), 4) for k, v in zip(("p5", "q1", "median", "q3", "p95"),
                                                  (p5, q1, med, q3, p95), strict=True)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="taiwanese_expressions folder (with images/)")
    args = parser.parse_args()
    pre = ExpressionPreprocessor(image_size=64, channels=3)
    paths = sorted((args.root / "images").glob("*.jpg"))
    rows, missed = [], []
    for path in paths:
        with Image.open(path) as im:
            photo = im.convert("RGB")
        faces = pre.detect(photo)
        if not faces:
            missed.append(path.name)
            continue
        b, side = faces[0], photo.width
        rows.append(
            (
                side / b.w,
                (side / 2 - (b.x + b.w / 2)) / b.w,
                (side / 2 - (b.y + b.h / 2)) / b.h,
                b.w,
                b.roll_degrees,
            )
        )
    arr = np.asarray(rows)
    names = ("scale", "dx", "dy", "box_width_px", "roll_degrees")
    result = {"photos": len(paths), "detected": len(rows), "missed": missed}
    result |= {name: summary(arr[:, i]) for i, name in enumerate(names)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
