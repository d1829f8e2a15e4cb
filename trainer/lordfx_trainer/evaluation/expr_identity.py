"""Identity kept by an expression edit: dlib's face descriptor of the output vs the input.

dlib's ResNet descriptor (128-d) calls two faces the same person below a distance of 0.6
(:data:`~lordfx_trainer.evaluation.face_metrics.SAME_PERSON`). Inputs and outputs are the
model's crops, upsampled bicubically to 150 px. dlib's shape predictor (which aligns the
face for the descriptor) expects its own HOG detector's box, so the box is found on each
*real input* by dlib's detector and reused for all of that input's translations (same
framing, same place); inputs where the detector finds nothing use the mean box of the
others. The share of outputs under 0.6 is reported per target, beside two references:
the real input against another real photo of the same person (what "same person" scores
on this data) and against a photo of another person (what it would take to fail).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from lordfx_trainer.evaluation.face_metrics import (
    SAME_PERSON,
    UPSAMPLE,
    DlibFaces,
    descriptor_distance,
    share_under,
    stats,
)

log = logging.getLogger("lordfx.eval")


class PosedDescriptors:
    """dlib descriptors of (N, S, S, 3) uint8 face crops with per-input HOG boxes."""

    def __init__(self) -> None:
        self.faces = DlibFaces()
        self.detector = self.faces.dlib.get_frontal_face_detector()

    def boxes(self, images: np.ndarray) -> tuple[list[Any], dict[str, Any]]:
        """One dlib rectangle per image (its own detection or the mean), and a record."""
        dlib = self.faces.dlib
        found: list[tuple[int, int, int, int] | None] = []
        for up in self.faces.upsample(images):
            dets = self.detector(up, 0)
            if len(dets):
                d = max(dets, key=lambda r: r.area())
                found.append((d.left(), d.top(), d.right(), d.bottom()))
            else:
                found.append(None)
        hits = np.array([f for f in found if f is not None], dtype=np.float64).reshape(-1, 4)
        mean = tuple(int(round(v)) for v in hits.mean(0)) if len(hits) else None
        if mean is None:
            mean = self.faces.box.pixels(UPSAMPLE)
        rects = [dlib.rectangle(*(f if f is not None else mean)) for f in found]
        record = {
            "detected": int(len(hits)),
            "of": len(images),
            "mean_box_px": list(mean),
            "upsampled_to": UPSAMPLE,
        }
        return rects, record

    def describe(self, images: np.ndarray, rects: Sequence[Any]) -> np.ndarray:
        """Shape: (N, S, S, 3) uint8, N rectangles → (N, 128) float."""
        out = []
        for up, rect in zip(self.faces.upsample(images), rects, strict=True):
            shape = self.faces.predictor(up, rect)
            out.append(np.asarray(self.faces.encoder.compute_face_descriptor(up, shape)))
        return np.asarray(out, dtype=np.float64).reshape(-1, 128)


def identity_report(
    inputs: np.ndarray,
    outputs: dict[str, np.ndarray],
    person: np.ndarray,
    seed: int = 0,
) -> dict[str, Any]:
    """Identity kept for every target's outputs, with same/other-person references.

    Shape: inputs (N, S, S, 3) uint8 real crops; outputs {target: (N, S, S, 3) uint8};
    person (N,) int ids (held-out performers) → JSON-able dict.
    """
    if inputs.shape[-1] == 1:
        inputs = np.repeat(inputs, 3, axis=-1)
    d = PosedDescriptors()
    rects, box_record = d.boxes(inputs)
    real = d.describe(inputs, rects)
    per_target, all_dist = {}, []
    for name, out in outputs.items():
        if out.shape[-1] == 1:
            out = np.repeat(out, 3, axis=-1)
        dist = descriptor_distance(d.describe(out, rects), real)
        all_dist.append(dist)
        per_target[name] = {**share_under(dist), "distance": stats(dist)}
    dist = np.concatenate(all_dist) if all_dist else np.zeros(0)
    same, other = _reference_pairs(person, seed)
    ref_same = descriptor_distance(real[same[0]], real[same[1]]) if len(same[0]) else None
    ref_other = descriptor_distance(real[other[0]], real[other[1]])
    return {
        "threshold": SAME_PERSON,
        "overall": {**share_under(dist), "distance": stats(dist)} if len(dist) else None,
        "per_target": per_target,
        "reference_same_person_real": None
        if ref_same is None
        else {**share_under(ref_same), "n_pairs": len(ref_same)},
        "reference_other_person_real": {**share_under(ref_other), "n_pairs": len(ref_other)},
        "boxes": box_record,
        "dlib": d.faces.info(),
    }


def _reference_pairs(person: np.ndarray, seed: int) -> tuple:
    """(i, j) index pairs: each image with another image of the same person, and with an
    image of another person (seeded). Shape: → ((A,), (A,)), ((N,), (N,))."""
    rng = np.random.default_rng([seed, 13])
    n = len(person)
    same_i, same_j, other_j = [], [], []
    for i in range(n):
        mates = np.flatnonzero((person == person[i]) & (np.arange(n) != i))
        if len(mates):
            same_i.append(i)
            same_j.append(int(rng.choice(mates)))
        others = np.flatnonzero(person != person[i])
        other_j.append(int(rng.choice(others)) if len(others) else i)
    return (
        (np.array(same_i, dtype=np.int64), np.array(same_j, dtype=np.int64)),
        (np.arange(n, dtype=np.int64), np.array(other_j, dtype=np.int64)),
    )
