"""`step-dist demo-data --out URI [--size small|tiny]`: the offline demo corpus (see demo_corpus.py).

Writes pretrain/, tasks/<name>/ and demo_index.json ({"pretrain": uri, "tasks": {name: uri}}) under --out.
"""
from __future__ import annotations

import argparse
import json
import sys

from step_dist import storage
from step_dist.signals.demo_corpus import SIZES, build


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="root folder or prefix for the corpus (local path, s3://, gs://)")
    p.add_argument("--size", choices=sorted(SIZES), default="small",
                   help="small: ~400 pretraining records and 4 tasks (the demo); tiny: seconds, for tests")
    p.add_argument("--seed", type=int, default=0, help="seed of the simulated signals")


def run(args: argparse.Namespace) -> int:
    try:
        root = storage.parse_uri(args.out)
        if storage.exists(root.join("demo_index.json").uri):
            print(f"step-dist demo-data: {root.uri} already holds a demo corpus (demo_index.json); use it or choose another --out",
                  file=sys.stderr)
            return 2
        index = build(root.uri, size=args.size, seed=args.seed, say=lambda m: print(m, file=sys.stderr, flush=True))
    except (ValueError, storage.StorageError) as e:
        print(f"step-dist demo-data: {e}", file=sys.stderr)
        return 2
    print(json.dumps(index, indent=1))
    print(f"look: step-dist inspect {index.get('pretrain', root.uri)}", file=sys.stderr)
    return 0
