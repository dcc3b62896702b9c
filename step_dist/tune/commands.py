"""`step-dist sweep --config FILE [--set key=value ...]`: a Ray Tune sweep of pretraining runs."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="sweep recipe (YAML), e.g. jobs/configs/sweep-demo.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a sweep key, e.g. --set num_samples=8 --set storage=s3://bucket/sweeps")


def run(args: argparse.Namespace) -> int:
    from step_dist.tune.driver import load_sweep, run_sweep

    res = run_sweep(load_sweep(args.config, args.overrides), sweep_file=args.config)
    print(f"[step-dist] sweep done in {res.wall_s:.0f} s -> {res.sweep_uri}")
    if res.best_recipe_uri:
        print(f"  best recipe: {res.best_recipe_uri}   (step-dist pretrain --config {res.best_recipe_uri})")
    else:
        print("  no trial ran to the end: no best recipe written")
    print(f"  look: step-dist status {res.sweep_uri} ; table {res.table_uri}")
    return 0 if res.best_recipe_uri else 1
