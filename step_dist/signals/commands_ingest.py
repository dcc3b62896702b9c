"""`step-dist ingest SRC... --out URI`: raw signal files -> Parquet shards with a manifest.

Exit codes: 0 every file and record landed; 3 the shards were written but some files or records were
quarantined (listed in the summary and in _manifest.json); 2 a usage error, or nothing readable at all.
"""
from __future__ import annotations

import argparse
import sys

from step_dist import storage
from step_dist.signals.readers import EXTENSIONS, ReaderOptions
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
    p.add_argument("--rate", type=float, help="sampling rate in Hz for files that carry none (NPY, CSV without time, HDF5, .ts)")
    p.add_argument("--h5-dataset", help="dataset path inside HDF5 files (default: the file's only dataset)")
    p.add_argument("--csv-time-column", help="CSV time column in seconds (default: one named time/t/timestamp/seconds)")
    p.add_argument("--nan-policy", choices=NAN_POLICIES, default="quarantine",
                   help="records with NaN/inf: quarantine (default), or zero-fill / interpolate (recorded in meta)")
    p.add_argument("--allow-constant", action="store_true", help="keep flat (constant) signals instead of quarantining them")
    p.add_argument("--max-length", type=int, default=0, help="quarantine records longer than this many samples (0: no limit)")
    p.add_argument("--max-channels", type=int, default=0, help="quarantine records with more channels (0: no limit)")
    p.add_argument("--shard-mb", type=float, default=DEFAULT_SHARD_MB, help=f"target shard size in MB (default {DEFAULT_SHARD_MB:g})")
    p.add_argument("--num-cpus", type=int, help="CPUs for a local Ray instance (default: all)")
    p.epilog = f"readable extensions: {' '.join(EXTENSIONS)}. Exit codes: 0 all good, 3 some quarantined, 2 usage error or nothing readable."


def run(args: argparse.Namespace) -> int:
    from step_dist.signals.ingest import ingest

    try:
        opts = ReaderOptions(
            source=args.source or "default", domain=args.domain, rate_hz=args.rate, h5_dataset=args.h5_dataset,
            split=args.split, csv_time_column=args.csv_time_column,
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
    except (ValueError, storage.StorageError) as e:
        print(f"step-dist ingest: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = ingest(args.src, out, opts, vcfg, labels_uri=args.labels, shard_mb=args.shard_mb,
                        source_given=bool(args.source), num_cpus=args.num_cpus)
    except (ValueError, storage.StorageError) as e:  # a malformed labels file, an unwritable --out
        print(f"step-dist ingest: {e}", file=sys.stderr)
        return EXIT_USAGE
    m = result.manifest
    print(f"wrote {m['n_records']} record(s), {m['total_samples']} samples, {len(m['shards'])} shard(s) to {out}")
    for name, s in m["sources"].items():
        print(f"  {name}: {s['records']} records, length {s['length'][0]}-{s['length'][1]}, "
              f"{s['rate_hz'][0]:g}-{s['rate_hz'][1]:g} Hz, {s['channels'][0]}-{s['channels'][1]} channels")
    q = result.quarantined
    if q:
        print(f"quarantined {len(q)} file(s)/record(s) ({result.files_failed} of {result.n_files} file(s) unreadable):")
        for e in q[:SHOW_QUARANTINED]:
            where = e["id"] or e["uri"]
            print(f"  {e['reason']}" if e["reason"].startswith(where) else f"  {where}: {e['reason']}")
        if len(q) > SHOW_QUARANTINED:
            print(f"  ... and {len(q) - SHOW_QUARANTINED} more")
        print(f"full list in {storage.parse_uri(out).join(MANIFEST).uri} under 'quarantined'")
    if m["n_records"] == 0:
        print("step-dist ingest: nothing readable was found; check the SRC paths and the options above", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_QUARANTINED if q else EXIT_OK
