"""``lordfx cluster-shoes``, ``lordfx style-bank`` and ``lordfx eval-shoes`` (issue 19).

cluster-shoes makes the classes of the shoes domain (shoe/bag split, style clusters),
style-bank copies the clusters' description into a run's bundle (so ``lordfx shoes styles``
works without the data and ``lordfx ship`` carries it), eval-shoes scores a run.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import typer


def cluster_shoes_command(
    data: Path = typer.Argument(..., help="edges2shoes_mix folder (train/ and val/ pairs)."),
    out: Path = typer.Option(..., "--out", "-o", help="New directory for the clustering."),
    k: int | None = typer.Option(
        None, "--k", min=2, help="Number of style clusters [default: best silhouette, 4-16]."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of every k-means (recorded)."),
) -> None:
    """Split edges2shoes_mix into shoes and bags and cluster the shoes by style (VGG16
    first-layer Gram statistics, k-means); writes OUT/clusters.json, the style model and
    contact sheets (dataset pixels: do not commit). Train with --data OUT."""
    from lordfx.errors import InputError
    from lordfx_trainer.shoes_cluster import cluster_shoes

    if not data.is_dir():
        raise InputError(data, "no such folder (the edges2shoes_mix data)")
    record = cluster_shoes(data, out, k=k, seed=seed)
    split = record["shoe_vs_bag"]
    typer.echo(
        f"{out}: shoes {split['num_shoes']['train']} train / {split['num_shoes']['val']} val, "
        f"bags {split['num_bags']['train']} / {split['num_bags']['val']}; "
        f"{record['num_styles']} styles ({record['k_rule']})"
    )
    for c in record["clusters"]:
        typer.echo(f"  {c['name']}: {c['count']} photos, mean RGB {tuple(c['mean_rgb'])}")


def style_bank_command(
    run_dir: Path = typer.Argument(..., help="A finished shoes run (lordfx train shoes64-cpu)."),
) -> None:
    """Add the style clusters (centres, PCA, counts, mean colours) to RUN_DIR/bundle."""
    import torch

    from lordfx.bundle import add_bundle_file
    from lordfx.errors import LordfxError
    from lordfx_trainer.data.shoes import read_clusters
    from lordfx_trainer.evaluation.runs import read_config
    from lordfx_trainer.shoes_cluster import STYLE_MODEL_FILE, StyleModel

    cfg, extra = read_config(run_dir)
    if cfg.dataset != "shoes":
        raise LordfxError(f"{run_dir}: dataset {cfg.dataset!r} is not a shoes run")
    cluster_dir = Path(extra["data_path"])
    info, model = read_clusters(cluster_dir), StyleModel.load(cluster_dir / STYLE_MODEL_FILE)
    tensors = {k: torch.from_numpy(getattr(model, k)) for k in ("mean", "components", "scale")}
    tensors["centres"] = torch.from_numpy(model.centres)
    tensors["counts"] = torch.tensor([c["count"] for c in info["clusters"]])
    tensors["mean_rgb"] = torch.tensor([c["mean_rgb"] for c in info["clusters"]])
    meta = {
        "styles": info["clusters"],
        "style_clustering": {
            "features": info["style_features"],
            "k_rule": info["k_rule"],
            "seed": info["seed"],
            "shoe_vs_bag": {
                k: info["shoe_vs_bag"][k] for k in ("method", "rule", "num_shoes", "num_bags")
            },
        },
    }
    path = add_bundle_file(run_dir / "bundle", "styles.safetensors", tensors, meta)
    typer.echo(str(path))


def eval_shoes_command(
    run_dir: Path = typer.Argument(..., help="A finished shoes run."),
    bundle: Path | None = typer.Option(
        None, "--bundle", help="Bundle of that run to score [default: RUN_DIR/bundle]."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the same-cluster baseline."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON result on stdout."),
) -> None:
    """On the val shoe pairs: LPIPS of from-edges (style of the paired photo) against the
    paired photo beside two baselines, edge F1 and style consistency. Writes
    RUN_DIR/eval_shoes.json and RUN_DIR/eval_shoes/figure5.png (dataset pixels: do not commit)."""
    from lordfx_trainer.evaluation.report import write_json_atomic
    from lordfx_trainer.evaluation.shoes import EVAL_SHOES_FILE, evaluate_shoes, summary_markdown

    figure = run_dir / "eval_shoes" / "figure5.png"
    result = evaluate_shoes(run_dir, bundle, seed=seed, figure=figure)
    command = ["lordfx", "eval-shoes", str(run_dir), "--seed", str(seed)]
    result["command"] = shlex.join(command + (["--bundle", str(bundle)] if bundle else []))
    write_json_atomic(result, run_dir / EVAL_SHOES_FILE)
    typer.echo(f"wrote {run_dir / EVAL_SHOES_FILE} and {figure}", err=True)
    typer.echo(json.dumps(result, indent=2) if as_json else summary_markdown(result))
