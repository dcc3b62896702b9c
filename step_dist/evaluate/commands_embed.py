"""`step-dist embed --checkpoint URI --data URI --out URI`: pooled embeddings of a shard set as Parquet."""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="student export or run folder (local or s3://)")
    p.add_argument("--data", required=True, help="shard set to embed (local or s3://)")
    p.add_argument("--out", required=True, help="a .parquet file or a folder (local or s3://)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=0, help="keep the first N samples of each record (0 = all)")
    p.add_argument("--pooling", default="mean+std", choices=["mean", "mean+std", "mean+max", "channels"],
                   help="how tokens become one vector (step_dist.model.pooling); channels: per-channel means concatenated")


def run(args: argparse.Namespace) -> int:
    from step_dist.evaluate.checkpoint import load_student
    from step_dist.evaluate.embed import embed_shards

    encoder, export = load_student(args.checkpoint)
    summary = embed_shards(encoder, args.data, args.out, batch_size=args.batch_size, max_length=args.max_length,
                           pooling=args.pooling)
    print(json.dumps({"checkpoint": export, **summary}, indent=1))
    import sys

    # stdout is the JSON above (for scripts); the pointer goes to stderr
    print(f"look: step-dist inspect {args.out}  (or pandas.read_parquet)", file=sys.stderr)
    return 0
