"""``lordfx eval-faces-align``: does dlib's 5-point alignment beat the Haar eye cascade?
(issue 17, item 4).

Both aligners share the Haar face box and the celeba_faces framing; they differ only in where
the roll's eye line comes from (``lordfx_faces.detect.ALIGNERS``). On full photos (default:
shared/data/celeba_wild_samples), measured per aligner, and for ``none`` (no roll correction,
the training crops' own framing):

- roll found: share of faces whose eye line was found (else the roll is 0);
- residual roll: the eye-line angle that dlib's 68 landmarks read in the aligned crop
  (0 = the crop is upright; the 68-point model is independent of both aligners' eye finders);
- swap-pose, as ``lordfx swap-pose --align A`` writes it (warp render) on seeded pairs of
  photos of different people: identity kept (dlib descriptor output↔FACE < 0.6) and pose taken
  (68-landmark NME output↔REF beside FACE↔REF), each measured on the roll-0 recipe crop of
  the photo's Haar box, i.e. the same measurement crop for every aligner;
- milliseconds per detection (Haar box + eye finder).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from lordfx.errors import UsageError
from lordfx_trainer.evaluation.face_metrics import (
    DlibFaces,
    descriptor_distance,
    landmark_distance,
    share_under,
    stats,
)

log = logging.getLogger("lordfx.eval")
FORMAT, FORMAT_VERSION = "lordfx-eval-faces-align", 1
EVAL_ALIGN_FILE = "eval_faces_align.json"
NATIVE = 128  # measurement crops: the side of shared/data/celeba_faces crops
ARMS = ("none", "haar", "dlib5")


@dataclass(frozen=True)
class AlignEvalSettings:
    arms: tuple[str, ...] = ARMS
    pairs: int = 200
    seed: int = 0
    render: str = "warp"

    def __post_init__(self) -> None:
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms:
            raise UsageError(f"--align {','.join(self.arms)}: valid: {', '.join(ARMS)}")
        if self.pairs < 1:
            raise UsageError("--pairs must be >= 1")


def list_photos(folder: Path) -> list[Path]:
    """Every .jpg/.jpeg/.png under ``folder``, sorted."""
    found = sorted(
        p for p in Path(folder).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )
    if len(found) < 2:
        raise UsageError(f"{folder}: needs at least 2 photos, found {len(found)}")
    return found


def eye_roll(landmarks: np.ndarray) -> np.ndarray:
    """Angle in degrees of the line between the 68-point eye centres (points 36–41, 42–47),
    image-left eye to image-right eye, y down. Shape: (N, 68, 2) → (N,)."""
    left = landmarks[:, 36:42].mean(axis=1)
    right = landmarks[:, 42:48].mean(axis=1)
    d = right - left
    return np.degrees(np.arctan2(d[:, 1], d[:, 0]))


def evaluate_alignment(
    photos_dir: Path,
    settings: AlignEvalSettings = AlignEvalSettings(),
    out_dir: Path | None = None,
    command: list | None = None,
) -> dict[str, Any]:
    """The comparison described in the module doc; writes ``eval_faces_align.json``."""
    from lordfx_faces.align import align_face
    from lordfx_faces.detect import detect_faces

    import lordfx
    from lordfx.imageio import read_image
    from lordfx_trainer.evaluation.report import write_json_atomic

    start = time.time()
    dlib_faces = DlibFaces()
    if "dlib5" in settings.arms:
        from lordfx_faces import landmarks

        if not landmarks.available():
            raise UsageError(f"--align dlib5 needs {landmarks.EXTRA_HINT}")
    paths = list_photos(photos_dir)
    arrays, boxes, kept = [], [], []
    for path in paths:
        arr = np.asarray(read_image(path).convert("RGB"))
        found = detect_faces(arr, estimate_roll=False)
        if found:
            arrays.append(arr)
            boxes.append(found[0])
            kept.append(path)
    log.info("%d of %d photos have a face", len(kept), len(paths))
    # Measurement crops (roll 0, the recipe) of every photo: the same for every arm.
    real = np.stack([align_face(a, b, NATIVE)[0] for a, b in zip(arrays, boxes, strict=True)])
    lm_real, d_real = dlib_faces.analyse(real)
    rng = np.random.default_rng(settings.seed)
    face = rng.integers(len(kept), size=settings.pairs)
    ref = (face + 1 + rng.integers(len(kept) - 1, size=settings.pairs)) % len(kept)
    editor = lordfx.load("faces")
    base_pre = editor.pre
    result: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "command": command,
        "settings": {**asdict(settings), "arms": list(settings.arms)},
        "photos": {"folder": str(photos_dir), "num": len(paths), "with_face": len(kept)},
        "model": {"domain": "faces", "image_size": editor.model.cfg.image_size},
        "face_models": dlib_faces.info(),
        "reference": {
            "identity_face_vs_ref": _kept(descriptor_distance(d_real[face], d_real[ref])),
            "pose_face_vs_ref": stats(landmark_distance(lm_real[face], lm_real[ref])),
        },
        "arms": {},
    }
    for arm in settings.arms:
        pre = replace(base_pre, correct_roll=arm != "none", align="haar" if arm == "none" else arm)
        editor.pre = pre
        t0 = time.perf_counter()
        detected = [pre.detect(_pil(a)) for a in arrays]
        ms_detect = 1000 * (time.perf_counter() - t0) / len(arrays)
        chosen = [d[0] for d in detected]
        crops = np.stack([align_face(a, f, NATIVE)[0] for a, f in zip(arrays, chosen, strict=True)])
        lm_crop, _ = dlib_faces.analyse(crops, descriptors=False)
        residual = np.abs(eye_roll(lm_crop))
        # swap-pose on the pairs, as the CLI writes it
        outputs = []
        t0 = time.perf_counter()
        for f, r in zip(face, ref, strict=True):
            code = editor.encode_content_file(_pil(arrays[r]))
            out = editor.swap_content_file(_pil(arrays[f]), code, render=settings.render)
            outputs.append(align_face(np.asarray(out.convert("RGB")), boxes[f], NATIVE)[0])
        ms_edit = 1000 * (time.perf_counter() - t0) / len(face)
        lm_out, d_out = dlib_faces.analyse(np.stack(outputs))
        result["arms"][arm] = {
            "roll_found": float(np.mean([f.eyes is not None for f in chosen])),
            "roll_degrees": stats(np.array([f.roll_degrees for f in chosen])),
            "residual_roll_degrees": {
                **stats(residual),
                "median": float(np.median(residual)),
                "p90": float(np.percentile(residual, 90)),
            },
            "identity_output_vs_face": _kept(descriptor_distance(d_out, d_real[face])),
            "identity_output_vs_ref": _kept(descriptor_distance(d_out, d_real[ref])),
            "pose_output_vs_ref": stats(landmark_distance(lm_out, lm_real[ref])),
            "ms_per_detection": round(ms_detect, 2),
            "ms_per_edit": round(ms_edit, 1),
        }
        log.info("%s: %s", arm, result["arms"][arm])
    editor.pre = base_pre
    result["elapsed_s"] = round(time.time() - start, 1)
    dest = Path(out_dir or ".")
    dest.mkdir(parents=True, exist_ok=True)
    write_json_atomic(result, dest / EVAL_ALIGN_FILE)
    return result


def _pil(arr: np.ndarray) -> Any:
    from PIL import Image

    return Image.fromarray(arr)


def _kept(d: np.ndarray) -> dict:
    return {"distance": stats(d), "same_person": share_under(d)}


def summary_markdown(result: dict[str, Any]) -> str:
    """One row per arm, the real-pair reference below."""

    def pct(x: dict) -> str:
        share = x["same_person"]["share"]
        return "n/a" if share is None else f"{100 * share:.1f} %"

    ref = result["reference"]
    lines = [
        f"### alignment: {result['photos']['with_face']} photos with a face "
        f"({result['photos']['folder']}), {result['settings']['pairs']} swap-pose pairs, "
        f"render {result['settings']['render']}",
        "",
        "| roll from | roll found | residual roll ° (mean / median / p90) | identity kept "
        "output↔FACE < 0.6 | output↔REF < 0.6 | pose NME output↔REF | ms per detection |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, m in result["arms"].items():
        r = m["residual_roll_degrees"]
        lines.append(
            f"| {arm} | {100 * m['roll_found']:.0f} % | {r['mean']:.2f} / {r['median']:.2f} / "
            f"{r['p90']:.2f} | {pct(m['identity_output_vs_face'])} "
            f"| {pct(m['identity_output_vs_ref'])} | {m['pose_output_vs_ref']['mean']:.4f} "
            f"| {m['ms_per_detection']:.1f} |"
        )
    lines.append(
        f"| (real photos, no edit) | | | FACE↔REF {pct(ref['identity_face_vs_ref'])} | | "
        f"FACE↔REF {ref['pose_face_vs_ref']['mean']:.4f} | |"
    )
    return "\n".join(lines)
