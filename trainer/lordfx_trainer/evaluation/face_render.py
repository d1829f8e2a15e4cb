"""``lordfx eval-faces PATH --render warp,generate``: the faces model's swap-pose as a user
gets it, on held-out identities, for each render mode (issue 17).

Held-out crops are re-read at their own resolution (``NATIVE``, shared/data/celeba_faces'
128² crops are the photo's face region in the plugin's framing) and the model sees them at
its size, resized exactly as in training. Per (FACE, REF) pair the output is what
``lordfx swap-pose`` pastes into a photo, here into FACE's crop:

- ``generate``: G(E_c(REF), E_y(FACE)) upsampled into the crop through the feathered ellipse
  with the colour match (:func:`lordfx_faces.paste.paste_back`);
- ``warp``: the motion r → g with r = G(E_c(FACE), E_y(FACE)), g as above, applied to FACE's
  crop at its resolution plus the low-frequency residual (:func:`lordfx.render.render_warp`),
  pasted through the same ellipse (:func:`lordfx_faces.paste.paste_delta`).

All images are measured at ``NATIVE`` (dlib upsamples them to 150 px with one fixed face
box): identity kept (descriptor output↔FACE < 0.6), output↔REF, pose taken (68-landmark NME
output↔REF beside FACE↔REF), sharpness (Laplacian variance in the face box, output / FACE),
the paper's CelebA protocol LPIPS at the model's size, and the time per edit.

PATH is a run directory or a bundle (e.g. the shipped ``lordfx_faces/model``): the
held-out identities are re-drawn from its recorded training config and checked against the
recorded names.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from lordfx.errors import LordfxError, UsageError
from lordfx.render import RENDER_MODES, SWAP_SETTINGS, render_warp
from lordfx_trainer.evaluation.face_metrics import (
    SAME_PERSON,
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

log = logging.getLogger("lordfx.eval")
FORMAT, FORMAT_VERSION = "lordfx-eval-faces-render", 1
EVAL_RENDER_FILE = "eval_faces_render.json"
NATIVE = 128  # side of shared/data/celeba_faces and lfw_faces crops


@dataclass(frozen=True)
class RenderEvalSettings:
    """What the render-mode evaluation computes; recorded in its JSON."""

    modes: tuple[str, ...] = RENDER_MODES
    pairs: int = 500
    seed: int = 0
    lpips: bool = True
    native: int = NATIVE  # side the held-out crops are read (and outputs measured) at
    box: FaceBox = field(default_factory=FaceBox)

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in RENDER_MODES]
        if bad or not self.modes:
            raise UsageError(f"--render {','.join(self.modes)}: valid: {', '.join(RENDER_MODES)}")


@dataclass
class HeldOut:
    """The model, and the held-out crops at NATIVE and at the model's size."""

    model: Any  # lordfx.nets.AmortizedModel (eval mode)
    native: np.ndarray  # (N, native, native, 3) uint8
    small: np.ndarray  # (N, S, S, 3) uint8, S = the model's image_size
    class_ids: np.ndarray  # (N,)
    class_names: tuple[str, ...]
    source: dict


def load_heldout(path: Path, data: Path | None, native: int = NATIVE) -> HeldOut:
    """Model and held-out identities of a run directory or a bundle (module doc)."""
    from lordfx.bundle import load_bundle
    from lordfx_trainer.data.images import to_canonical
    from lordfx_trainer.evaluation.runs import bundle_training, read_config
    from lordfx_trainer.train import check_heldout_names, prepare_data

    path = Path(path)
    if (path / "latent.safetensors").is_file():  # a run directory
        cfg, extra = read_config(path)
        bundle_dir = path / "bundle"
        data = data or (Path(extra["data_path"]) if extra.get("data_path") else None)
        recorded = ((extra.get("heldout") or {}).get("split") or {}).get("heldout_class_names")
    else:
        bundle_dir = path
        cfg, data, recorded = bundle_training(path, data)
    if cfg.num_heldout_classes < 2:
        raise LordfxError(f"{path}: the render evaluation needs >= 2 held-out identities")
    _, held = prepare_data(replace(cfg, image_size=native, max_classes=0), data)
    check_heldout_names(path, recorded, held)
    size = cfg.image_size
    small = np.stack([to_canonical(im, size, cfg.channels) for im in held.images])
    model = load_bundle(bundle_dir, device="cpu").model.eval()
    source = {"path": str(path), "data": str(data), "image_size": size, "native": native}
    return HeldOut(model, held.images, small, held.class_ids, held.class_names, source)


class Renderer:
    """swap-pose of crop pairs in one render mode, as the faces plugin pastes it."""

    def __init__(self, held: HeldOut) -> None:
        from lordfx_faces.paste import CELEBA_ELLIPSE, DEFAULT_FEATHER, crop_mask

        self.held, self.size = held, held.small.shape[1]
        x = torch.from_numpy(held.small.transpose(0, 3, 1, 2).copy()).float().div_(255)
        with torch.inference_mode():
            self.class_codes = torch.cat([held.model.encode_class(b) for b in x.split(64)])
            self.content_codes = torch.cat([held.model.encode_content(b) for b in x.split(64)])
        grid = np.arange(self.size, dtype=np.float32)
        self.mask = crop_mask(
            grid[None, :], grid[:, None], self.size, DEFAULT_FEATHER, CELEBA_ELLIPSE
        )
        k = held.native.shape[1] / self.size  # model crop pixel u → native (u + ½)·k − ½
        self.m_inv = np.array([[k, 0, 0.5 * k - 0.5], [0, k, 0.5 * k - 0.5]])

    @torch.inference_mode()
    def swap(self, face: int, ref: int, mode: str) -> np.ndarray:
        """FACE's identity with REF's pose, pasted into FACE's crop.

        Shape: → (native, native, 3) uint8.
        """
        from lordfx_faces.paste import paste_back, paste_delta

        model, cls = self.held.model, self.class_codes[face : face + 1]
        g = model.decode(self.content_codes[ref : ref + 1], cls)[0]
        crop = self.held.native[face]
        if mode == "generate":
            gen = g.float().clamp(0, 1).permute(1, 2, 0).numpy()
            return paste_back(crop, gen, self.m_inv, reference_crop=self.held.small[face])
        r = model.decode(self.content_codes[face : face + 1], cls)[0]
        edited = render_warp(crop, r, g, mask=self.mask, settings=SWAP_SETTINGS)
        delta = (edited.astype(np.float32) - crop.astype(np.float32)) / 255.0
        return paste_delta(crop, delta, np.eye(2, 3))

    def many(self, faces: np.ndarray, refs: np.ndarray, mode: str) -> tuple[np.ndarray, float]:
        """Shape: (P,), (P,) → ((P, native, native, 3) uint8, seconds per edit)."""
        start = time.perf_counter()
        out = np.stack([self.swap(int(f), int(r), mode) for f, r in zip(faces, refs, strict=True)])
        return out, (time.perf_counter() - start) / max(len(faces), 1)


def evaluate_render_modes(
    path: Path,
    data: Path | None = None,
    settings: RenderEvalSettings = RenderEvalSettings(),
    command: list | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate swap-pose in each render mode; writes ``eval_faces_render.json`` into
    ``out_dir`` (default: PATH for a run directory; required for a bundle)."""
    from lordfx_trainer.evaluation.report import write_json_atomic

    start = time.time()
    faces = DlibFaces(settings.box)  # fail fast when the optional extra is missing
    held = load_heldout(path, data, settings.native)
    dest = out_dir or (path if (Path(path) / "latent.safetensors").is_file() else None)
    if dest is None:
        raise UsageError("evaluating a bundle: give --out FOLDER (the bundle is not written)")
    renderer = Renderer(held)
    ids = held.class_ids
    log.info("dlib on %d held-out crops at %d px", len(ids), settings.native)
    lm_real, d_real = faces.analyse(held.native)
    face, ref = sample_face_pairs(ids, settings.pairs, settings.seed)
    other = other_of_same_class(ids, face, settings.seed + 1)
    result: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "command": command,
        "settings": {**asdict(settings), "modes": list(settings.modes)},
        "source": held.source,
        "face_models": faces.info(),
        "heldout": {"num_classes": len(held.class_names), "num_images": len(ids)},
        "reference": _reference(d_real, lm_real, face, ref, other, settings.native),
        "modes": {},
    }
    lpips = _lpips() if settings.lpips else None
    for mode in settings.modes:
        log.info("%s: %d pairs", mode, len(face))
        outputs, seconds = renderer.many(face, ref, mode)
        lm_out, d_out = faces.analyse(outputs)
        result["modes"][mode] = {
            "identity_output_vs_face": _distances(descriptor_distance(d_out, d_real[face])),
            "identity_output_vs_ref": _distances(descriptor_distance(d_out, d_real[ref])),
            "pose_output_vs_ref": stats(landmark_distance(lm_out, lm_real[ref])),
            "pose_output_vs_face": stats(landmark_distance(lm_out, lm_real[face])),
            "sharpness_output_over_face": stats(
                _sharpness(outputs, settings.box) / _sharpness(held.native[face], settings.box)
            ),
            "seconds_per_edit": round(seconds, 4),
            "protocol": _protocol(renderer, lm_real, mode, lpips, settings.seed),
        }
    result["elapsed_s"] = round(time.time() - start, 2)
    write_json_atomic(result, Path(dest) / EVAL_RENDER_FILE)
    return result


def _distances(d: np.ndarray) -> dict:
    return {"distance": stats(d), "same_person": share_under(d)}


def _reference(d_real, lm_real, face, ref, other, native) -> dict:  # noqa: ANN001
    has = other >= 0
    return {
        "note": f"real crops at {native} px: FACE↔REF (no edit), FACE↔FACE' (another photo of "
        f"FACE's person); same_person = descriptor distance < {SAME_PERSON}",
        "num_pairs": len(face),
        "identity_face_vs_ref": _distances(descriptor_distance(d_real[face], d_real[ref])),
        "identity_face_vs_face_other": _distances(
            descriptor_distance(d_real[face[has]], d_real[other[has]])
        ),
        "pose_face_vs_ref": stats(landmark_distance(lm_real[face], lm_real[ref])),
    }


def _sharpness(images: np.ndarray, box: FaceBox) -> np.ndarray:
    """Laplacian variance of the luma inside the face box. Shape: (N, H, W, 3) → (N,)."""
    x0, y0, x1, y1 = box.pixels(images.shape[1])
    grey = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)[y0:y1, x0:x1] for im in images]
    return np.array([cv2.Laplacian(g.astype(np.float64), cv2.CV_64F).var() for g in grey])


def _protocol(renderer: Renderer, lm_real: np.ndarray, mode: str, lpips: Any, seed: int) -> dict:
    """The paper's CelebA protocol (as in eval-faces): per held-out image b with another
    image a of its person, swap-pose(FACE = a, REF = the other-identity image whose 68
    landmarks are nearest b's), scored against b at the model's size."""
    from lordfx_trainer.data.images import to_canonical

    held = renderer.held
    ids = held.class_ids
    b = np.flatnonzero(np.bincount(ids)[ids] >= 2)
    a = other_of_same_class(ids, b, seed + 2)
    content, _ = nearest_by_landmarks(lm_real[b], lm_real, ids[None, :] != ids[b][:, None])
    outputs, _ = renderer.many(a, content, mode)
    size = renderer.size
    small = np.stack([to_canonical(o, size, 3) for o in outputs])
    target, copy_a = held.small[b], held.small[a]
    result = {
        "num": len(b),
        "l1_output_vs_b": stats(np.abs(small / 255.0 - target / 255.0).mean((1, 2, 3))),
    }
    if lpips is not None:
        result["lpips_alex_output_vs_b"] = stats(_lpips_values(lpips, small, target))
        result["lpips_alex_a_vs_b"] = stats(_lpips_values(lpips, copy_a, target))
    return result


def _lpips() -> Any:
    from lordfx_trainer.lpips_metric import make_lpips

    return make_lpips("alex")


def _lpips_values(model: Any, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    from lordfx_trainer.lpips_metric import lpips_distance

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).float().div_(255)

    with torch.inference_mode():
        return np.concatenate(
            [
                lpips_distance(model, p, q).numpy()
                for p, q in zip(t(pred).split(128), t(target).split(128), strict=True)
            ]
        )


def summary_markdown(result: dict[str, Any]) -> str:
    """One row per render mode, the real-pair references beside them."""

    def ms(x: dict) -> str:
        return "n/a" if x["mean"] is None else f"{x['mean']:.3f}"

    def kept(x: dict) -> str:
        return f"{100 * (x['same_person']['share'] or 0):.0f} % ({ms(x['distance'])})"

    ref = result["reference"]
    lines = [
        f"### swap-pose by render mode: {result['source']['path']} "
        f"({result['heldout']['num_classes']} held-out identities, {ref['num_pairs']} pairs)",
        "",
        "| render | identity kept output↔FACE < 0.6 | output↔REF < 0.6 | pose NME output↔REF "
        "| sharpness output/FACE | protocol LPIPS (output, b) | s per edit |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, m in result["modes"].items():
        lp = m["protocol"].get("lpips_alex_output_vs_b")
        lines.append(
            f"| {mode} | {kept(m['identity_output_vs_face'])} | {kept(m['identity_output_vs_ref'])} "
            f"| {ms(m['pose_output_vs_ref'])} | {ms(m['sharpness_output_over_face'])} "
            f"| {ms(lp) if lp else 'n/a'} | {m['seconds_per_edit']:.3f} |"
        )
    lines.append(
        f"| real photos | FACE↔FACE' {kept(ref['identity_face_vs_face_other'])} | FACE↔REF "
        f"{kept(ref['identity_face_vs_ref'])} | FACE↔REF {ms(ref['pose_face_vs_ref'])} | 1 | | |"
    )
    return "\n".join(lines)
