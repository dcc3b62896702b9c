"""`step-dist ingest-scits ROOT_OR_JSONL... --out URI`: a SciTS release -> one labelled shard set per task
(`step-dist evaluate --task OUT/tasks/<task>`) and a pretraining corpus (OUT/corpus), with a per-task summary.

Exit codes: 0 every row became a record; 3 the shard sets were written but some rows were set aside (each
named with its reason in the summary, in OUT/scits_summary.json and in its task's _manifest.json); 2 a usage
error, or no record at all.
"""
from __future__ import annotations

import argparse
import sys

from step_dist.signals.readers.base import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_RECORD_BYTES

EXIT_OK, EXIT_USAGE, EXIT_SET_ASIDE = 0, 2, 3
SHOW_SET_ASIDE = 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", nargs="+", help="a SciTS release folder (meta_data.jsonl at the top, one folder per task) "
                                          "or .jsonl files, local or s3:// / gs://")
    p.add_argument("--out", required=True, help="where tasks/<task>/, corpus/ and scits_summary.json go (a new folder)")
    p.add_argument("--root", help="the dataset root signal paths are relative to (default: the release folder; "
                                  "for a .jsonl, the folder above its task folder)")
    p.add_argument("--rate", type=float, help="sampling rate in Hz for rows whose file, row and rate table give none")
    p.add_argument("--rates", metavar="FILE", help="per-task rate table, YAML {task or dataset token: Hz} "
                                                   "(e.g. jobs/configs/scits-rates.yaml)")
    p.add_argument("--holdout", type=float, default=0.0, metavar="F",
                   help="ignore the release's splits: about F of each task's records (by a hash of the id) go to "
                        "test, the rest to train (0: keep the release's splits)")
    p.add_argument("--task", action="append", default=[], metavar="NAME",
                   help="only these tasks (a task folder name, or a '-' token of it such as STEAD); repeat")
    p.add_argument("--max-record-mb", type=float, default=DEFAULT_MAX_RECORD_BYTES / 2**20,
                   help=f"set aside a record that would decode to more float32 MiB, checked before decoding (default {DEFAULT_MAX_RECORD_BYTES >> 20:g})")
    p.add_argument("--max-file-mb", type=float, default=DEFAULT_MAX_FILE_BYTES / 2**20,
                   help=f"set aside a signal file larger than this, checked before reading it (default {DEFAULT_MAX_FILE_BYTES >> 20:g})")


def run(args: argparse.Namespace) -> int:
    from step_dist import storage
    from step_dist.evaluate.scits_release import SUMMARY, ingest_release, load_rates, with_reader

    try:
        if args.rate is not None and not args.rate > 0:
            raise ValueError(f"--rate must be a positive number of Hz, got {args.rate}")
        if not 0.0 <= args.holdout < 1.0:
            raise ValueError(f"--holdout must be in [0, 1), got {args.holdout}")
        for flag, mb in (("--max-record-mb", args.max_record_mb), ("--max-file-mb", args.max_file_mb)):
            if not mb >= 0:
                raise ValueError(f"{flag} must be >= 0 MiB, got {mb}")
        out = storage.parse_uri(args.out)
        if storage.exists(out.join(SUMMARY).uri):
            raise ValueError(f"{out.uri} already holds an ingested SciTS set; choose another --out or delete it first")
        storage.check_writable_folder(out.uri)
        rates = load_rates(args.rates) if args.rates else {}
    except (ValueError, storage.StorageError) as e:
        print(f"step-dist ingest-scits: {e}", file=sys.stderr)
        return EXIT_USAGE
    reader = with_reader(max_record_bytes=int(args.max_record_mb * 2**20), max_file_bytes=int(args.max_file_mb * 2**20))
    summary = ingest_release(args.src, out.uri, root=args.root, rate_hz=args.rate, rates=rates,
                             holdout=args.holdout, only=args.task, reader=reader)
    print_summary(summary)
    if not summary["task_uris"] and not summary["corpus"]["records"]:
        print("step-dist ingest-scits: no record was written; see the reasons above", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_SET_ASIDE if summary["set_aside"] else EXIT_OK


def _counts(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"


def print_summary(summary: dict) -> None:
    for note in summary["notes"]:
        print(f"note: {note}")
    print(f"{'task':<44} {'rows':>5} {'records':>7} {'labelled':>8} {'classes':>7}  splits / set aside")
    for t in summary["tasks"]:
        print(f"{t['task'][:44]:<44} {t['rows']:>5} {t['records']:>7} {t['labelled']:>8} {len(t['classes']):>7}  "
              f"{_counts(t['splits'])} / set aside: {_counts(t['set_aside'])}")
        if t["classes"]:
            print(f"{'':<8}classes: " + ", ".join(f"{k} ({v})" for k, v in t["classes"].items())[:400])
        if t["labelled"] and t.get("uri") and not ({"train"} <= set(t["splits"]) and {"test"} <= set(t["splits"])):
            print(f"{'':<8}warning: evaluate needs train and test records; this task has {_counts(t['splits'])}: "
                  "ingest again with --holdout 0.2, or set holdout_fraction in the task config (rows without a split)")
    aside = [(t["task"], r) for t in summary["tasks"] for r in t["set_aside_rows"]]
    if aside:
        print(f"set aside {len(aside)} row(s):")
        for task, r in aside[:SHOW_SET_ASIDE]:
            line = f"{r['jsonl'].rsplit('/', 1)[-1]}:{r['line']}" if r["line"] is not None else r["jsonl"]
            print(f"  {task} {line}" + (f" id={r['id']}" if r["id"] else "") + f": {r['reason']}")
        if len(aside) > SHOW_SET_ASIDE:
            print(f"  ... and {len(aside) - SHOW_SET_ASIDE} more")
        print(f"full list in {summary['out'].rstrip('/')}/scits_summary.json")
    for task, uri in summary["task_uris"].items():
        print(f"task {task}: step-dist evaluate --task {uri} ...")
    if summary["corpus"]["records"]:
        print(f"pretraining corpus: {summary['corpus']['uri']} ({summary['corpus']['records']} records, no test/val rows)")
