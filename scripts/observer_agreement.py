"""How often taiwanese_expressions' observers agree with the posed label (issue 18's judge bar).

For every rated photo in images/ (named and rated as the trainer's ``taiwanese`` reader reads
them: :func:`parse_name`, :func:`read_ratings`; six emotions, neutral is not rated), the
emotion most observers chose is compared with the emotion the performer posed. Prints
per-emotion and overall agreement and the mean share of observers choosing the posed label.

    python scripts/observer_agreement.py ../shared/data/taiwanese_expressions
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from lordfx_trainer.data.taiwanese import LETTERS, RATED, RATINGS_FILE, parse_name, read_ratings


def main(root: Path) -> None:
    ratings = read_ratings(root / RATINGS_FILE)
    hits: dict[str, list[bool]] = defaultdict(list)
    share: dict[str, list[float]] = defaultdict(list)
    for path in sorted((root / "images").iterdir()):
        fields = parse_name(path)
        shares = ratings.get(path.stem)
        posed = LETTERS.get(fields["letter"]) if fields else None
        if shares is None or posed not in RATED:
            continue
        hits[posed].append(max(shares, key=shares.__getitem__) == posed)
        share[posed].append(shares[posed])
    total = sum(len(v) for v in hits.values())
    agree = sum(sum(v) for v in hits.values())
    for name in RATED:
        if hits[name]:
            print(
                f"{name:10s} n={len(hits[name]):4d} plurality agrees "
                f"{sum(hits[name]) / len(hits[name]):.3f}"
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
