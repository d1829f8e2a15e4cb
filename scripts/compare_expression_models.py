"""Compare expression bundles end to end on held-out performers' photos, with one judge.

Each bundle edits the same full 128² photos of a posed run's held-out performers the way
``lordfx expression PHOTO --to T`` does (its own preprocessing: grey FER framing or colour
posed framing, strength 1; ``render="warp"``, or each mode ``--render`` lists). Every edited
photo is then cropped at the posed framing (the face box detected once on the original) and
classified by the run's cached eval-expressions judge (trained only on the training
performers' real photos; run ``lordfx eval-expressions RUN`` first). Prints, per bundle and
render, how often the edit is judged as its target (per target and mean, over sources other
than the target) beside the same judge on the unedited photos ("copy input").

``--identity`` (dlib, the eval-faces extra) adds whether the edit keeps the person: each
edited photo's dlib descriptor (the face cropped at the posed framing at 150²) is matched to
the held-out performers by its mean distance to each one's other photos (all held-out photos
of this split, the source photo left out); "identified" is the share matched to its own
performer (unedited photos: the same share for the sources themselves), beside the mean
descriptor distance edit ↔ source.

    nice -n 19 .venv/bin/python scripts/compare_expression_models.py runs/expressions64-cpu \\
        plugins/expressions/lordfx_expressions/model runs/expressions64-cpu/bundle --per-class 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from lordfx_expressions.preprocess import make_preprocessor
from lordfx_trainer.data.fer2013 import EXPRESSIONS
from lordfx_trainer.data.taiwanese import labelled_paths
from lordfx_trainer.evaluation import expr_report
from lordfx_trainer.evaluation.expr_classifier import predict, to_float
from lordfx_trainer.evaluation.runs import read_config

from lordfx.api import Editor
from lordfx.bundle import load_bundle
from lordfx.imageio import read_image
from lordfx.render import check_render


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="the posed run whose judge and split are used")
    parser.add_argument("bundles", type=Path, nargs="+", help="bundle directories to compare")
    parser.add_argument("--per-class", type=int, default=3, help="held-out photos per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--judge-fer", type=Path, default=None, help="the judge eval-expressions --judge-fer made"
    )
    parser.add_argument(
        "--judge", default="auto", help="the judge eval-expressions --judge made (auto)"
    )
    parser.add_argument(
        "--identity", action="store_true", help="also identify the edited person (dlib)"
    )
    parser.add_argument(
        "--render",
        default="warp",
        help="comma-separated render modes to compare (warp, generate); default warp",
    )
    args = parser.parse_args()
    renders = [check_render(r.strip()) for r in args.render.split(",") if r.strip()]
    torch.set_num_threads(1)
    cfg, extra = read_config(args.run)
    root = Path(extra["data_path"])
    inp = expr_report._Inputs(args.run, cfg, extra, None, root, list(range(len(EXPRESSIONS))))
    settings = expr_report.ExpressionEvalSettings(
        judge_fer=str(args.judge_fer) if args.judge_fer else None, judge=args.judge
    )
    judge, record = expr_report._classifier(inp, settings)
    held = inp.test()
    performers = held.meta["content_values"]["performer"]
    # the held-out photos' files, in the reader's order (sorted names, faces found)
    held_out = {performers[i] for i in np.unique(held.content_labels[:, 0])}
    names = [
        p.name
        for p in labelled_paths(root, cfg.data_min_agreement)
        if p.stem[:2] in held_out and p.name not in held.meta.get("no_face", [])
    ]
    assert len(names) == held.num_images, (len(names), held.num_images)
    rng = np.random.default_rng(args.seed)
    pick = np.sort(
        np.concatenate(
            [
                rng.choice(
                    np.flatnonzero(held.class_ids == k),
                    min(args.per_class, int((held.class_ids == k).sum())),
                    replace=False,
                )
                for k in range(len(EXPRESSIONS))
            ]
        )
    )
    posed = make_preprocessor(cfg.image_size, channels=3)
    photos = [read_image(root / "images" / names[i]) for i in pick]
    boxes = [posed.detect(p)[0] for p in photos]
    labels = held.class_ids[pick]

    def judge_crops(images: list) -> np.ndarray:
        crops = np.stack([posed.crop(im, b) for im, b in zip(images, boxes, strict=True)])
        return predict(judge, to_float(crops))

    copy = judge_crops(photos)
    ident = _Identify(root, names, pick, photos, boxes) if args.identity else None
    out = {
        "run": str(args.run),
        "judge": {"file": record["file"], "val_accuracy": record["val_accuracy"]},
        "photos": len(photos),
        "copy_input_accuracy": float(np.mean(copy == labels)),
        "bundles": {},
    }
    if ident is not None:
        out["identity_unedited"] = ident.score(photos)
    for bundle_dir in args.bundles:
        start = time.time()
        bundle = load_bundle(bundle_dir)
        arch = bundle.model.cfg
        editor = Editor(bundle, make_preprocessor(arch.image_size, channels=arch.channels))
        result: dict = {"architecture": {"image_size": arch.image_size, "channels": arch.channels}}
        for render in renders:
            per_target = {}
            for t, name in enumerate(EXPRESSIONS):
                edited = [editor.set_expression(p, name, render=render) for p in photos]
                hit = judge_crops(edited) == t
                other = labels != t
                per_target[name] = {
                    "accuracy_other_sources": float(hit[other].mean()),
                    "copy_input_other_sources": float((copy[other] == t).mean()),
                }
                if ident is not None:
                    per_target[name]["identity"] = ident.score(edited)
            mean = float(np.mean([v["accuracy_other_sources"] for v in per_target.values()]))
            result[render] = {"mean_accuracy_other_sources": mean, "per_target": per_target}
            if ident is not None:
                for key in ("identified", "mean_distance"):
                    values = [v["identity"][key] for v in per_target.values()]
                    result[render][f"mean_{key}"] = float(np.mean(values))
        result["seconds"] = round(time.time() - start, 1)
        out["bundles"][str(bundle_dir)] = result
    print(json.dumps(out, indent=2))


class _Identify:
    """Which held-out performer an edited photo shows (module doc, ``--identity``)."""

    def __init__(self, root: Path, names: list, pick: np.ndarray, photos: list, boxes: list):
        from lordfx_trainer.evaluation.expr_identity import PosedDescriptors

        self.crop = make_preprocessor(150, channels=3)
        self.d, self.boxes, self.pick = PosedDescriptors(), boxes, pick
        gallery = [read_image(root / "images" / n) for n in names]
        crops = np.stack([self.crop.crop(im, self.crop.detect(im)[0]) for im in gallery])
        rects, _ = self.d.boxes(crops)
        self.gallery = self.d.describe(crops, rects)
        self.performer = np.array([n[:2] for n in names])
        sources = self._crops(photos)
        self.rects, _ = self.d.boxes(sources)
        self.source = self.d.describe(sources, self.rects)

    def _crops(self, images: list) -> np.ndarray:
        return np.stack([self.crop.crop(im, b) for im, b in zip(images, self.boxes, strict=True)])

    def score(self, images: list) -> dict:
        desc = self.d.describe(self._crops(images), self.rects)
        people = sorted(set(self.performer))
        hits = []
        for i, v in enumerate(desc):
            dist = np.linalg.norm(self.gallery - v, axis=1)
            keep = np.arange(len(dist)) != self.pick[i]  # not the source photo itself
            means = [dist[keep & (self.performer == q)].mean() for q in people]
            hits.append(people[int(np.argmin(means))] == self.performer[self.pick[i]])
        return {
            "identified": float(np.mean(hits)),
            "mean_distance": float(np.linalg.norm(desc - self.source, axis=1).mean()),
        }


if __name__ == "__main__":
    main()
