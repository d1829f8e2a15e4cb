"""Out-of-domain check on the Yale Face Database: real crops and their translations.

Yale (Belhumeur et al. 1997) has 15 people × 11 conditions as ``subjectNN.<condition>`` GIFs
(no extension, 320×243 grey). Four conditions are FER2013 expressions: happy, normal
(= neutral), sad and surprised (= surprise); the rest (sleepy, wink, glasses, lighting) are
translated but carry no label. Faces are cropped by the expressions plugin's preprocessor,
the same framing the editing CLI uses; files where it finds no face are counted, not scored.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lordfx.errors import InputError
from lordfx.imageio import read_image
from lordfx.nets import AmortizedModel
from lordfx_trainer.evaluation.expr_classifier import accuracy_report
from lordfx_trainer.evaluation.expressions import (
    Classify,
    grid_rows,
    name_labels,
    translation_grid,
    translation_predictions,
    translation_report,
)

log = logging.getLogger("lordfx.eval")
#: Yale condition → FER2013 expression.
YALE_EXPRESSIONS = {"happy": "happy", "normal": "neutral", "sad": "sad", "surprised": "surprise"}
_NAME = re.compile(r"^subject(\d+)\.([a-z]+)$")
PREPROCESSOR = "lordfx_expressions.preprocess.make_preprocessor"


def default_preprocessor(image_size: int, channels: int | None = None) -> Any:
    """The expressions plugin's face cropper (``.to_model(PIL) -> ((C, S, S), ctx)``) at the
    framing of a ``channels`` model (None: the plugin's shipped bundle's)."""
    from lordfx_expressions.preprocess import make_preprocessor

    return make_preprocessor(image_size, channels=channels)


def yale_files(folder: Path) -> list[tuple[Path, str]]:
    """(path, condition) of every ``subjectNN.<condition>`` file, sorted by name."""
    out = []
    for path in sorted(Path(folder).iterdir()):
        match = _NAME.match(path.name)
        if match and path.is_file():
            out.append((path, match.group(2)))
    return out


def crop_faces(
    files: list[tuple[Path, str]], pre: Any, channels: int
) -> tuple[torch.Tensor, list[str], dict[str, str]]:
    """Crops of the files where a face was found, their conditions, and the failures.

    Shape: → ((M, channels, S, S) in [0, 1], M conditions, {file name: reason}).
    """
    crops, conditions, failed = [], [], {}
    for path, condition in files:
        try:
            x, _ = pre.to_model(read_image(path))
        except InputError as exc:
            failed[path.name] = exc.problem
            continue
        if x.shape[0] != channels:  # a grey model fed an RGB crop, or the reverse
            x = x.mean(0, keepdim=True) if channels == 1 else x.expand(3, -1, -1)
        crops.append(x.float())
        conditions.append(condition)
    images = torch.stack(crops) if crops else torch.zeros(0)
    return images, conditions, failed


def evaluate_yale(
    folder: Path,
    model: AmortizedModel,
    class_codes: torch.Tensor,
    target_labels: Sequence[int],
    classify: Classify,
    label_names: Sequence[str],
    pre: Any,
    grid_path: Path | None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Classifier accuracy on the labelled real crops and translation accuracy of all crops.

    ``pre`` crops a face: ``pre.to_model(PIL image) -> ((C, S, S) in [0, 1], context)``,
    raising :class:`InputError` when it finds none. ``label_names`` are the classifier's
    classes (FER2013 order); ``target_labels[t]`` is the
    classifier id of the model's class t. Returns a JSON-able dict (``skipped`` if no crop).
    """
    cfg = model.cfg
    files = yale_files(folder)
    images, conditions, failed = crop_faces(files, pre, cfg.channels)
    by_cond: dict[str, int] = {}
    for name in failed:
        cond = _NAME.match(name).group(2)
        by_cond[cond] = by_cond.get(cond, 0) + 1
    detection = {
        "num_files": len(files),
        "num_cropped": len(conditions),
        "num_failed": len(failed),
        "failed_by_condition": by_cond,
        "failed_files": failed,
    }
    out: dict[str, Any] = {"folder": str(folder), "conditions": YALE_EXPRESSIONS}
    out["detection"] = detection
    if not conditions:
        return {**out, "skipped": "no face was cropped"}
    labels = np.array(
        [
            label_names.index(YALE_EXPRESSIONS[c]) if c in YALE_EXPRESSIONS else -1
            for c in conditions
        ]
    )
    predicted = classify(images)
    known = labels >= 0
    out["real"] = accuracy_report(predicted[known], labels[known], label_names)
    out["predicted_by_condition"] = {
        cond: _counts(predicted[np.array(conditions) == cond], label_names)
        for cond in sorted(set(conditions))
    }
    names = [label_names[t] for t in target_labels]
    preds = translation_predictions(model, class_codes, images, classify, 1.0, batch_size)
    report = translation_report(preds, target_labels, names, labels, len(label_names))
    out["translation"] = name_labels(report, label_names)
    if grid_path is not None:
        pool = np.flatnonzero(known) if known.any() else np.arange(len(labels))
        rows = pool[grid_rows(labels[pool], 8, 0)]
        out["figure"] = str(translation_grid(model, class_codes, images[rows], grid_path))
    return out


def _counts(predicted: np.ndarray, names: Sequence[str]) -> dict[str, int]:
    counts = np.bincount(predicted, minlength=len(names))
    return {name: int(n) for name, n in zip(names, counts, strict=True) if n}
