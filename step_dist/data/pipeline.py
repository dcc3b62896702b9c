"""The training data pipeline on Ray Data, one direction:

    shards -> validate (quarantine) -> views (deterministic crops) -> teacher targets -> train workers

Bad records are set aside with their reason in ``<run>/quarantine/*.jsonl`` and counted; nothing else is
dropped. Teacher targets come from fixed-size actor pools (online) or from a target cache.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import asdict
from typing import Any

import numpy as np

from step_dist.data.views import ViewConfig



class QuarantineSink:
    """Appends bad records (id, uri, reason) as JSON lines to part files under one folder of the run."""

    def __init__(self, uri: str | None):
        self.uri = uri

    def write(self, entries: list[dict[str, Any]]) -> None:
        if not entries or not self.uri:
            return
        from step_dist import storage

        body = "".join(json.dumps(e, sort_keys=True) + "\n" for e in entries).encode()
        storage.write_bytes(f"{self.uri.rstrip('/')}/part-{uuid.uuid4().hex}.jsonl", body)


def read_quarantine(uri: str) -> list[dict[str, Any]]:
    from step_dist import storage

    try:
        files = storage.list_files(uri, suffixes=(".jsonl",))
    except FileNotFoundError:
        return []
    out: list[dict[str, Any]] = []
    for f in files:
        out += [json.loads(line) for line in storage.read_bytes(f).decode().splitlines() if line.strip()]
    return out


def expand_views(batch, view: dict[str, Any], validation: dict[str, Any], quarantine_uri: str | None = None,
                 part: str = "all", validation_fraction: float = 0.0):
    """Ray Data batch UDF (pyarrow): validate each record (the ingest rules), then one row per deterministic view.

    Invalid records are written to the quarantine sink with their reason and emit no rows; the views of the
    good ones come from the same function the target cache uses, so view ids always agree.

    ``part``: "train" keeps the records outside the held-out validation slice (data/split.py), "validation"
    only those in it, "all" every record (the target cache covers both)."""
    from step_dist.data.split import in_validation

    from step_dist.signals.validate import ValidationConfig, validate_record
    from step_dist.data.views import view_rows

    vcfg = ViewConfig(**view)
    val_cfg = ValidationConfig(**validation)
    keep: list[int] = []
    bad: list[dict[str, Any]] = []
    for i, row in enumerate(batch.to_pylist()):
        try:
            reason = validate_record(row, val_cfg)
        except Exception as e:  # noqa: BLE001 - a record that cannot even be decoded is quarantined too
            reason = f"undecodable record: {type(e).__name__}: {e}"
        if reason is None and int(row["length"]) < vcfg.min_length:
            reason = f"too short for any view: {int(row['length'])} samples < data.view.min_length={vcfg.min_length}"
        if reason is None and part != "all" and in_validation(str(row["id"]), validation_fraction) != (part == "validation"):
            continue  # the other part's record: not bad, just not this dataset's
        if reason is not None:
            if part == "validation":
                continue  # the training dataset quarantines it (once)
            bad.append({"id": str(row.get("id")), "uri": str(row.get("uri")), "index": int(row.get("index", -1)),
                        "reason": reason, "stage": "pipeline"})
        else:
            keep.append(i)
    QuarantineSink(quarantine_uri).write(bad)
    import pyarrow as pa

    # typed indices: an empty list (a batch with nothing for this part) would be a null array take() refuses
    return view_rows(batch.take(pa.array(keep, type=pa.int64())), vcfg)


def read_shard_files(batch, quarantine_uri: str | None = None):
    """Ray Data batch UDF: shard URIs in (column ``shard``), their record rows out (RECORD_SCHEMA).

    One shard is read per call so that a corrupt file (garbage bytes, a truncated footer, a foreign schema) is
    set aside in the quarantine with its reason instead of killing the run, while the good shards around it
    are read as usual. Fetching the bytes is retried (a store that hiccups is not a corrupt shard); a store
    that stays down raises StorageError and ends the run, because quarantining good data for an outage would
    lose it."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from step_dist import storage
    from step_dist.signals.record import RECORD_SCHEMA

    tables, bad = [], []
    for uri in batch["shard"]:
        uri = str(uri)
        fs, path = storage.arrow_filesystem(uri)

        def fetch(fs=fs, path=path) -> bytes:
            with fs.open_input_file(path) as f:
                return f.read()

        try:
            data = storage.with_retries(fetch, f"reading shard {uri}", attempts=2)  # pyarrow retries inside too
        except FileNotFoundError:
            bad.append({"id": None, "uri": uri, "index": -1, "stage": "shard",
                        "reason": "shard listed in _manifest.json is missing from storage"})
            continue
        try:
            table = pq.read_table(io.BytesIO(data))
            table = table.select(RECORD_SCHEMA.names).cast(RECORD_SCHEMA)
        except Exception as e:  # noqa: BLE001 - any parse/schema failure means this file cannot be trusted
            bad.append({"id": None, "uri": uri, "index": -1, "stage": "shard",
                        "reason": f"unreadable shard ({len(data)} bytes): {type(e).__name__}: {e}"})
            continue
        tables.append(table)
    QuarantineSink(quarantine_uri).write(bad)
    if not tables:
        return RECORD_SCHEMA.empty_table()
    return pa.concat_tables(tables)


def read_shards(uri: str, quarantine_uri: str | None = None):
    """A Ray Dataset over a shard set's records (local or object storage), in manifest order, one read task
    per shard; shards that cannot be read are quarantined (see read_shard_files)."""
    import ray

    from step_dist.signals.shards import list_shards

    shards = list_shards(uri)
    items = ray.data.from_items([{"shard": s} for s in shards], override_num_blocks=max(len(shards), 1))
    return items.map_batches(read_shard_files, fn_kwargs={"quarantine_uri": quarantine_uri},
                             batch_size=1, batch_format="pyarrow")


def build_view_dataset(data_cfg, quarantine_uri: str | None, part: str | None = None):
    """shards -> validated views (no targets yet). ``part``: train | validation | all; by default "train"
    when the recipe holds out a validation slice (data.validation_fraction > 0), else "all"."""
    fraction = float(getattr(data_cfg, "validation_fraction", 0.0))
    part = part or ("train" if fraction > 0 else "all")
    ds = read_shards(data_cfg.train, quarantine_uri if part != "validation" else None)
    return ds.map_batches(
        expand_views,
        fn_kwargs={"view": asdict(data_cfg.view), "validation": dict(data_cfg.validation), "quarantine_uri": quarantine_uri,
                   "part": part, "validation_fraction": fraction},
        batch_format="pyarrow",
        batch_size=16,
    )


def attach_targets(ds, cfg):
    """views -> views + teacher targets: online (one fixed-size actor pool per teacher) or from the cache."""
    teachers = list(zip(cfg.teachers, cfg.teacher_configs()))
    if cfg.targets.mode == "cache":
        from step_dist.teachers.cache import cached_stage

        return cached_stage(ds, cfg.targets.cache, [t for _, t in teachers])
    from step_dist.teachers.stage import teacher_stage

    for te, tcfg in teachers:
        ds = teacher_stage(ds, tcfg, te.pool)
    return ds
