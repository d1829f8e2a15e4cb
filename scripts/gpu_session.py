#!/usr/bin/env python3
"""Helper of ``scripts/gpu_run.sh`` (one GPU session: bench → train → eval → files in $OUT).

    gpu_session.py lordfx ARGS...           the lordfx CLI; loss plots are skipped (not the
                                            run) when matplotlib is missing on the machine
    gpu_session.py check --out OUT --data DIR [--set k=v ...]
                                            imports, device, weights, LPIPS, data file and its
                                            split; records the training set size
    gpu_session.py plan --out OUT --budget S [--epochs "E1 E2"]
                                            epochs per stage (equal, like the preset) that fit
                                            S seconds at the benched rate; prints "E1 E2"
    gpu_session.py salvage RUN --out OUT    a bundle from the last checkpoint of a run stopped
                                            in stage 2 (so it can still be evaluated)
    gpu_session.py collect RUN --out OUT [--final]
                                            results into OUT (at most 8 files, each < 16 MiB);
                                            --final adds eval.json, the fp16 bundle and the
                                            time the full preset would take

Everything it learns goes into OUT/summary.json (merged, written atomically).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

PART_BYTES = 16 * 2**20 - 2**16  # result files must stay under 16 MiB each
SUMMARY = "summary.json"


# --- summary.json -----------------------------------------------------------------------
def read_summary(out: Path) -> dict[str, Any]:
    path = out / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else {}


def update_summary(out: Path, key: str, value: Any) -> None:
    data = read_summary(out)
    data[key] = value
    write_atomic(out / SUMMARY, (json.dumps(data, indent=2, default=str) + "\n").encode())


def write_atomic(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def say(*parts: Any) -> None:
    print("gpu_session:", *parts, file=sys.stderr, flush=True)  # stdout: values only


def attempt(result: dict[str, Any], key: str, fn: Any) -> Any:
    """``fn()``, or its error recorded under ``result["errors"][key]``: collect always ends."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - report, keep collecting the rest
        result.setdefault("errors", {})[key] = f"{type(exc).__name__}: {exc}"
        say(f"collect: {key} failed: {type(exc).__name__}: {exc}")
        return None


def overrides(items: list[str]) -> dict[str, Any]:
    from lordfx_trainer.config import parse_set_option

    return parse_set_option(items)


# --- lordfx ---------------------------------------------------------------------------------
def cmd_lordfx(args: list[str]) -> int:
    try:
        import matplotlib  # noqa: F401
    except ImportError:  # the loss plot is a convenience: never let it stop a run
        import lordfx_trainer.grids as grids
        import lordfx_trainer.run as run

        def no_plot(metrics_path: Path, out: Path) -> None:
            return None

        grids.plot_losses = run.plot_losses = no_plot  # type: ignore[assignment]
        say("matplotlib missing: losses.png is not drawn (metrics.jsonl has the numbers)")
    from lordfx.cli import build_app

    sys.argv = ["lordfx", *args]
    build_app()()
    return 0


# --- check ----------------------------------------------------------------------------------
def cmd_check(a: argparse.Namespace) -> int:
    import importlib

    import torch

    t0 = time.perf_counter()
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cpus": os.cpu_count(),
    }
    cfg_over = overrides(a.set)
    device = str(cfg_over.get("device", "auto"))
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            say("FAIL: device cuda asked for but torch.cuda.is_available() is False")
            return 3
        props = torch.cuda.get_device_properties(0)
        info.update(device_name=props.name, device_memory_gb=round(props.total_memory / 1e9, 1))
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    missing = []
    for mod in ("numpy", "scipy", "PIL", "cv2", "kornia", "lpips", "rich", "typer", "pluggy",
                "safetensors", "lordfx", "lordfx_trainer"):  # fmt: skip
        try:
            importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001 - any import failure means "missing"
            missing.append(f"{mod} ({type(exc).__name__}: {exc})")
    try:
        importlib.import_module("matplotlib")
        info["matplotlib"] = True
    except ImportError:
        info["matplotlib"] = False  # optional: cmd_lordfx skips the loss plot
    if missing:
        say("FAIL: missing modules:", "; ".join(missing))
        return 3
    import lordfx_trainer

    info["lordfx_trainer_from"] = str(Path(lordfx_trainer.__file__).parent)
    from lordfx_trainer.lpips_metric import make_lpips
    from lordfx_trainer.weights import provision_check

    info["weights"] = {}
    for name in ("vgg16", "alexnet"):
        c = provision_check(name, download=False)  # type: ignore[arg-type]
        info["weights"][name] = {"path": str(c.path), "source": c.source, "sha256": c.sha256}
        say(f"{name} weights ok: {c.path} ({c.source})")
    make_lpips("alex")  # the eval's LPIPS builds (lpips package + backbone weights)

    from lordfx_trainer.data.npz import find_npz, read_info
    from lordfx_trainer.train import prepare_data, resolve_config

    t1 = time.perf_counter()
    path = find_npz(Path(a.data))
    export = read_info(path).get("export", {})
    cfg = resolve_config(a.preset, cfg_over)
    train, heldout = prepare_data(cfg, Path(a.data))
    recorded = export.get("split", {}).get("heldout_class_names")
    now = None if heldout is None else list(heldout.class_names)
    same_split = (
        export.get("config", {}).get("split_seed"),
        export.get("split", {}).get("num_heldout"),
    ) == (cfg.split_seed, cfg.num_heldout_classes)
    if same_split and recorded != now:
        say(f"FAIL: held-out classes {now} differ from those recorded at export {recorded}")
        return 3
    n_full = train.num_images  # the preset's training set, for the full-run estimate
    if cfg.max_classes or cfg.max_images_per_class:  # capped (a dry run): count it uncapped
        from dataclasses import replace

        uncapped = replace(cfg, max_classes=0, max_images_per_class=0)
        n_full = prepare_data(uncapped, Path(a.data))[0].num_images
    info["data"] = {
        "file": str(path),
        "bytes": path.stat().st_size,
        "load_s": round(time.perf_counter() - t1, 1),
        "n_train": train.num_images,
        "n_train_preset": n_full,
        "train_classes": train.num_classes,
        "heldout_classes": 0 if heldout is None else heldout.num_classes,
        "heldout_images": 0 if heldout is None else heldout.num_images,
        "heldout_as_exported": recorded == now if same_split else None,
        "images_sha256": export.get("images_sha256"),
    }
    info["check_s"] = round(time.perf_counter() - t0, 1)
    update_summary(Path(a.out), "check", info)
    say("check ok:", json.dumps({k: v for k, v in info.items() if k != "weights"}))
    return 0


# --- plan -----------------------------------------------------------------------------------
def cmd_plan(a: argparse.Namespace) -> int:
    out = Path(a.out)
    summary = read_summary(out)
    n = int(summary["check"]["data"]["n_train"])
    plan: dict[str, Any] = {"n_train": n, "budget_s": a.budget, "safety": a.safety}
    bench_file = out / "bench.json"
    bench = json.loads(bench_file.read_text()) if bench_file.is_file() else None
    if bench:
        r1, r2 = bench["latent_images_per_s"], bench["amortized_images_per_s"]
        plan.update(latent_images_per_s=r1, amortized_images_per_s=r2)
    if a.epochs:
        e1, e2 = (int(x) for x in a.epochs.split())
        plan["how"] = "given (GPU_EPOCHS)"
    elif bench:
        per_pair = n / r1 + n / r2  # seconds for one epoch of each stage
        e = int(a.safety * a.budget / per_pair)
        e1 = e2 = max(1, min(a.max_epochs, e))
        plan["how"] = (
            f"floor(safety * budget / (n/r1 + n/r2)) = {e}, clamped to [1, {a.max_epochs}]"
        )
    else:
        e1 = e2 = a.fallback
        plan["how"] = "fallback: no bench.json"
    plan.update(latent_epochs=e1, amortized_epochs=e2)
    if bench:
        plan["predicted_compute_s"] = round(e1 * n / r1 + e2 * n / r2, 1)
    update_summary(out, "plan", plan)
    say("plan:", json.dumps(plan))
    print(e1, e2)
    return 0


# --- salvage ----------------------------------------------------------------------------------
def cmd_salvage(a: argparse.Namespace) -> int:
    from lordfx_trainer.run import STATE_FILE, Run, read_run_config
    from lordfx_trainer.train import prepare_data

    run_dir, out = Path(a.run), Path(a.out)
    result: dict[str, Any] = {}
    if (run_dir / "bundle").is_dir():
        result["status"] = "complete run: nothing to salvage"
    elif not (run_dir / STATE_FILE).is_file():
        result["status"] = "no checkpoint: training stopped before its first one"
    else:
        cfg, extra = read_run_config(run_dir)
        data_path = Path(extra["data_path"]) if extra.get("data_path") else None
        train, heldout = prepare_data(cfg, data_path)
        run = Run(cfg, run_dir, train, heldout)
        run.load_checkpoint()
        st = run.state
        result.update(stage=st.stage, epoch=st.epoch, global_step=st.global_step)
        if st.stage == "amortized" and cfg.amortized_epochs > 0:
            run.write_bundle()
            result["status"] = f"bundle written from the stage-2 checkpoint at epoch {st.epoch}"
        else:
            if not (run_dir / "latent.safetensors").is_file():
                run.save_latent()  # keeps the partial stage 1 (no bundle: not evaluable)
            result["status"] = f"stopped in stage 1 at epoch {st.epoch}: no bundle"
    update_summary(out, "salvage", result)
    say("salvage:", json.dumps(result))
    return 0


# --- collect ----------------------------------------------------------------------------------
def _latest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: p.name) if paths else None


def _stage_rows(metrics: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {"latent": [], "amortized": []}
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows.setdefault(row["stage"], []).append(row)
    return rows


def collect_light(run: Path, out: Path) -> None:
    """run-files.tar (config, metrics, loss plot, last grids, eval figures) + swap_grid.png."""
    grids = {s: _latest(sorted(run.glob(f"{s}_grid_e*.png"))) for s in ("latent", "amortized")}
    members = [run / "config.json", run / "metrics.jsonl", run / "losses.png"]
    members += [g for g in grids.values() if g is not None]
    members += sorted((run / "eval").glob("*.png")) if (run / "eval").is_dir() else []
    members = [m for m in members if m.is_file()]
    if members:
        tmp = out / ".run-files.tar.tmp"
        with tarfile.open(tmp, "w") as tar:
            for m in members:
                tar.add(m, arcname=str(m.relative_to(run)))
        os.replace(tmp, out / "run-files.tar")
    eval_grid = run / "eval" / "swap_grid.png"
    best = eval_grid if eval_grid.is_file() else (grids["amortized"] or grids["latent"])
    if best is not None:
        copy_atomic(best, out / "swap_grid.png")


def bundle_parts(run: Path, out: Path) -> list[str]:
    """The bundle re-saved in fp16, as one tar, split into parts under 16 MiB."""
    from lordfx.bundle import load_bundle, save_bundle

    b = load_bundle(run / "bundle")
    half = save_bundle(run / "bundle-fp16", b.model, b.info, b.class_codes, half=True,
                       overwrite=True)  # fmt: skip
    tar_path = run / "bundle-fp16.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(half, arcname="bundle")
    for old in out.glob("bundle-fp16.tar*"):
        old.unlink()
    size = tar_path.stat().st_size
    if size <= PART_BYTES:
        copy_atomic(tar_path, out / "bundle-fp16.tar")
        return ["bundle-fp16.tar"]
    names = []
    with tar_path.open("rb") as src:
        for k in range(math.ceil(size / PART_BYTES)):
            name = f"bundle-fp16.tar.part{k}"
            write_atomic(out / name, src.read(PART_BYTES))
            names.append(name)
    return names


def _mtime(path: Path) -> float | None:
    return path.stat().st_mtime if path.exists() else None


def timing(run: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Effective stage rates (wall time between the files each stage ends with, so saving,
    grids and start-up count) and the time the full preset would take at each rate."""
    from lordfx_trainer.run import read_run_config

    cfg, extra = read_run_config(run)
    n = int(extra["train"]["num_images"])
    t_start, t_latent = _mtime(run / "config.json"), _mtime(run / "latent.safetensors")
    t_bundle, t_state = _mtime(run / "bundle" / "config.json"), _mtime(run / "trainer_state.pt")
    salvage = summary.get("salvage", {})
    res: dict[str, Any] = {"n_train": n, "batch_size": cfg.batch_size,
                           "epochs": [cfg.latent_epochs, cfg.amortized_epochs]}  # fmt: skip
    eff: dict[str, float] = {}
    if t_start and t_latent and "stage" not in salvage:
        res["latent_wall_s"] = round(t_latent - t_start, 1)
        eff["latent"] = cfg.latent_epochs * n / max(1e-9, t_latent - t_start)
    if t_latent and t_bundle and "stage" not in salvage:
        res["amortized_wall_s"] = round(t_bundle - t_latent, 1)
        eff["amortized"] = cfg.amortized_epochs * n / max(1e-9, t_bundle - t_latent)
    elif t_latent and t_state and salvage.get("stage") == "amortized":
        images = salvage["global_step"] * cfg.batch_size
        eff["amortized"] = images / max(1e-9, t_state - t_latent)
        res["amortized_wall_s"] = round(t_state - t_latent, 1)
    rows = _stage_rows(run / "metrics.jsonl")
    steps = {s: statistics.median(r["images_per_s"] for r in v) for s, v in rows.items() if v}
    res["step_images_per_s_median"] = {k: round(v, 1) for k, v in steps.items()}
    res["effective_images_per_s"] = {k: round(v, 1) for k, v in eff.items()}
    bench = summary.get("plan", {})
    full = {}
    n_full = int(summary.get("check", {}).get("data", {}).get("n_train_preset") or n)
    per = {"bench": (bench.get("latent_images_per_s"), bench.get("amortized_images_per_s")),
           "steps": (steps.get("latent"), steps.get("amortized")),
           "effective": (eff.get("latent"), eff.get("amortized"))}  # fmt: skip
    for label, (r1, r2) in per.items():
        if r1 and r2:
            full[label] = round((200 * n_full / r1 + 200 * n_full / r2) / 60, 1)
    res["full_preset_200_200_minutes"] = full
    res["full_preset_n_train"] = n_full
    return res


def cmd_collect(a: argparse.Namespace) -> int:
    run, out = Path(a.run), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if not run.is_dir():
        say(f"collect: no run directory {run} yet")
        return 0
    if not a.final:
        collect_light(run, out)
        return 0
    summary = read_summary(out)
    result: dict[str, Any] = {"train_rc": a.train_rc, "eval_rc": a.eval_rc}
    if (run / "eval.json").is_file():
        copy_atomic(run / "eval.json", out / "eval.json")
        attempt(result, "eval_summary", lambda: result.update(eval_digest(run / "eval.json")))
    attempt(result, "run_files", lambda: collect_light(run, out))
    if (run / "bundle").is_dir():
        result["bundle_files"] = attempt(result, "bundle", lambda: bundle_parts(run, out))
    if (run / "config.json").is_file():
        result["timing"] = attempt(result, "timing", lambda: timing(run, summary))
    t = result.get("timing")
    if t:
        say(
            f"trained {t['epochs'][0]}+{t['epochs'][1]} epochs of {t['n_train']} images at "
            f"batch {t['batch_size']}; effective img/s {t['effective_images_per_s']}, "
            f"per-step img/s {t['step_images_per_s_median']}"
        )
        for label, minutes in t["full_preset_200_200_minutes"].items():
            say(f"FULL PRESET (200+200 epochs) at the {label} rate: {minutes} min")
    result["out_files"] = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    update_summary(out, "result", result)
    for line in result.get("eval_summary", []):
        say(line)
    say("files in OUT:", ", ".join(result["out_files"]))
    return 0


def eval_digest(path: Path) -> dict[str, Any]:
    from lordfx_trainer.evaluation.report import summary_lines

    ev = json.loads(path.read_text())
    digest: dict[str, Any] = {"eval_summary": summary_lines(ev)}
    model = ev.get("transfer", {}).get("metrics", {}).get("model", {})
    if "lpips_alex" in model:
        digest["transfer_lpips_alex"] = model["lpips_alex"]["mean"]
        digest["paper_lpips_alex_cars3d"] = 0.078  # eval.json's paper field keys on "cars3d"
    return digest


def main(argv: list[str]) -> int:
    if argv[:1] == ["lordfx"]:
        return cmd_lordfx(argv[1:])
    p = argparse.ArgumentParser(prog="gpu_session.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--out", required=True)
    c.add_argument("--data", required=True)
    c.add_argument("--preset", default="cars3d")
    c.add_argument("--set", action="append", default=[])
    c = sub.add_parser("plan")
    c.add_argument("--out", required=True)
    c.add_argument("--budget", type=float, required=True, help="seconds of training")
    c.add_argument("--safety", type=float, default=0.7)
    c.add_argument("--epochs", default="", help='"E1 E2": skip the computation')
    c.add_argument("--max-epochs", type=int, default=200)
    c.add_argument("--fallback", type=int, default=10)
    c = sub.add_parser("salvage")
    c.add_argument("run")
    c.add_argument("--out", required=True)
    c = sub.add_parser("collect")
    c.add_argument("run")
    c.add_argument("--out", required=True)
    c.add_argument("--final", action="store_true")
    c.add_argument("--train-rc", type=int, default=None)
    c.add_argument("--eval-rc", type=int, default=None)
    a = p.parse_args(argv)
    return {"check": cmd_check, "plan": cmd_plan, "salvage": cmd_salvage,
            "collect": cmd_collect}[a.cmd](a)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
