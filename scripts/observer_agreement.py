"""How often taiwanese_expressions' observers agree with the posed label (issue 18's judge bar).

For every rated front photo present in images/, the emotion most observers chose
(``counterMax`` columns of image_info.csv; six emotions, neutral is not rated) is compared with
the emotion the performer posed (the file name's fifth character). Prints per-emotion and
overall agreement and the mean share of observers choosing the posed label.

    python scripts/observer_agreement.py ../shared/data/taiwanese_expressions
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

LETTERS = {
    "b": "happy",
    "c": "sad",
    "d": "angry",
    "e": "disgusted",
    "f": "fearful",
    "g": "surprised",
}
RATED = ["happy", "sad", "angry", "disgusted", "fearful", "surprised"]  # csv column order


def main(root: Path) -> None:
    present = {p.stem for p in (root / "images").iterdir()}
    hits: dict[str, list[bool]] = defaultdict(list)
    share: dict[str, list[float]] = defaultdict(list)
    with open(root / "image_info.csv", newline="") as fh:
        for row in list(csv.reader(fh))[2:]:
            stem = Path(row[0]).stem if row and row[0] else ""
            if stem not in present or len(stem) < 5 or stem[4] not in LETTERS:
                continue
            try:
                props = [float(x) for x in row[6:12]]
            except ValueError:
                continue
            posed = LETTERS[stem[4]]
            hits[posed].append(RATED[props.index(max(props))] == posed)
            share[posed].append(props[RATED.index(posed)])
    total = sum(len(v) for v in hits.values())
    agree = sum(sum(v) for v in hits.values())
    for name in RATED:
        if hits[name]:
            print(
                f"{name:10s} n={len(hits[name]):4d} plurality agrees {sum(hits[name]) / len(hits[name]):.3f}"
                f"  mean share {sum(share[name]) / len(share[name]):.3f}"
            )
    mean_share = sum(sum(v) for v in share.values()) / total
    print(
        f"all        n={total:4d} plurality agrees {agree / total:.3f}  mean share {mean_share:.3f}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/observer_agreement.py TAIWANESE_EXPRESSIONS_DIR")
    main(Path(sys.argv[1]))
