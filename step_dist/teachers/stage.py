"""The Ray Data stage that runs a teacher: a class UDF on a fixed-size actor pool, placed on teacher nodes.

Rows in: id, view_id, sampling_rate_hz, n_channels, length, values (float32 bytes [C, length] of the view),
optionally channel_names. Rows out: the same plus, per teacher NAME, ``t_NAME`` (float32 bytes [T, D]),
``t_NAME_tokens`` (T; 0 = no target, e.g. the view is shorter than the teacher's minimum) and ``t_NAME_dim``.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import pyarrow as pa

from step_dist.data.views import ViewConfig
from step_dist.teachers.pool import PoolConfig  # noqa: F401 - re-exported (teachers.PoolConfig)
from step_dist.teachers.protocol import TeacherConfig

log = logging.getLogger(__name__)


def target_columns(name: str) -> tuple[str, str, str]:
    return f"t_{name}", f"t_{name}_tokens", f"t_{name}_dim"


def _as_config(c: TeacherConfig | dict[str, Any]) -> TeacherConfig:
    if isinstance(c, TeacherConfig):
        return c
    from step_dist.config import from_dict

    return from_dict(TeacherConfig, c, where="teacher.")


def to_table(batch: pa.Table | dict[str, Any]) -> pa.Table:
    """Stages take pyarrow or numpy batches (the pipeline may use either); work happens on Arrow."""
    if isinstance(batch, pa.Table):
        return batch
    cols = {}
    for k, v in batch.items():
        if k == "values" or k.startswith("t_") and not k.endswith(("_tokens", "_dim")):
            cols[k] = pa.array([bytes(x) for x in v], type=pa.large_binary())
        elif k == "channel_names":
            cols[k] = pa.array([list(x) if x is not None else None for x in v], type=pa.list_(pa.string()))
        else:
            cols[k] = pa.array(list(v) if getattr(v, "dtype", None) == object else v)
    return pa.table(cols)


def like_input(table: pa.Table, batch: pa.Table | dict[str, Any]):
    if isinstance(batch, pa.Table):
        return table
    return {c: table[c].to_numpy(zero_copy_only=False) for c in table.column_names}


def _decode(table: pa.Table) -> list[tuple[str, np.ndarray, float, list[str] | None]]:
    cols = table.to_pydict()
    names = cols.get("channel_names")
    out = []
    for i, rid in enumerate(cols["id"]):
        c, n = int(cols["n_channels"][i]), int(cols["length"][i])
        v = np.frombuffer(cols["values"][i], dtype="<f4")
        if v.size != c * n:
            raise ValueError(f"record {rid}: values hold {v.size} samples but n_channels x length = {c} x {n}")
        label = rid if "view_id" not in cols else f"{rid} (view {cols['view_id'][i]})"
        out.append((label, v.reshape(c, n), float(cols["sampling_rate_hz"][i]), names[i] if names else None))
    return out


def run_teacher(teacher, records) -> tuple[list[bytes], list[int]]:
    """Prepare and embed one batch; records too short for the teacher get T = 0."""
    prepared = [teacher.prepare(v, rate, rid, ch, allow_short=True) for rid, v, rate, ch in records]
    tokens = teacher.embed(prepared, [r[0] for r in records])
    for (rid, *_), p, t in zip(records, prepared, tokens):
        want = teacher.expected_tokens(p.shape[1])
        if t.shape[0] != want:
            raise RuntimeError(f"teacher {teacher.name}, record {rid}: {t.shape[0]} tokens, expected {want}")
    return [np.ascontiguousarray(t, dtype="<f4").tobytes() for t in tokens], [int(t.shape[0]) for t in tokens]


class TeacherTargetsUDF:
    """map_batches class UDF (batch_format="pyarrow"): loads its teachers once per actor, then adds targets."""

    def __init__(self, teachers: list[TeacherConfig | dict[str, Any]]):
        from step_dist.teachers.registry import build_teacher

        self.teachers = [build_teacher(_as_config(c)) for c in teachers]

    def __call__(self, batch: pa.Table | dict[str, Any]):
        table = to_table(batch)
        records = _decode(table)
        for t in self.teachers:
            data, tokens = run_teacher(t, records)
            table = add_target_columns(table, t.name, data, tokens, t.dim)
        return like_input(table, batch)


def add_target_columns(batch: pa.Table, name: str, data: list[bytes], tokens: list[int], dim: int) -> pa.Table:
    col, tcol, dcol = target_columns(name)
    for c in (col, tcol, dcol):
        if c in batch.column_names:
            batch = batch.drop_columns([c])
    batch = batch.append_column(col, pa.array(data, type=pa.large_binary()))
    batch = batch.append_column(tcol, pa.array(tokens, type=pa.int64()))
    return batch.append_column(dcol, pa.array([int(dim)] * len(tokens), type=pa.int64()))


def as_pool(pool: Any) -> PoolConfig:
    """A PoolConfig from a PoolConfig, a mapping, or any config object with the same field names."""
    if pool is None:
        return PoolConfig()
    if isinstance(pool, PoolConfig):
        return pool
    if not isinstance(pool, dict):
        pool = {f.name: getattr(pool, f.name) for f in dataclasses.fields(PoolConfig) if hasattr(pool, f.name)}
    from step_dist.config import from_dict

    return from_dict(PoolConfig, pool, where="pool.")


def map_kwargs(pool: PoolConfig | Any) -> dict[str, Any]:
    """Placement for a teacher pool: fixed size, GPUs per actor, node group by label or custom resource."""
    from ray.data import ActorPoolStrategy

    pool = as_pool(pool)
    kw: dict[str, Any] = dict(compute=ActorPoolStrategy(size=pool.size), batch_size=pool.batch_size,
                              batch_format="pyarrow", num_cpus=pool.num_cpus,
                              max_restarts=pool.max_restarts, max_task_retries=pool.max_task_retries)
    if pool.num_gpus:
        kw["num_gpus"] = pool.num_gpus
    if pool.label_selector:
        kw["label_selector"] = dict(pool.label_selector)
    if pool.resources:
        kw["resources"] = dict(pool.resources)
    return kw


def teacher_stage(ds, teacher_cfg: TeacherConfig | dict[str, Any], pool_cfg: PoolConfig | Any = None):
    """``ds`` with this teacher's target columns, computed on its own fixed-size actor pool."""
    import warnings

    cfg = _as_config(teacher_cfg)
    with warnings.catch_warnings():
        # Ray 2.60 deprecates ray_remote_args but offers no named parameter for an actor pool's max_restarts and
        # max_task_retries; its own default (-1, unlimited) loops forever on a teacher that dies on every batch,
        # so the bounded values go through ray_remote_args until Ray names them, with the notice silenced here
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(TeacherTargetsUDF, fn_constructor_kwargs={"teachers": [dataclasses.asdict(cfg)]},
                              **map_kwargs(pool_cfg))


# views live in step_dist.data.views; kept here under its old name for callers of the stage module
from step_dist.data.views import view_rows as expand_views  # noqa: E402
