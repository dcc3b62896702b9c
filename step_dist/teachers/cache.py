"""The target cache: teacher targets computed once, read by every later run and sweep.

Layout under the cache URI, one folder per cache-targets run:

    <cache>/<run>/part-*.parquet    id, view_id, and per teacher fp_<fingerprint[:16]>{,_tokens,_dim}
    <cache>/<run>/_manifest.json    written last: teachers (name, full fingerprint), files with sizes and rows

A run folder without a manifest is unfinished and never read; only the files the manifest names are read,
each checked against its recorded size, so a partial or stray shard never counts. A target is found by
(record id, view id, teacher fingerprint): a changed checkpoint or preparation changes the fingerprint and
finds nothing.
"""
from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from step_dist import storage
from step_dist.teachers.protocol import TeacherConfig, TeacherError
from step_dist.teachers.stage import _as_config, add_target_columns, like_input, to_table

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
CACHE_FORMAT = 1


def fp_column(fingerprint: str) -> str:
    return f"fp_{fingerprint[:16]}"


def complete_runs(cache_uri: str) -> list[tuple[str, dict[str, Any]]]:
    """(run URI, manifest) for every finished run under the cache, newest first."""
    try:
        manifests = [u for u in storage.list_files(cache_uri) if u.rsplit("/", 1)[-1] == MANIFEST]
    except FileNotFoundError:
        return []
    runs = []
    for m in manifests:
        try:
            data = json.loads(storage.read_bytes(m))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            log.warning("target cache: %s is not valid JSON (%s); that run is skipped", m, e)
            continue
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
            continue
        problem = _manifest_problem(data)
        if problem:
            log.warning("target cache: %s is malformed (%s); that run is skipped", m, problem)
            continue
        runs.append((m.rsplit("/", 1)[0], data))
    return sorted(runs, key=lambda r: _created(r[1]), reverse=True)


def _created(manifest: dict[str, Any]) -> float:
    value = manifest.get("created", 0)
    return float(value) if isinstance(value, (int, float)) else 0.0


def _manifest_problem(data: dict[str, Any]) -> str | None:
    """What a cache run's manifest lacks for ``find_run`` / ``load_targets``; shard paths must name files of
    the run folder itself (a '../' path would read outside it)."""
    teachers, files = data.get("teachers"), data.get("files")
    if not isinstance(teachers, list) or not all(isinstance(t, dict) and isinstance(t.get("fingerprint"), str)
                                                 and isinstance(t.get("name"), str) for t in teachers):
        return "'teachers' is not a list of {name, fingerprint}"
    if not isinstance(files, list):
        return "'files' is not a list"
    for i, f in enumerate(files):
        if not (isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("bytes"), int)):
            return f"files[{i}] is not {{path, bytes}}"
        if "/" in f["path"] or "\\" in f["path"] or f["path"].startswith("."):
            return f"files[{i}] path {f['path']!r} is not a file of the run folder"
    return None


def find_run(cache_uri: str, fingerprint: str, name: str) -> tuple[str, dict[str, Any]]:
    runs = complete_runs(cache_uri)
    for run_uri, man in runs:
        if any(t["fingerprint"] == fingerprint for t in man["teachers"]):
            return run_uri, man
    held = sorted({f"{t['name']}:{t['fingerprint'][:12]}" for _, m in runs for t in m["teachers"]})
    raise TeacherError(
        f"no complete target cache for teacher {name} (fingerprint {fingerprint[:12]}) under {cache_uri}; "
        f"it holds {held or 'no finished runs'}. The checkpoint or preparation changed, or the cache was never "
        "written: run `step-dist cache-targets --config ...` with this teacher config"
    )


def load_targets(run_uri: str, manifest: dict[str, Any], fingerprint: str) -> dict[tuple[str, str], tuple[bytes, int, int]]:
    """(id, view_id) -> (target bytes, T, D) for one teacher from one finished run."""
    col = fp_column(fingerprint)
    out: dict[tuple[str, str], tuple[bytes, int, int]] = {}
    fs, _ = storage.arrow_filesystem(run_uri)
    for shard in manifest["files"]:
        uri = f"{run_uri}/{shard['path']}"
        path = storage.arrow_filesystem(uri)[1]
        info = fs.get_file_info(path)
        if info.size != shard["bytes"]:
            raise TeacherError(f"target cache shard {uri} has {info.size} bytes, the manifest says {shard['bytes']}: "
                               "the cache is damaged; write it again with step-dist cache-targets")
        with fs.open_input_file(path) as f:
            t = pq.read_table(f, columns=["id", "view_id", col, f"{col}_tokens", f"{col}_dim"]).to_pydict()
        for rid, vid, data, n, d in zip(t["id"], t["view_id"], t[col], t[f"{col}_tokens"], t[f"{col}_dim"]):
            if data is None or n is None or d is None or n < 0 or d < 0 or len(data) != 4 * int(n) * int(d):
                raise TeacherError(f"target cache shard {uri}: record {rid} view {vid} holds {len(data or b'')} bytes "
                                   f"for {n} tokens x {d} dims of float32: the cache is damaged; write it again "
                                   "with step-dist cache-targets")
            out[(rid, vid)] = (data, int(n), int(d))
    return out


class CachedTargetsUDF:
    """map_batches class UDF: adds the same t_NAME columns as TeacherTargetsUDF, read from the cache.

    Teachers are never built here: only their checkpoint files are hashed to find the fingerprint.
    ``on_miss``: "error" (default; names the record) or "no_target" (T = 0, counted and logged)."""

    def __init__(self, cache_uri: str, teachers: list[TeacherConfig | dict[str, Any]], on_miss: str = "error"):
        from step_dist.teachers.registry import fingerprint

        if on_miss not in ("error", "no_target"):
            raise ValueError(f"on_miss must be 'error' or 'no_target', got {on_miss!r}")
        self.cache_uri, self.on_miss, self.misses = cache_uri, on_miss, 0
        self.tables = []
        for c in teachers:
            cfg = _as_config(c)
            fp = fingerprint(cfg)
            run_uri, man = find_run(cache_uri, fp, cfg.name)
            targets = load_targets(run_uri, man, fp)
            dim = next(iter(targets.values()))[2] if targets else 0
            self.tables.append((cfg.name, fp, run_uri, targets, dim))

    def __call__(self, batch):
        table = to_table(batch)
        ids, vids = table["id"].to_pylist(), table["view_id"].to_pylist()
        for name, fp, run_uri, targets, dim in self.tables:
            data, tokens = [], []
            for rid, vid in zip(ids, vids):
                hit = targets.get((rid, vid))
                if hit is None:
                    if self.on_miss == "error":
                        raise TeacherError(f"record {rid} (view {vid}) is not in the target cache {run_uri} for "
                                           f"teacher {name}: re-run step-dist cache-targets over this shard set "
                                           "with the same view config, or set on_miss: no_target")
                    self.misses += 1
                    log.warning("target cache miss: teacher %s record %s view %s (no target)", name, rid, vid)
                    hit = (b"", 0, dim)
                data.append(hit[0])
                tokens.append(hit[1])
            table = add_target_columns(table, name, data, tokens, dim)
        return like_input(table, batch)


def cached_stage(ds, cache_uri: str, teachers: list[TeacherConfig | dict[str, Any]], on_miss: str = "error",
                 pool_size: int = 1, batch_size: int = 64):
    import dataclasses

    from ray.data import ActorPoolStrategy

    cfgs = [dataclasses.asdict(_as_config(t)) for t in teachers]
    return ds.map_batches(CachedTargetsUDF, fn_constructor_kwargs={"cache_uri": cache_uri, "teachers": cfgs, "on_miss": on_miss},
                          compute=ActorPoolStrategy(size=pool_size), batch_size=batch_size, batch_format="pyarrow")


def to_cache_columns(batch: pa.Table, names_to_fp: dict[str, str], counter: Any = None) -> pa.Table:
    """Keep the key and the targets, renamed by fingerprint (a teacher's name is not part of its identity).
    ``counter``: an actor with ``add(n)`` told of every batch done (the driver's progress line)."""
    if counter is not None:
        counter.add.remote(batch.num_rows)  # fire and forget: the count is for display only
    cols = {"id": batch["id"], "view_id": batch["view_id"]}
    for name, fp in names_to_fp.items():
        c = fp_column(fp)
        cols[c] = batch[f"t_{name}"]
        cols[f"{c}_tokens"] = batch[f"t_{name}_tokens"]
        cols[f"{c}_dim"] = batch[f"t_{name}_dim"]
    return pa.table(cols)


def decode_target(data: bytes, tokens: int, dim: int) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4").reshape(int(tokens), int(dim)) if tokens else np.zeros((0, int(dim)), np.float32)
