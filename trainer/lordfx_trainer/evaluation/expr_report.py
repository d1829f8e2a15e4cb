"""``lordfx eval-expressions RUN_DIR``: the RaFD-style protocol on an expressions run, written
to RUN_DIR/eval_expressions.json with grids in RUN_DIR/eval/.

Two kinds of run:

- ``fer2013``: the judge trains on FER2013's whole de-duplicated train split; "real test" and
  the translated images are FER2013's test split (people never seen, one photo each).
- ``taiwanese`` (posed, performers held out with ``heldout_group = "performer"``): the judge
  trains only on real photos of the run's training performers; "real test" and the
  translated images are all photos of the held-out performers, and ``identity`` says how
  often dlib still calls each translation the input's person (:mod:`.expr_identity`).

eval_expressions.json:
    format, format_version, run, args   "lordfx-eval-expressions", 1, the run, the settings
    bundle                      path, class_names, files (sha256 of each weight file, from the
                                bundle's config.json)
    classifier                  settings, data, best_epoch, val_accuracy,
                                val_balanced_accuracy, num_train, num_val, history, cached, file
    real_test                   the classifier on real held-out test images: n, accuracy,
                                balanced_accuracy, per_class {accuracy, n}, chance {uniform,
                                majority, majority_class}
    translation                 sample (n, per_class), strength_1 / strength_0.5 →
                                {n_images, mean_accuracy, mean_accuracy_other_sources, chance,
                                per_target, by_source}, copy_input, reconstruction
    leakage                     heldout_test / stage1_train → {logistic, mlp} (y←c probes:
                                {accuracy, chance (majority), num_train, num_test}),
                                chance_uniform | {skipped}; heldout_test_class_code: the
                                same probes on E_y(x), a positive control (not leakage)
    identity                    taiwanese runs: dlib descriptor output↔input at strength 1,
                                share under 0.6 per target and overall, with same-person and
                                other-person references on the real photos | {skipped}
    yale                        see :mod:`.expr_yale` | {skipped}
    photos                      edits of --photo files (the plugin's preprocessing and
                                render) as a contact sheet figure | {skipped}
    figures, elapsed_s
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from lordfx.errors import LordfxError, UsageError
from lordfx_trainer.data.fer2013 import EXPRESSIONS
from lordfx_trainer.data.taiwanese import posed_only
from lordfx_trainer.evaluation.expr_classifier import (
    ClassifierSettings,
    accuracy_report,
    load_or_train,
    predict,
    to_float,
)
from lordfx_trainer.evaluation.expressions import (
    Classify,
    copy_input_report,
    encode,
    grid_rows,
    name_labels,
    stratified_sample,
    translation_grid,
    translation_predictions,
    translation_report,
)
from lordfx_trainer.evaluation.leakage import PROBES, ProbeSettings, probe, settings_dict
from lordfx_trainer.evaluation.report import write_json_atomic
from lordfx_trainer.evaluation.runs import read_config

log = logging.getLogger("lordfx.eval")
FORMAT, FORMAT_VERSION = "lordfx-eval-expressions", 1
RESULT_FILE = "eval_expressions.json"
FIGURE_DIR = "eval"
MakePreprocessor = Callable[[int], Any]  # image_size → object with .to_model(PIL)
DATASETS = ("fer2013", "taiwanese")
#: Judge epochs when not given: FER2013 has ~27k training images, the posed runs ~1,000.
DEFAULT_CLASSIFIER_EPOCHS = {"fer2013": 8, "taiwanese": 25}
#: The judge sees at most this resolution (average-pooled down from the run's size).
CLASSIFIER_MAX_SIZE = 32


@dataclass(frozen=True)
class ExpressionEvalSettings:
    """What ``lordfx eval-expressions`` computes; recorded as ``args`` in the JSON."""

    classifier_epochs: int | None = None  # None: DEFAULT_CLASSIFIER_EPOCHS of the dataset
    classifier_width: int = 16
    max_test: int = 1000
    seed: int = 0
    yale: str | None = None
    photos: tuple[str, ...] = ()
    # Posed runs: also train the judge on FER2013's train split (grey, tiled to RGB at the
    # run's size), at most judge_fer_per_class images per expression (seeded).
    judge_fer: str | None = None
    judge_fer_per_class: int = 500
    # "auto": on posed runs the linear probe on VGG16 features + dlib's 68 landmarks
    # ("vgg-landmarks", expr_probe; "vgg-probe", VGG16 only, when dlib is not installed), on
    # FER2013 runs the small CNN (VGG features would cost ~40 min on FER2013's 28k training
    # images on 2 cores)
    judge: str = "auto"
    identity: bool = True
    strengths: tuple[float, ...] = (1.0, 0.5)
    batch_size: int = 256
    grid_rows: int = 8
    probes: ProbeSettings = field(default_factory=ProbeSettings)

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "strengths": list(self.strengths),
            "photos": list(self.photos),
            "probes": settings_dict(self.probes),
        }


@dataclass
class _Inputs:
    """The run, its bundle and the data the protocol reads (train split loaded lazily)."""

    run_dir: Path
    cfg: Any
    extra: dict[str, Any]
    bundle: Any
    root: Path
    target_labels: list[int]
    _train: Any = None
    _test: Any = None

    @property
    def posed(self) -> bool:
        return self.cfg.dataset == "taiwanese"

    def train(self) -> Any:
        """The judge's training images at the run's size (read once): FER2013's whole
        de-duplicated train split, or the run's own training performers."""
        from lordfx_trainer.data import load_dataset

        if self._train is None:
            cfg = self.cfg
            if self.posed:
                self._load_posed()
            else:
                self._train = load_dataset("fer2013", self.root, cfg.image_size, cfg.channels)
        return self._train

    def test(self) -> Any:
        """The held-out real images: FER2013's test split (de-duplicated against train), or
        every photo of the run's held-out performers."""
        from lordfx_trainer.data import load_dataset

        if self._test is None:
            cfg = self.cfg
            if self.posed:
                self._load_posed()
            else:
                self._test = load_dataset(
                    "fer2013", self.root, cfg.image_size, cfg.channels, split="test"
                )
        return self._test

    def _load_posed(self) -> None:
        from lordfx_trainer.train import check_split, prepare_data

        train, heldout = prepare_data(self.cfg, self.root)
        check_split(self.run_dir, self.extra, train, heldout)
        self._train, self._test = train, heldout


def open_inputs(run_dir: Path) -> _Inputs:
    """Check the run is a finished FER2013 run whose bundle and data can be read."""
    from lordfx.bundle import load_bundle

    run_dir = Path(run_dir)
    cfg, extra = read_config(run_dir)
    if cfg.dataset not in DATASETS:
        raise LordfxError(
            f"{run_dir}: eval-expressions needs a {' or '.join(DATASETS)} run, not {cfg.dataset!r}"
        )
    if cfg.dataset == "taiwanese" and not cfg.num_heldout_groups:
        raise LordfxError(f"{run_dir}: a taiwanese run needs held-out performers to evaluate")
    if not (run_dir / "bundle" / "config.json").is_file():
        raise LordfxError(f"{run_dir}: no bundle/ yet (stage 2 has not finished)")
    bundle = load_bundle(run_dir / "bundle")
    unknown = [n for n in bundle.class_names if n not in EXPRESSIONS]
    if bundle.class_codes is None or unknown or not bundle.class_names:
        raise LordfxError(
            f"{run_dir / 'bundle'}: needs learned class codes of FER2013 expressions "
            f"({', '.join(EXPRESSIONS)}); unknown classes: {unknown}"
        )
    root = Path(extra.get("data_path") or "")
    if cfg.dataset == "fer2013" and (not extra.get("data_path") or not (root / "test").is_dir()):
        raise LordfxError(f"{run_dir}: the run's FER2013 data ({root}) has no test/ folder")
    if not extra.get("data_path") or not root.is_dir():
        raise LordfxError(f"{run_dir}: the run's data folder ({root}) is missing")
    labels = [EXPRESSIONS.index(n) for n in bundle.class_names]
    return _Inputs(run_dir, cfg, extra, bundle, root, labels)


def evaluate_expressions(
    run_dir: Path,
    s: ExpressionEvalSettings = ExpressionEvalSettings(),
    make_preprocessor: MakePreprocessor | None = None,
) -> dict[str, Any]:
    """Run the protocol (module doc) and write RUN_DIR/eval_expressions.json; returns it.

    ``make_preprocessor(image_size)`` crops Yale faces (default: the expressions plugin's).
    """
    start = time.time()
    inp = open_inputs(run_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        result = _evaluate(inp, s, make_preprocessor)
    result["elapsed_s"] = round(time.time() - start, 1)
    write_json_atomic(result, inp.run_dir / RESULT_FILE)
    return result


def _evaluate(
    inp: _Inputs, s: ExpressionEvalSettings, make_preprocessor: MakePreprocessor | None
) -> dict[str, Any]:
    bundle = inp.bundle
    test = inp.test()
    classifier, record = _classifier(inp, s)

    def classify(x: torch.Tensor) -> np.ndarray:
        return predict(classifier, x, s.batch_size)

    test_x = to_float(test.images)
    test_pred = classify(test_x)
    result: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "run": str(inp.run_dir),
        "args": s.to_dict(),
        "bundle": {
            "path": str(inp.run_dir / "bundle"),
            "class_names": bundle.class_names,
            "files": bundle.info.get("files", {}),
        },
        "classifier": record,
        "real_test": {**accuracy_report(test_pred, test.class_ids, EXPRESSIONS), "data": test.meta},
    }
    sample = stratified_sample(test.class_ids, s.max_test, s.seed)
    result["translation"] = _translation(
        inp, s, test_x[sample], test.class_ids[sample], test_pred[sample], classify
    )
    result["identity"] = _identity(inp, s, test, sample)
    result["leakage"] = _leakage(inp, s, test_x, test.class_ids)
    figures = {}
    rows = sample[grid_rows(test.class_ids[sample], s.grid_rows, s.seed)]
    path = inp.run_dir / FIGURE_DIR / "expressions_grid.png"
    figures["test_grid"] = str(
        translation_grid(bundle.model, bundle.class_codes, test_x[rows], path).relative_to(
            inp.run_dir
        )
    )
    figures["columns"] = ["input", *bundle.class_names]
    result["yale"] = _yale(inp, s, classify, make_preprocessor)
    if "figure" in result["yale"]:
        figures["yale_grid"] = str(Path(result["yale"].pop("figure")).relative_to(inp.run_dir))
    result["photos"] = _photos(inp, s, make_preprocessor)
    if "figure" in result["photos"]:
        figures["photo_sheet"] = str(Path(result["photos"].pop("figure")).relative_to(inp.run_dir))
    result["figures"] = figures
    return result


def judge_kind(judge: str, posed: bool) -> str:
    """ExpressionEvalSettings.judge → a ClassifierSettings.kind ("auto": see there)."""
    from lordfx_trainer.evaluation.expr_probe import PROBE_KINDS
    from lordfx_trainer.evaluation.face_metrics import dlib_available

    if judge == "auto":
        if not posed:
            return "cnn"
        if dlib_available():
            return "vgg-landmarks"
        log.warning("dlib is not installed: the judge is the VGG16 probe without landmarks")
        return "vgg-probe"
    if judge not in ("cnn", *PROBE_KINDS):
        raise UsageError(f"--judge must be auto, cnn, {', '.join(PROBE_KINDS)}, not {judge!r}")
    return judge


def _classifier(inp: _Inputs, s: ExpressionEvalSettings) -> tuple[torch.nn.Module, dict[str, Any]]:
    cfg = inp.cfg
    epochs = s.classifier_epochs or DEFAULT_CLASSIFIER_EPOCHS[cfg.dataset]
    kind = judge_kind(s.judge, inp.posed)
    settings = ClassifierSettings(
        cfg.image_size,
        cfg.channels,
        num_classes=len(EXPRESSIONS),
        width=s.classifier_width,
        epochs=epochs,
        seed=s.seed,
        downsample=max(1, cfg.image_size // CLASSIFIER_MAX_SIZE) if kind == "cnn" else 1,
        kind=kind,
    )
    data_id: dict[str, Any] = {
        "dataset": "fer2013",
        "split": "train",
        "dedup": True,
        "root": str(inp.root.resolve()),
    }
    if inp.posed:  # the run's training performers only (never the held-out ones)
        split = (inp.extra.get("heldout") or {}).get("split") or {}
        data_id = {
            "dataset": "taiwanese",
            "part": "training performers of the run (their posed photos only)",
            "heldout_groups": split.get("heldout_groups"),
            "split_seed": cfg.split_seed,
            "root": str(inp.root.resolve()),
        }
        if s.judge_fer:
            data_id["fer2013"] = {
                "root": str(Path(s.judge_fer).resolve()),
                "split": "train",
                "dedup": True,
                "per_class": s.judge_fer_per_class,
                "colour": "grey tiled to RGB" if cfg.channels == 3 else "grey",
            }

    def load() -> tuple[np.ndarray, np.ndarray]:
        from lordfx_trainer.data import load_dataset
        from lordfx_trainer.train import cap_images_per_class

        train = inp.train()
        if inp.posed:  # FER2013 photos the run trained on are not the judge's (posed_only)
            train = posed_only(train)
        if not (inp.posed and s.judge_fer):
            return train.images, train.class_ids
        fer = load_dataset("fer2013", Path(s.judge_fer), cfg.image_size, cfg.channels)
        fer = cap_images_per_class(fer, s.judge_fer_per_class, seed=s.seed)
        images = np.concatenate([train.images, fer.images])
        return images, np.concatenate([train.class_ids, fer.class_ids])

    return load_or_train(inp.run_dir / FIGURE_DIR, settings, data_id, load)


def _translation(
    inp: _Inputs,
    s: ExpressionEvalSettings,
    x: torch.Tensor,
    labels: np.ndarray,
    input_pred: np.ndarray,
    classify: Classify,
) -> dict[str, Any]:
    model, codes = inp.bundle.model, inp.bundle.class_codes
    names, targets = inp.bundle.class_names, inp.target_labels
    out: dict[str, Any] = {
        "sample": {
            "n": len(labels),
            "seed": s.seed,
            "per_class": {
                n: int(c)
                for n, c in zip(
                    EXPRESSIONS, np.bincount(labels, minlength=len(EXPRESSIONS)), strict=True
                )
            },
        },
        "target_code": "the bundle's learned stage-1 class code of t (strength 1); "
        "E_y(x) + strength·(code − E_y(x)) otherwise",
    }
    for strength in s.strengths:
        preds = translation_predictions(model, codes, x, classify, strength, s.batch_size)
        report = translation_report(preds, targets, names, labels, len(EXPRESSIONS))
        out[f"strength_{strength:g}"] = name_labels(report, EXPRESSIONS)
    out["copy_input"] = copy_input_report(input_pred, targets, names, labels)
    with torch.no_grad():
        recon = torch.cat([model(b).float() for b in x.split(s.batch_size)]) if len(x) else x
    out["reconstruction"] = accuracy_report(classify(recon), labels, EXPRESSIONS)
    return out


def _leakage(
    inp: _Inputs, s: ExpressionEvalSettings, test_x: torch.Tensor, test_labels: np.ndarray
) -> dict[str, Any]:
    """y←c (paper Table 2): the expression read from content codes, vs chance."""
    content, own_class = encode(inp.bundle.model, test_x, s.batch_size)
    chance = 1.0 / len(EXPRESSIONS)
    where = "held-out performers' photos" if inp.posed else "FER2013 test images"
    out: dict[str, Any] = {
        "heldout_test": {
            "source": f"stage-2 content encoder E_c on {where}",
            **{m: probe(content, test_labels, m, s.probes) for m in PROBES},
            "chance_uniform": chance,
        },
        "heldout_test_class_code": {  # not leakage: the same probes where the class should be
            "source": f"stage-2 class encoder E_y on {where} (positive control)",
            **{m: probe(own_class, test_labels, m, s.probes) for m in PROBES},
            "chance_uniform": chance,
        },
    }
    out["stage1_train"] = _stage1_leakage(inp, s, chance)
    return out


def _stage1_leakage(inp: _Inputs, s: ExpressionEvalSettings, chance: float) -> dict[str, Any]:
    from lordfx_trainer.train import cap_images_per_class

    cfg, latent = inp.cfg, inp.run_dir / "latent.safetensors"
    key = "content_embedding.weight"
    state = load_file(str(latent)) if latent.is_file() else {}
    if key not in state or cfg.num_heldout_classes or cfg.max_classes:
        return {"skipped": f"needs {latent.name} with latent content codes of all 7 classes"}
    train = inp.train()  # the run's training images, re-drawn as train.prepare_data does
    if cfg.max_images_per_class and not inp.posed:  # posed: train() is prepare_data's
        train = cap_images_per_class(train, cfg.max_images_per_class, seed=cfg.split_seed)
    codes = state[key].float()
    if len(codes) != train.num_images:
        note = f"{len(codes)} latent codes but {train.num_images} re-created training images"
        return {"skipped": note}
    return {
        "source": "stage-1 latent content codes (latent.safetensors)",
        **{m: probe(codes, train.class_ids, m, s.probes) for m in PROBES},
        "chance_uniform": chance,
    }


def _yale(
    inp: _Inputs,
    s: ExpressionEvalSettings,
    classify: Classify,
    make_preprocessor: MakePreprocessor | None,
) -> dict[str, Any]:
    from lordfx_trainer.evaluation import expr_yale

    if s.yale is None:
        return {"skipped": "no --yale folder given"}
    if not Path(s.yale).is_dir():
        return {"skipped": f"{s.yale}: no such folder"}
    bundle = inp.bundle
    arch = bundle.model.cfg
    try:
        if make_preprocessor is not None:
            pre = make_preprocessor(arch.image_size)
        else:
            pre = expr_yale.default_preprocessor(arch.image_size, channels=arch.channels)
    except ImportError as exc:
        return {"skipped": f"{expr_yale.PREPROCESSOR} is not available ({exc})"}
    grid = inp.run_dir / FIGURE_DIR / "expressions_yale_grid.png"
    targets = inp.target_labels
    return expr_yale.evaluate_yale(
        Path(s.yale), bundle.model, bundle.class_codes, targets, classify, EXPRESSIONS, pre, grid
    )


def _identity(
    inp: _Inputs, s: ExpressionEvalSettings, test: Any, sample: np.ndarray
) -> dict[str, Any]:
    """dlib identity kept at strength 1 for every target (posed runs; :mod:`.expr_identity`)."""
    from lordfx_trainer.evaluation.expressions import translated_outputs
    from lordfx_trainer.grids import to_uint8

    if not inp.posed:
        return {"skipped": "FER2013 has one photo per person (no same-person reference)"}
    if not s.identity:
        return {"skipped": "--no-identity"}
    try:
        from lordfx_trainer.evaluation.expr_identity import identity_report

        images = test.images[sample]
        outputs = {
            inp.bundle.class_names[t]: to_uint8(out)
            for t, out in translated_outputs(
                inp.bundle.model, inp.bundle.class_codes, to_float(images), 1.0, s.batch_size
            )
        }
        person = test.content_labels[sample, test.content_names.index("performer")]
        return identity_report(images, outputs, person, s.seed)
    except LordfxError as exc:  # dlib is an optional extra
        return {"skipped": str(exc)}


def _photos(
    inp: _Inputs, s: ExpressionEvalSettings, make_preprocessor: MakePreprocessor | None
) -> dict[str, Any]:
    """Every target on each --photo file through the plugin's path (contact sheet)."""
    from lordfx_trainer.evaluation.expr_photos import photo_sheet

    if not s.photos:
        return {"skipped": "no --photo given"}
    path = inp.run_dir / FIGURE_DIR / "expressions_photos.png"
    return photo_sheet(inp.run_dir / "bundle", [Path(p) for p in s.photos], path, make_preprocessor)
