"""`step-dist pretrain --config FILE [--set key=value ...]`"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="pretraining recipe (YAML), e.g. jobs/configs/demo.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key, e.g. --set train.max_steps=50 --set storage=s3://bucket/runs")


def run(args: argparse.Namespace) -> int:
    from step_dist.train.trainer import load_config, pretrain

    cfg = load_config(args.config, args.overrides)
    res = pretrain(cfg)
    print(f"[step-dist] done in {res.wall_s:.0f} s")
    print(f"  checkpoint: {res.checkpoint_uri}")
    print(f"  export:     {res.export_uri}   (STEPEncoder.from_pretrained)")
    print(f"  metrics:    {res.outputs_uri}/metrics.jsonl, tensorboard/ ; plot: {res.outputs_uri}/loss_curve.png")
    if res.quarantined:
        print(f"  quarantined records: {res.quarantined} (reasons in {res.outputs_uri}/quarantine/)")
    print(f"  look:       step-dist status {res.run_uri} ; tensorboard --logdir {res.outputs_uri}/tensorboard")
    return 0
