"""``lordfx bench-edit``: how long one edit of a photo takes, split into its parts, and the
throughput of a folder batch — the editing side of the speed issue.

One swap-pose edit of a photo (``lordfx.load(DOMAIN).swap_pose_file``, what the verb runs for
every photo of a batch; REF's content code is computed once per batch, so it is not part of
the per-photo time) is timed warm: the model is loaded and one edit has run in the same
process before the ``repeats`` timed ones. Parts, each the median over the timed edits:

- ``read``: decode the file (``lordfx.imageio.read_image``);
- ``detect``: the domain preprocessor's face detection (``pre.detect``), where it has one;
- ``align``: the rest of ``pre.to_model`` (crop, alignment, resize to the model's size);
- ``encode``: E_y(photo) and, for ``render="warp"``, E_c(photo);
- ``generate``: G for the edit (and the reconstruction, for warp);
- ``render``: paste-back (``generate``) or motion + remap + residual + paste (``warp``).

``total`` times the real call, ``swap_pose_file``, separately (the parts are re-run with
timers around them, so they add up to about, not exactly, the total).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _median_ms(samples: list[float]) -> float:
    return 1000 * statistics.median(samples)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def edit_parts(editor: Any, photo: Path, content_code: torch.Tensor, render: str) -> dict:
    """One edit of ``photo``, split into the parts of the module docstring (seconds)."""
    from lordfx.imageio import read_image
    from lordfx.render import render_photo

    pre = editor._pre_for(None)
    parts: dict[str, float] = {}
    image, parts["read"] = _timed(lambda: read_image(photo))
    detect = getattr(pre, "detect", None)
    parts["detect"] = 0.0
    if detect is not None:
        _, parts["detect"] = _timed(lambda: detect(image))
    (x, context), to_model = _timed(lambda: pre.to_model(image))
    parts["align"] = max(0.0, to_model - parts["detect"])
    x = x[None].to(editor.device)
    model = editor.model
    with torch.inference_mode():

        def encode() -> tuple[torch.Tensor, torch.Tensor | None]:
            own = model.encode_content(x) if render == "warp" else None
            return model.encode_class(x), own

        (class_code, own_content), parts["encode"] = _timed(encode)

        def generate() -> tuple[torch.Tensor, torch.Tensor | None]:
            edit = model.decode(content_code, class_code)[0]
            recon = model.decode(own_content, class_code)[0] if render == "warp" else None
            return edit, recon

        (edit, recon), parts["generate"] = _timed(generate)
        if render == "warp":
            _, parts["render"] = _timed(lambda: render_photo(pre, context, image, recon, edit))
        else:
            _, parts["render"] = _timed(lambda: pre.from_model(edit, context, image))
    return parts


def bench_edit(
    domain: str, photo: Path, ref: Path, render: str = "warp", repeats: int = 5
) -> dict[str, Any]:
    """Warm per-photo timings (ms, medians) of a swap-pose edit; see the module docstring."""
    import lordfx
    from lordfx.imageio import read_image

    t0 = time.perf_counter()
    editor = lordfx.load(domain)
    load_s = time.perf_counter() - t0
    code = editor.encode_content_file(ref)
    editor.swap_pose_file(photo, code, render=render)  # warm-up: one edit in this process
    totals, parts = [], []
    for _ in range(repeats):
        _, seconds = _timed(lambda: editor.swap_pose_file(photo, code, render=render))
        totals.append(seconds)
        parts.append(edit_parts(editor, photo, code, render))
    size = read_image(photo).size
    return {
        "domain": domain,
        "render": render,
        "photo": str(photo),
        "photo_size": list(size),
        "megapixels": size[0] * size[1] / 1e6,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "precision": editor.precision.to_dict(),
        "load_ms": 1000 * load_s,
        "total_ms": _median_ms(totals),
        "parts_ms": {k: _median_ms([p[k] for p in parts]) for k in parts[0]},
    }


def format_edit_report(r: dict[str, Any]) -> str:
    w, h = r["photo_size"]
    parts = ", ".join(f"{k} {v:.0f}" for k, v in r["parts_ms"].items())
    return (
        f"{r['domain']} swap-pose, render {r['render']}, {w}×{h} ({r['megapixels']:.2f} MP), "
        f"{r['threads']} threads, {r['precision']['dtype']}: warm {r['total_ms']:.0f} ms per "
        f"photo (median of {r['repeats']}); parts (ms): {parts}; model load {r['load_ms']:.0f} ms"
    )
