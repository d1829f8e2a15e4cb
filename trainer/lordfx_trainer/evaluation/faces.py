"""``lordfx eval-faces RUN_DIR``: identity, pose and the paper's CelebA protocol for a faces
run, on its held-out identities; RUN_DIR/eval_faces.json (atomic) + RUN_DIR/eval_faces/*.png.

The held-out images are re-read with the run's own config (image size, data path, exclude
list) and checked against the recorded split by :func:`.runs.load_run`. Codes come from the
stage-2 encoders (one image gives both its class and its content code).

eval_faces.json:
    format, format_version    "lordfx-eval-faces", 1
    run, dataset, command, settings, bundle (config sha256 of its files), face_models,
    face_box                  how faces were measured (fixed box, upsampling)
    heldout                   num_classes, num_images, class_names, num_images_in_pairs_of_2+
    leakage                   class_from_content (y←c) and, as reference, class_from_class
                              → {logistic, mlp} → {accuracy, chance, num_train, num_test, ...}
    reconstruction            lpips_alex, l1, identity (descriptor distance + share < 0.6)
    identity                  N (FACE, REF) pairs, output = G(E_c(REF), E_y(FACE)): descriptor
                              distances output↔FACE, ↔FACE' (another image of FACE's person),
                              ↔REF; reference FACE↔REF, FACE↔FACE', reconstruction↔FACE
    pose                      landmark NME (by REF's inter-ocular) output↔REF, FACE↔REF
                              (no-transfer baseline), output↔FACE
    protocol                  paper's CelebA protocol: LPIPS/L1/NME of output vs b, beside a↔b
                              and content↔b
    figures                   paths relative to the directory of eval_faces.json
    elapsed_s
Every number is {"mean", "std", "n"}; shares are {"share", "count", "n"}.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lordfx.errors import LordfxError
from lordfx_trainer.evaluation.face_metrics import (
    SAME_PERSON,
    UPSAMPLE,
    DlibFaces,
    FaceBox,
    descriptor_distance,
    landmark_distance,
    nearest_by_landmarks,
    other_of_same_class,
    sample_face_pairs,
    share_under,
    stats,
)
from lordfx_trainer.evaluation.leakage import PROBES, ProbeSettings, probe, settings_dict
from lordfx_trainer.evaluation.runs import Codes, LoadedRun, generate, load_run, to_float

log = logging.getLogger("lordfx.eval")
FORMAT, FORMAT_VERSION = "lordfx-eval-faces", 1
EVAL_FACES_FILE = "eval_faces.json"
FIGURE_DIR = "eval_faces"


@dataclass(frozen=True)
class FaceEvalSettings:
    """What ``lordfx eval-faces`` computes; recorded in eval_faces.json."""

    pairs: int = 500
    seed: int = 0
    lpips: bool = True
    device: str = "auto"
    batch_size: int = 256
    grid_size: int = 8
    tto_steps: int = 200  # runs without stage 2 only: codes by test-time optimisation
    box: FaceBox = field(default_factory=FaceBox)
    probes: ProbeSettings = field(default_factory=ProbeSettings)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "probes": settings_dict(self.probes)}


def evaluate_faces(
    run_dir: Path,
    settings: FaceEvalSettings = FaceEvalSettings(),
    command: list | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate a faces run on its held-out identities; writes eval_faces.json and
    eval_faces/*.png into ``out_dir`` (default: the run directory, which is only read)."""
    from lordfx_trainer.evaluation.report import write_json_atomic

    start = time.time()
    faces = DlibFaces(settings.box)  # fail fast when the optional extra is missing
    run = load_run(Path(run_dir), settings.device)
    if run.heldout is None or run.heldout.num_classes < 2:
        raise LordfxError(f"{run.dir}: eval-faces needs >= 2 held-out identities")
    result: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "run": str(run.dir),
        "dataset": run.cfg.dataset,
        "command": command,
        "settings": settings.to_dict(),
        "bundle": _bundle_info(run.dir / "bundle"),
        "face_models": faces.info(),
        "face_box": {
            **settings.box.to_dict(),
            "upsample_px": UPSAMPLE,
            "note": f"images (real and generated alike) are upsampled bicubically from "
            f"{run.cfg.image_size} to {UPSAMPLE} px; dlib's face detector is NOT used: one "
            "fixed face rectangle (centre cx, cy and side width, fractions of the crop) from "
            "the crops' framing is given to the shape predictor for every image",
        },
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        result.update(_evaluate(run, faces, settings, Path(out_dir or run.dir)))
    result["elapsed_s"] = round(time.time() - start, 2)
    write_json_atomic(result, Path(out_dir or run.dir) / EVAL_FACES_FILE)
    return result


def _bundle_info(path: Path) -> dict | None:
    from lordfx.bundle import read_bundle_config

    if not path.is_dir():
        return None
    info = read_bundle_config(path)
    return {"path": str(path), "files_sha256": info.get("files", {})}


def _evaluate(run: LoadedRun, faces: DlibFaces, s: FaceEvalSettings, dest: Path) -> dict[str, Any]:
    from lordfx_trainer.evaluation.report import EvalSettings, heldout_codes
    from lordfx_trainer.grids import to_uint8

    held, g, bs = run.heldout, run.generator, s.batch_size
    ids = held.class_ids
    images = to_float(held.images, run.device)
    tto = EvalSettings(seed=s.seed, batch_size=bs, tto_steps=s.tto_steps, device=s.device)
    codes = heldout_codes(run, images, tto)
    cls, con = codes.class_codes, codes.content_codes
    counts = np.bincount(ids)
    out: dict[str, Any] = {
        "codes": codes.source,
        "heldout": {
            "num_classes": held.num_classes,
            "num_images": held.num_images,
            "class_names": list(held.class_names),
            "num_images_with_another_of_same_identity": int(np.sum(counts[ids] >= 2)),
        },
    }
    probes = ProbeSettings(**{**asdict(s.probes), "seed": s.seed})
    out["leakage"] = {
        "class_from_content": {m: probe(con, ids, m, probes) for m in PROBES},
        "class_from_class": {m: probe(cls, ids, m, probes) for m in PROBES},
        "note": "class_from_content (y←c) should sit near chance; class_from_class (the "
        "class encoder's codes) is the reference of what is readable",
    }
    lpips = _lpips_model(run, s)
    log.info("dlib on %d held-out images and their reconstructions", len(ids))
    lm_real, d_real = faces.analyse(to_uint8(images))
    recon = generate(g, con, cls, bs)
    _, d_recon = faces.analyse(to_uint8(recon))
    rec_dist = descriptor_distance(d_recon, d_real)
    out["reconstruction"] = {
        **_image_scores(recon, images, lpips, bs),
        "identity_distance": stats(rec_dist),
        "identity_same_person": share_under(rec_dist),
    }

    face, ref = sample_face_pairs(ids, s.pairs, s.seed)
    other = other_of_same_class(ids, face, s.seed + 1)
    log.info("identity/pose on %d (FACE, REF) pairs", len(face))
    transfer = generate(g, con[_ix(ref)], cls[_ix(face)], bs)
    lm_out, d_out = faces.analyse(to_uint8(transfer))
    has_other = other >= 0
    dist = {
        "output_vs_face": descriptor_distance(d_out, d_real[face]),
        "output_vs_face_other": descriptor_distance(d_out[has_other], d_real[other[has_other]]),
        "output_vs_ref": descriptor_distance(d_out, d_real[ref]),
        "reference_face_vs_ref": descriptor_distance(d_real[face], d_real[ref]),
        "reference_face_vs_face_other": descriptor_distance(
            d_real[face[has_other]], d_real[other[has_other]]
        ),
        "reference_reconstruction_vs_face": rec_dist[face],
    }
    out["identity"] = {
        "num_pairs": len(face),
        "threshold": SAME_PERSON,
        "note": "FACE gives the class (identity) code, REF the content code; FACE' is a "
        "seeded other image of FACE's person. distance = dlib descriptor distance; "
        f"same_person = share below {SAME_PERSON}",
        **{k: {"distance": stats(v), "same_person": share_under(v)} for k, v in dist.items()},
    }
    out["pose"] = {
        "note": "68-landmark mean distance normalised by the second image's inter-ocular "
        "distance (outer eye corners 36-45); face_vs_ref is the no-transfer baseline",
        "output_vs_ref": stats(landmark_distance(lm_out, lm_real[ref])),
        "face_vs_ref": stats(landmark_distance(lm_real[face], lm_real[ref])),
        "output_vs_face": stats(landmark_distance(lm_out, lm_real[face])),
    }
    protocol, proto_idx = _protocol(run, faces, images, codes, lm_real, lpips, s)
    out["protocol"] = protocol
    from lordfx_trainer.evaluation import face_figures

    pairs, dlib_data = (face, ref, other), (faces, lm_real, lm_out)
    out["figures"] = face_figures.write(
        dest / FIGURE_DIR, g, images, ids, codes, pairs, proto_idx, dlib_data, s.grid_size, s.seed
    )
    return out


def _protocol(
    run: LoadedRun,
    faces: DlibFaces,
    images: torch.Tensor,
    codes: Codes,
    lm_real: np.ndarray,
    lpips: nn.Module | None,
    s: FaceEvalSettings,
) -> tuple[dict, tuple]:
    """Paper's CelebA protocol: for each held-out image b whose person P has another image a,
    output = G(content of the other-identity image with landmarks nearest to b's, class of a),
    scored against b; LPIPS(a, b) and LPIPS(content image, b) are the baselines."""
    from lordfx_trainer.grids import to_uint8

    ids = run.heldout.class_ids
    b = np.flatnonzero(np.bincount(ids)[ids] >= 2)
    a = other_of_same_class(ids, b, s.seed + 2)
    allowed = ids[None, :] != ids[b][:, None]
    content, match = nearest_by_landmarks(lm_real[b], lm_real, allowed)
    con, cls = codes.content_codes, codes.class_codes
    output = generate(run.generator, con[_ix(content)], cls[_ix(a)], s.batch_size)
    lm_out, _ = faces.analyse(to_uint8(output), descriptors=False)
    target = images[_ix(b)]
    result = {
        "num": len(b),
        "note": "per held-out image b with another image a of the same person: class from a, "
        "content from the image of another held-out identity whose 68 landmarks are nearest "
        "(NME) to b's; output scored against b",
        "output_vs_b": _image_scores(output, target, lpips, s.batch_size),
        "baseline_a_vs_b": _image_scores(images[_ix(a)], target, lpips, s.batch_size),
        "baseline_content_vs_b": _image_scores(images[_ix(content)], target, lpips, s.batch_size),
        "pose_output_vs_b": stats(landmark_distance(lm_out, lm_real[b])),
        "pose_a_vs_b": stats(landmark_distance(lm_real[a], lm_real[b])),
        "pose_content_vs_b": stats(match),
    }
    return result, (a, content, b)


def _ix(index: np.ndarray) -> torch.Tensor:
    """numpy indices as a CPU tensor (torch moves them to the indexed tensor's device)."""
    return torch.as_tensor(np.asarray(index, dtype=np.int64))


def _lpips_model(run: LoadedRun, s: FaceEvalSettings) -> nn.Module | None:
    from lordfx_trainer.evaluation.report import LPIPS_MIN_SIZE

    if not s.lpips or run.cfg.image_size < LPIPS_MIN_SIZE["alex"]:
        return None
    from lordfx_trainer.lpips_metric import make_lpips

    return make_lpips("alex").to(run.device)


def _image_scores(
    pred: torch.Tensor, target: torch.Tensor, lpips: nn.Module | None, batch_size: int
) -> dict:
    """{"lpips_alex" (if a model is given), "l1"} → stats over images. Shape: (N, C, H, W)."""
    from lordfx_trainer.lpips_metric import lpips_distance

    pred = pred.float().clamp(0, 1)
    out = {"l1": stats((pred - target).abs().flatten(1).mean(1).cpu().numpy())}
    if lpips is not None:
        values = [
            lpips_distance(lpips, p, t).cpu().numpy()
            for p, t in zip(pred.split(batch_size), target.split(batch_size), strict=True)
        ]
        out["lpips_alex"] = stats(np.concatenate(values))
    return out


def summary_markdown(result: dict[str, Any]) -> str:
    """A short markdown summary of one eval_faces.json."""

    def ms(x: dict) -> str:
        return "n/a" if x["mean"] is None else f"{x['mean']:.3f} ± {x['std']:.3f}"

    def dist(key: str) -> str:
        v = result["identity"][key]
        share = v["same_person"]["share"]
        return f"{ms(v['distance'])} ({100 * (share or 0):.0f} % < {SAME_PERSON}, n={v['distance']['n']})"

    def probe_line(key: str) -> str:
        p = result["leakage"][key]
        return f"{p['mlp']['accuracy']:.3f} / {p['logistic']['accuracy']:.3f}"

    held, rec, pose = result["heldout"], result["reconstruction"], result["pose"]
    pro = result["protocol"]
    metric = "lpips_alex" if "lpips_alex" in rec else "l1"
    chance = result["leakage"]["class_from_content"]["mlp"]["chance"]
    lines = [
        f"### eval-faces: {result['run']} ({held['num_classes']} held-out identities, "
        f"{held['num_images']} images)",
        "",
        "| metric | model | reference |",
        "|---|---|---|",
        f"| identity from content codes y←c (MLP / logistic) | {probe_line('class_from_content')} "
        f"| chance {chance:.3f}; from class codes {probe_line('class_from_class')} |",
        f"| reconstruction {metric} | {ms(rec[metric])} | |",
        f"| reconstruction↔image identity distance | {dist('reference_reconstruction_vs_face')} | |",
        f"| identity: output↔FACE | {dist('output_vs_face')} | FACE↔REF "
        f"{dist('reference_face_vs_ref')}; FACE↔FACE' {dist('reference_face_vs_face_other')} |",
        f"| identity: output↔FACE' | {dist('output_vs_face_other')} | |",
        f"| identity: output↔REF | {dist('output_vs_ref')} | |",
        f"| pose NME output↔REF | {ms(pose['output_vs_ref'])} | FACE↔REF (no transfer) "
        f"{ms(pose['face_vs_ref'])}; output↔FACE {ms(pose['output_vs_face'])} |",
        f"| CelebA protocol {metric}(output, b), n={pro['num']} | {ms(pro['output_vs_b'][metric])} "
        f"| {metric}(a, b) {ms(pro['baseline_a_vs_b'][metric])}; (content, b) "
        f"{ms(pro['baseline_content_vs_b'][metric])} |",
        f"| CelebA protocol pose NME output↔b | {ms(pro['pose_output_vs_b'])} | a↔b "
        f"{ms(pro['pose_a_vs_b'])}; content↔b {ms(pro['pose_content_vs_b'])} |",
    ]
    return "\n".join(lines)
