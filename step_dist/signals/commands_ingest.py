"""`step-dist ingest SRC... --out URI`: raw signal files -> Parquet shards with a manifest.

Exit codes: 0 every file and record landed; 3 the shards were written but some files or records were
quarantined (listed in the summary and in _manifest.json); 2 a usage error, or nothing readable at all.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter

from step_dist import storage
from step_dist.signals.readers import EXTENSIONS, ReaderOptions
from step_dist.signals.readers.base import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_RECORD_BYTES, FLOAT32_POLICIES
from step_dist.signals.shards import DEFAULT_SHARD_MB, MANIFEST
from step_dist.signals.validate import NAN_POLICIES, ValidationConfig

EXIT_OK, EXIT_USAGE, EXIT_QUARANTINED = 0, 2, 3
SHOW_QUARANTINED = 20


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", nargs="+", help="files or folders/prefixes (local paths, file://, s3://, gs://)")
    p.add_argument("--out", required=True, help="where the shards and _manifest.json go (a new folder or prefix)")
    p.add_argument("--source", help="dataset name for every record (default: each SRC's folder or file name)")
    p.add_argument("--domain", default="unknown", help="seismic, eeg, audio, light_curve, ... (default: unknown)")
    p.add_argument("--labels", help="CSV of 'id,label' or 'file,label' rows (a header line is optional)")
    p.add_argument("--split", help="split written into every record (train/val/test; .ts files infer it from _TRAIN/_TEST)")
    p.add_argument("--rate", type=float, help="sampling rate in Hz for files that carry none (NPY, CSV without time, HDF5, .ts); "
                   "a file's own rate always wins, and a disagreement is reported")
    p.add_argument("--h5-dataset", help="dataset path inside HDF5 files (default: the file's only dataset)")
    p.add_argument("--csv-time-column", help="CSV time column in seconds (default: one named time/t/timestamp/seconds)")
    p.add_argument("--nan-policy", choices=NAN_POLICIES, default="quarantine",
                   help="records with NaN/inf: quarantine (default), or zero-fill / interpolate (recorded in meta)")
    p.add_argument("--allow-constant", action="store_true", help="keep flat (constant) signals instead of quarantining them")
    p.add_argument("--max-length", type=int, default=0, help="quarantine records longer than this many samples (0: no limit)")
    p.add_argument("--max-channels", type=int, default=0, help="quarantine records with more channels (0: no limit)")
    p.add_argument("--max-record-mb", type=float, default=DEFAULT_MAX_RECORD_BYTES / 2**20,
                   help=f"quarantine a record that would decode to more float32 MiB, checked before decoding (default {DEFAULT_MAX_RECORD_BYTES >> 20:g}; 0: no limit)")
    p.add_argument("--max-file-mb", type=float, default=DEFAULT_MAX_FILE_BYTES / 2**20,
                   help=f"quarantine a raw file larger than this, checked before reading it (default {DEFAULT_MAX_FILE_BYTES >> 20:g}; 0: no limit)")
    p.add_argument("--float32-policy", choices=FLOAT32_POLICIES, default="quarantine",
                   help="values float32 cannot hold exactly (integers above 2**24, float64 below 1.2e-38): quarantine the "
                        "record (default) or round them, recorded in meta; values beyond float32's range are always quarantined")
    p.add_argument("--shard-mb", type=float, default=DEFAULT_SHARD_MB, help=f"target shard size in MB (default {DEFAULT_SHARD_MB:g})")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray instance (default: all)")
    p.epilog = f"readable extensions: {' '.join(EXTENSIONS)}. Exit codes: 0 all good, 3 some quarantined, 2 usage error or nothing readable."


def run(args: argparse.Namespace) -> int:
    from step_dist.signals.ingest import ingest

    try:
        opts = ReaderOptions(
            source=args.source or "default", domain=args.domain, rate_hz=args.rate, h5_dataset=args.h5_dataset,
            split=args.split, csv_time_column=args.csv_time_column, max_length=args.max_length,
            max_channels=args.max_channels, max_record_bytes=_mib(args.max_record_mb, "--max-record-mb"),
            max_file_bytes=_mib(args.max_file_mb, "--max-file-mb"), float32_policy=args.float32_policy,
        )
        vcfg = ValidationConfig(
            nan_policy=args.nan_policy, allow_constant=args.allow_constant,
            max_length=args.max_length, max_channels=args.max_channels,
        )
        if args.shard_mb <= 0:
            raise ValueError(f"--shard-mb must be > 0, got {args.shard_mb}")
        out = storage.parse_uri(args.out).uri
        if storage.exists(storage.parse_uri(out).join(MANIFEST).uri):
            raise ValueError(f"{out} already holds a shard set; choose another --out or delete it first")
        if args.labels and not storage.exists(args.labels):
            raise ValueError(f"labels file {args.labels} does not exist; check the path")
        storage.check_writable_folder(out)
    except (ValueError, storage.StorageError) as e:
        print(f"step-dist ingest: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = ingest(args.src, out, opts, vcfg, labels_uri=args.labels, shard_mb=args.shard_mb,
                        source_given=bool(args.source), num_cpus=args.num_cpus)
    except (ValueError, storage.StorageError, OSError) as e:  # a malformed labels file, an unwritable --out
        print(f"step-dist ingest: {e}", file=sys.stderr)
        return EXIT_USAGE
    m = result.manifest
    print(f"wrote {m['n_records']} record(s), {m['total_samples']} samples, {len(m['shards'])} shard(s) to {out}")
    for name, s in m["sources"].items():
        print(f"  {name}: {s['records']} records, length {s['length'][0]}-{s['length'][1]}, "
              f"{s['rate_hz'][0]:g}-{s['rate_hz'][1]:g} Hz, {s['channels'][0]}-{s['channels'][1]} channels")
    flagged = m.get("flagged") or {}
    if flagged:
        print("kept with a change or finding recorded in each record's meta.flags: "
              + ", ".join(f"{k} {v}" for k, v in flagged.items()))
    if "rate_conflict" in flagged:
        print(f"  rate_conflict: --rate {args.rate:g} disagrees with the rate {flagged['rate_conflict']} file(s) carry; "
              "each file's own rate was kept")
    if result.skipped:
        kinds = Counter(e["kind"] for e in result.skipped)
        print(f"skipped {len(result.skipped)} file(s) on purpose: " + ", ".join(f"{k}: {v}" for k, v in kinds.items())
              + f" (listed in {storage.parse_uri(out).join(MANIFEST).uri} under 'skipped')")
    q = result.quarantined
    if q:
        print(f"quarantined {len(q)} file(s)/record(s) ({result.files_failed} of {result.n_files} file(s) unreadable):")
        for e in q[:SHOW_QUARANTINED]:
            where = e["id"] or e["uri"]
            print(f"  {e['reason']}" if e["reason"].startswith(where) else f"  {where}: {e['reason']}")
        if len(q) > SHOW_QUARANTINED:
            print(f"  ... and {len(q) - SHOW_QUARANTINED} more")
        print(f"full list in {storage.parse_uri(out).join(MANIFEST).uri} under 'quarantined'")
    print(f"  look: step-dist inspect {out}")
    if m["n_records"] == 0:
        if q:
            why = Counter(reason_kind(e) for e in q)
            print("step-dist ingest: no record was written: every file or record was quarantined ("
                  + ", ".join(f"{k}: {v}" for k, v in why.most_common()) + "); see the reasons above", file=sys.stderr)
        else:
            print("step-dist ingest: no readable file was found under the SRC paths; check them and the options above",
                  file=sys.stderr)
        return EXIT_USAGE
    return EXIT_QUARANTINED if q else EXIT_OK


def reason_kind(entry: dict) -> str:
    """A quarantine reason's kind for a summary ("too long", "non-finite values"...): the text before its
    first ':' once the file or record name it may start with is removed."""
    reason = entry["reason"]
    for name in (entry.get("id"), entry.get("uri")):
        if name and reason.startswith(name):
            reason = reason[len(name):].lstrip(": ")
    return reason.split(":")[0].split(" (")[0].strip()[:60] or "other"


def _mib(value: float, flag: str) -> int:
    if not value >= 0:
        raise ValueError(f"{flag} must be >= 0 MiB, got {value}")
    return int(value * 2**20)
