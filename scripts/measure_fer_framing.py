"""Measure FER2013's face framing with the faces plugin's Haar detector.

FER2013 faces are tight 48×48 crops, too small and too tight for the Haar cascade (its
window must fit inside the image with some margin). Each image is upscaled ``--upscale``×
with bicubic interpolation and edge-replicated by half its side on every border, so the
detector sees the whole face at a photo-like size. For every detected face we record

    scale = image side / box width       (the crop side of a photo face, in box widths)
    dx, dy = (image centre − box centre) / box width  (crop centre offset, in box widths)

and print median and IQR. ``lordfx_expressions.preprocess`` cuts photo crops with these
medians, so edit-time crops frame faces as the training images do.

    nice -n 19 .venv/bin/python scripts/measure_fer_framing.py /work/shared/data/fer2013
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from lordfx_faces.detect import detect_boxes
from PIL import Image


def sample_paths(root: Path, per_class: int, seed: int) -> list[Path]:
    """``per_class`` seeded random training images from each expression folder."""
    rng = np.random.default_rng(seed)
    paths: list[Path] = []
    for folder in sorted(p for p in (root / "train").iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.jpg"))
        picks = rng.choice(len(files), size=min(per_class, len(files)), replace=False)
        paths += [files[i] for i in sorted(picks)]
    return paths


def measure(path: Path, upscale: int) -> tuple[float, float, float] | None:
    """(scale, dx, dy) of the largest Haar box in one FER image, or None if none found."""
    grey = np.asarray(Image.open(path).convert("L"))
    side = grey.shape[0] * upscale
    big = cv2.resize(grey, (side, side), interpolation=cv2.INTER_CUBIC)
    pad = side // 2
    padded = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    boxes = detect_boxes(padded)
    if not boxes:
        return None
    x, y, w, h = boxes[0]
    centre = pad + side / 2
    return side / w, (centre - (x + w / 2)) / w, (centre - (y + h / 2)) / h


def summary(values: np.ndarray) -> dict[str, float]:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return {"median": round(float(med), 4), "q1": round(float(q1), 4), "q3": round(float(q3), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="FER2013 folder with train/<expression>/")
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--upscale", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = sample_paths(args.root, args.per_class, args.seed)
    found = [m for m in (measure(p, args.upscale) for p in paths) if m is not None]
    arr = np.asarray(found)
    result = {
        "images": len(paths),
        "detected": len(found),
        "upscale": args.upscale,
        "seed": args.seed,
        "scale": summary(arr[:, 0]),
        "dx": summary(arr[:, 1]),
        "dy": summary(arr[:, 2]),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
