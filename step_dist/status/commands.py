"""`step-dist status URI [--json]`: where a run (or a sweep, a target cache, a shard set) stands."""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("uri", help="a run folder (<storage>/<name>), a sweep, a target cache or a shard set; local or s3://")
    p.add_argument("--json", action="store_true", help="one JSON object (schema_version 1, see README) instead of text")


def run(args: argparse.Namespace) -> int:
    from step_dist.status import status_of
    from step_dist.status.render import render

    st = status_of(args.uri)
    print(json.dumps(st, indent=1, sort_keys=True) if args.json else render(st))
    return 0
