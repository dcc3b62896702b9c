"""`step-dist cache-targets --config FILE`: run the teacher pools once over a shard set, write a target cache.

Config (YAML):
    input: s3://bucket/shards          # a finished shard set (step-dist ingest)
    out: s3://bucket/targets           # the cache; each run adds <out>/<run>/ with its _manifest.json
    view: {max_length: 16000, min_length: 32, views_per_record: 1, seed: 0}   # same as the training run's
    teachers: [{name: fracast, kind: fracast, checkpoint: builtin}, {name: crepe, kind: crepe}]
    pool: {size: 1, num_gpus: 0, batch_size: 16}      # default pool for every teacher
    pools: {crepe: {size: 2, num_gpus: 1, label_selector: {step-dist/role: teacher}}}
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from step_dist import storage
from step_dist.data.views import ViewConfig
from step_dist.teachers.cache import CACHE_FORMAT, MANIFEST, to_cache_columns
from step_dist.teachers.protocol import TeacherConfig
from step_dist.teachers.stage import PoolConfig, teacher_stage


@dataclass
class CacheTargetsConfig:
    input: str = ""
    out: str = ""
    view: ViewConfig = field(default_factory=ViewConfig)
    teachers: list[TeacherConfig] = field(default_factory=list)
    pool: PoolConfig = field(default_factory=PoolConfig)
    pools: dict[str, PoolConfig] = field(default_factory=dict)
    view_batch_size: int = 16
    validation: dict[str, Any] = field(default_factory=dict)  # step_dist.signals.validate.ValidationConfig fields
    ray_address: str = ""  # "" = the cluster this job runs in, or a local one


def run_cache_targets(cfg: CacheTargetsConfig) -> dict[str, Any]:
    """Run every teacher over every view of the shard set; returns the manifest written (last)."""
    import ray

    from step_dist.signals.shards import read_dataset
    from step_dist.teachers.registry import fingerprint

    if not cfg.input or not cfg.out:
        raise ValueError("cache-targets needs both input (a shard set) and out (the cache URI)")
    if not cfg.teachers:
        raise ValueError("cache-targets needs at least one teacher")
    names = [t.name for t in cfg.teachers]
    if len(set(names)) != len(names):
        raise ValueError(f"teacher names must be unique, got {names}")
    unknown = sorted(set(cfg.pools) - set(names))
    if unknown:
        raise ValueError(f"pools given for unknown teachers {unknown}; teachers are {names}")
    if not ray.is_initialized():
        import os

        from step_dist.ray_session import init_ray

        if cfg.ray_address:
            os.environ["RAY_ADDRESS"] = cfg.ray_address
        # a Ray started here must fit every teacher pool plus the read and view tasks, or the run waits forever
        needed = sum(cfg.pools.get(t.name, cfg.pool).size for t in cfg.teachers) + 3
        init_ray(max(os.cpu_count() or 1, needed))
    fps = {t.name: fingerprint(t) for t in cfg.teachers}  # before any work: a bad checkpoint fails fast

    # the same validated views the training pipeline makes (bad records set aside with their reason), so the
    # cache holds exactly the views a run will ask for
    from step_dist.data.pipeline import expand_views

    ds = read_dataset(cfg.input)
    ds = ds.map_batches(expand_views, fn_kwargs={"view": dataclasses.asdict(cfg.view), "validation": dict(cfg.validation),
                                                 "quarantine_uri": None},
                        batch_format="pyarrow", batch_size=cfg.view_batch_size)
    for t in cfg.teachers:
        ds = teacher_stage(ds, t, cfg.pools.get(t.name, cfg.pool))
    from step_dist.progress import CounterWatcher, Progress, remote_counter

    counter = remote_counter()
    ds = ds.map_batches(to_cache_columns, fn_kwargs={"names_to_fp": fps, "counter": counter}, batch_format="pyarrow")

    run = f"run-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    run_loc = storage.parse_uri(cfg.out).join(run)
    fs, path = storage.arrow_filesystem(run_loc.uri)
    storage.makedirs(run_loc.uri)
    bar = Progress(f"cache-targets ({', '.join(names)})", total=_expected_views(cfg), unit="views")
    with CounterWatcher(counter, bar):
        ds.write_parquet(path, filesystem=fs)

    # everything the run wrote is in its own folder; record each file's size and rows, then publish
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    files = []
    for f in sorted(i.path for i in fs.get_file_info(pafs.FileSelector(path)) if i.path.endswith(".parquet")):
        with fs.open_input_file(f) as fh:
            rows = pq.ParquetFile(fh).metadata.num_rows
        files.append({"path": f.rsplit("/", 1)[-1], "rows": int(rows), "bytes": int(fs.get_file_info(f).size)})
    manifest = {
        "format": CACHE_FORMAT,
        "created": time.time(),
        "run": run,
        "input": storage.parse_uri(cfg.input).uri,
        "view": dataclasses.asdict(cfg.view),
        "teachers": [{"name": t.name, "kind": t.kind, "fingerprint": fps[t.name], "config": dataclasses.asdict(t)}
                     for t in cfg.teachers],
        "rows": sum(f["rows"] for f in files),
        "files": files,
    }
    storage.write_bytes(run_loc.join(MANIFEST).uri, json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest


def _expected_views(cfg: CacheTargetsConfig) -> int | None:
    """Views the cache will hold at most: records x views per record (records set aside at validation make
    fewer), from the shard set's manifest; None when it cannot be read."""
    try:
        manifest = json.loads(storage.read_bytes(storage.parse_uri(cfg.input).join("_manifest.json").uri))
        return int(manifest["n_records"]) * max(1, int(cfg.view.views_per_record))
    except (FileNotFoundError, KeyError, TypeError, ValueError):
        return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML file (local or s3://) with input, out, view, teachers, pool")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. out=s3://b/targets")


def run(args: argparse.Namespace) -> int:
    from step_dist.config import load

    cfg = load(CacheTargetsConfig, args.config, args.overrides)
    m = run_cache_targets(cfg)
    run_uri = storage.parse_uri(cfg.out).join(m['run']).uri
    print(f"wrote {m['rows']} view targets for {', '.join(t['name'] for t in m['teachers'])} "
          f"in {len(m['files'])} shard(s) to {run_uri}")
    print(f"  look: step-dist status {storage.parse_uri(cfg.out).uri}")
    return 0
