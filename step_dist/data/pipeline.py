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


def expand_views(batch, view: dict[str, Any], validation: dict[str, Any], quarantine_uri: str | None = None):
    """Ray Data batch UDF (pyarrow): validate each record (the ingest rules), then one row per deterministic view.

    Invalid records are written to the quarantine sink with their reason and emit no rows; the views of the
    good ones come from the same function the target cache uses, so view ids always agree."""
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
        if reason is not None:
            bad.append({"id": str(row.get("id")), "uri": str(row.get("uri")), "index": int(row.get("index", -1)),
                        "reason": reason, "stage": "pipeline"})
        else:
            keep.append(i)
    QuarantineSink(quarantine_uri).write(bad)
    return view_rows(batch.take(keep), vcfg)


def read_shards(uri: str):
    """A Ray Dataset over a shard set's Parquet files (local or object storage)."""
    import ray

    from step_dist import storage

    try:
        from step_dist.signals.shards import read_dataset

        return read_dataset(uri)
    except ImportError:
        fs, path = storage.arrow_filesystem(uri)
        return ray.data.read_parquet(path, filesystem=fs)


def build_view_dataset(data_cfg, quarantine_uri: str | None):
    """shards -> validated views (no targets yet)."""
    ds = read_shards(data_cfg.train)
    return ds.map_batches(
        expand_views,
        fn_kwargs={"view": asdict(data_cfg.view), "validation": dict(data_cfg.validation), "quarantine_uri": quarantine_uri},
        batch_format="pyarrow",
        batch_size=16,
    )


def attach_targets(ds, cfg):
    """views -> views + teacher targets: online (one fixed-size actor pool per teacher) or from the cache."""
    from step_dist.config import from_dict
    from step_dist.teachers import TeacherConfig

    teachers = [
        (te, from_dict(TeacherConfig, {"name": te.name, **te.model}, where=f"teachers.{te.name}.model."))
        for te in cfg.teachers
    ]
    if cfg.targets.mode == "cache":
        from step_dist.teachers.cache import cached_stage

        return cached_stage(ds, cfg.targets.cache, [t for _, t in teachers])
    from step_dist.teachers.stage import teacher_stage

    for te, tcfg in teachers:
        ds = teacher_stage(ds, tcfg, te.pool)
    return ds
