"""`step-dist inspect URI`: what a shard set holds, from its manifest (no Ray, no values decoded).

Accepts a shard set, or a demo corpus root (a folder with demo_index.json: every set in it is summarised).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from step_dist import storage
from step_dist.signals.shards import MANIFEST, read_manifest


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("uri", help="a shard set (folder with _manifest.json) or a demo corpus root")
    p.add_argument("--quarantined", type=int, default=10, help="how many quarantined entries to list (default 10)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _range(lo_hi: list, fmt: str = "{}") -> str:
    lo, hi = lo_hi
    return fmt.format(lo) if lo == hi else f"{fmt.format(lo)} - {fmt.format(hi)}"


def summarise(uri: str) -> dict[str, Any]:
    m = read_manifest(uri)
    srcs = m["sources"].values()
    labels: dict[str, int] = {}
    splits: dict[str, int] = {}
    for s in srcs:
        for k, v in s["labels"].items():
            labels[k] = labels.get(k, 0) + v
        for k, v in s["splits"].items():
            splits[k] = splits.get(k, 0) + v
    span = lambda key, lo, hi: [min((s[key][0] for s in srcs), default=lo), max((s[key][1] for s in srcs), default=hi)]  # noqa: E731
    return {
        "uri": storage.parse_uri(uri).uri, "records": m["n_records"], "samples": m["total_samples"], "bytes": m["total_bytes"],
        "shards": len(m["shards"]), "sources": {k: v["records"] for k, v in m["sources"].items()},
        "domains": sorted({d for s in srcs for d in s["domains"]}),
        "length": span("length", 0, 0), "rate_hz": span("rate_hz", 0.0, 0.0), "channels": span("channels", 0, 0),
        "labels": dict(sorted(labels.items())), "splits": dict(sorted(splits.items())),
        "quarantined": m["n_quarantined"], "quarantine_examples": m["quarantined"],
        "flagged": m.get("flagged", {}), "skipped": m.get("n_skipped", 0),
    }


def render(s: dict[str, Any], n_quarantined: int) -> str:
    lines = [
        f"{s['uri']}",
        f"  records      {s['records']} in {s['shards']} shard(s), {s['samples']} samples, {s['bytes'] / 2**20:.1f} MiB",
        f"  sources      " + ", ".join(f"{k} ({v})" for k, v in s["sources"].items()),
        f"  domains      {', '.join(s['domains'])}",
        f"  length       {_range(s['length'])} samples",
        f"  rate         {_range(s['rate_hz'], '{:g}')} Hz",
        f"  channels     {_range(s['channels'])}",
        f"  splits       " + (", ".join(f"{k}: {v}" for k, v in s["splits"].items()) or "-"),
        f"  labels       " + (", ".join(f"{k}: {v}" for k, v in s["labels"].items()) if s["labels"] else "none"),
        f"  quarantined  {s['quarantined']}",
    ]
    if s.get("flagged"):
        lines.insert(-1, "  flagged      " + ", ".join(f"{k}: {v}" for k, v in s["flagged"].items()) + " (see meta.flags)")
    if s.get("skipped"):
        lines.append(f"  skipped      {s['skipped']} file(s) on purpose (hidden, '_' names, sidecars; listed in {MANIFEST})")
    for q in s["quarantine_examples"][:n_quarantined]:
        lines.append(f"    {q.get('id') or q['uri']}: {q['reason']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        root = storage.parse_uri(args.uri)
        if root.scheme == "file" and os.path.isfile(root.path):
            raise ValueError(f"{root.uri} is a file; give the shard set's folder (the one holding {MANIFEST})")
        index_uri = root.join("demo_index.json").uri
        if storage.exists(index_uri):
            index = json.loads(storage.read_bytes(index_uri))
            uris = [index["pretrain"], *index["tasks"].values()]
        else:
            uris = [root.uri]
        summaries = [summarise(u) for u in uris]
    except (FileNotFoundError, ValueError, storage.StorageError, OSError) as e:
        print(f"step-dist inspect: {e}", file=sys.stderr)
        return 2
    if args.json:
        for s in summaries:
            s["quarantine_examples"] = s["quarantine_examples"][: args.quarantined]
        print(json.dumps(summaries if len(summaries) > 1 else summaries[0], indent=1))
    else:
        print("\n".join(render(s, args.quarantined) for s in summaries))
    return 0
