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

from step_dist.data.views import ViewConfig, views_of

VIEW_COLUMNS = ["id", "view_id", "source", "domain", "sampling_rate_hz", "n_channels", "length", "values", "label", "split"]


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


def _row(batch: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    return {k: v[i] for k, v in batch.items()}


def expand_views(batch: dict[str, np.ndarray], view: dict[str, Any], validation: dict[str, Any],
                 quarantine_uri: str | None = None) -> dict[str, list]:
    """Ray Data batch UDF: validate each record, then emit one row per view with the cropped values.

    Invalid records are written to the quarantine sink with their reason and emit no rows."""
    from step_dist.signals.record import SignalRecord
    from step_dist.signals.validate import ValidationConfig, validate_record

    vcfg = ViewConfig(**view)
    val_cfg = ValidationConfig(**validation)
    out: dict[str, list] = {k: [] for k in VIEW_COLUMNS}
    bad: list[dict[str, Any]] = []
    n = len(batch["id"])
    for i in range(n):
        row = _row(batch, i)
        try:
            rec = SignalRecord.from_row(row)
            reason = validate_record(rec, val_cfg)
        except Exception as e:  # noqa: BLE001 - a record that cannot even be decoded is quarantined too
            rec, reason = None, f"undecodable record: {type(e).__name__}: {e}"
        if reason is None and rec.length < vcfg.min_length:
            reason = f"too short for any view: {rec.length} samples < data.view.min_length={vcfg.min_length}"
        if reason is not None:
            bad.append({"id": str(row.get("id")), "uri": str(row.get("uri")), "index": int(row.get("index", -1)),
                        "reason": reason, "stage": "pipeline"})
            continue
        for v in views_of(rec.id, rec.length, vcfg):
            vals = np.ascontiguousarray(rec.values[:, v.start : v.stop], dtype="<f4")
            out["id"].append(rec.id)
            out["view_id"].append(v.view_id)
            out["source"].append(rec.source)
            out["domain"].append(rec.domain)
            out["sampling_rate_hz"].append(float(rec.sampling_rate_hz))
            out["n_channels"].append(int(vals.shape[0]))
            out["length"].append(int(vals.shape[1]))
            out["values"].append(vals.tobytes())
            out["label"].append(rec.label)
            out["split"].append(rec.split)
    QuarantineSink(quarantine_uri).write(bad)
    return out


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
        batch_format="numpy",
        batch_size=16,
    )


def attach_targets(ds, cfg):
    """views -> views + teacher targets, online (actor pools) or from the cache."""
    from step_dist.teachers import TeacherConfig
    from step_dist.config import from_dict

    teachers = [(te, from_dict(TeacherConfig, {"name": te.name, **te.model}, where=f"teachers.{te.name}.model.")) for te in cfg.teachers]
    if cfg.targets.mode == "cache":
        from step_dist.teachers import CachedTargetsUDF

        return ds.map_batches(
            CachedTargetsUDF,
            fn_constructor_kwargs={"cache_uri": cfg.targets.cache, "teachers": [t for _, t in teachers]},
            compute=_pool(1),
            batch_size=64,
            batch_format="numpy",
        )
    from step_dist.teachers.stage import teacher_stage

    for te, tcfg in teachers:
        ds = teacher_stage(ds, tcfg, te.pool)
    return ds


def _pool(size: int):
    import ray

    return ray.data.ActorPoolStrategy(size=size)
