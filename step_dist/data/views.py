"""Deterministic views: which window of a record the student and every teacher see.

A view is a crop of a record at its native rate, chosen by a hash of (seed, record id, view index) so that
the online teacher pools, the target cache and the student all agree on it without talking to each other,
on any worker, in any epoch. A cached target is keyed by (record id, view id, teacher fingerprint).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class ViewConfig:
    max_length: int = 16384  # samples (native rate) a view spans at most; longer records are cropped
    min_length: int = 32  # records shorter than this are quarantined ("too short for any view")
    views_per_record: int = 1  # distinct crops per record (each is its own training example)
    seed: int = 0
    # how long a view is: "max" spans min(record, max_length); "log_uniform" draws each view's span between
    # min_span and that, uniformly in log length, so the student meets the short records (tens to hundreds
    # of samples) that downstream tasks hold and not only max_length crops of long ones
    span: str = "max"
    min_span: int = 0  # shortest log_uniform view (0: min_length)

    def __post_init__(self) -> None:
        if self.min_length < 1 or self.max_length < self.min_length:
            raise ValueError(f"view lengths must satisfy 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}")
        if self.views_per_record < 1:
            raise ValueError("views_per_record must be >= 1")
        if self.span not in ("max", "log_uniform"):
            raise ValueError(f"view span must be 'max' or 'log_uniform', got {self.span!r}")
        if self.min_span and not self.min_length <= self.min_span <= self.max_length:
            raise ValueError(f"view min_span must lie in [min_length, max_length], got {self.min_span}")


@dataclass(frozen=True)
class View:
    record_id: str
    index: int
    start: int
    stop: int

    @property
    def view_id(self) -> str:
        return f"v{self.index}:{self.start}-{self.stop}"

    @property
    def length(self) -> int:
        return self.stop - self.start


def _hash_unit(*parts: object) -> float:
    h = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64


def view_window(record_id: str, length: int, cfg: ViewConfig, index: int = 0) -> View:
    """The crop [start, stop) of a record of ``length`` samples for view ``index``."""
    span = min(length, cfg.max_length)
    if cfg.span == "log_uniform":
        low = min(span, max(cfg.min_span or cfg.min_length, 1))
        u = _hash_unit(cfg.seed, record_id, index, "span")
        span = int(round(math.exp(math.log(low) + u * (math.log(span) - math.log(low)))))
        span = max(low, min(span, min(length, cfg.max_length)))
    room = length - span
    start = int(_hash_unit(cfg.seed, record_id, index) * (room + 1)) if room > 0 else 0
    start = min(start, room)
    return View(record_id, index, start, start + span)


def views_of(record_id: str, length: int, cfg: ViewConfig) -> list[View]:
    return [view_window(record_id, length, cfg, i) for i in range(cfg.views_per_record)]


def crop(values: np.ndarray, view: View) -> np.ndarray:
    return values[:, view.start : view.stop]


VIEW_PASSTHROUGH = ("source", "domain", "label", "split", "channel_names")


def view_rows(batch, view_cfg: ViewConfig | dict[str, Any]):
    """Record rows -> one row per deterministic view (step_dist.data.views), values cropped to the view.

    Takes a pyarrow Table or a mapping of columns and returns a pyarrow Table. Records shorter than
    ``view_cfg.min_length`` give no view here; the pipeline quarantines them with their reason first."""
    if isinstance(view_cfg, dict):
        view_cfg = ViewConfig(**view_cfg)
    import pyarrow as pa

    cols = batch.to_pydict() if isinstance(batch, pa.Table) else {k: list(v) for k, v in batch.items()}
    keep = [k for k in VIEW_PASSTHROUGH if k in cols]
    out: dict[str, list] = {k: [] for k in ("id", "view_id", "view_start", "sampling_rate_hz", "n_channels", "length", "values", *keep)}
    for i, rid in enumerate(cols["id"]):
        c, n = int(cols["n_channels"][i]), int(cols["length"][i])
        if n < view_cfg.min_length:
            continue
        values = np.frombuffer(cols["values"][i], dtype="<f4").reshape(c, n)
        for v in views_of(rid, n, view_cfg):
            out["id"].append(rid)
            out["view_id"].append(v.view_id)
            out["view_start"].append(v.start)
            out["sampling_rate_hz"].append(float(cols["sampling_rate_hz"][i]))
            out["n_channels"].append(c)
            out["length"].append(v.length)
            out["values"].append(np.ascontiguousarray(crop(values, v), dtype="<f4").tobytes())
            for k in keep:
                out[k].append(cols[k][i])
    types = {"id": pa.string(), "view_id": pa.string(), "view_start": pa.int64(), "sampling_rate_hz": pa.float64(),
             "n_channels": pa.int32(), "length": pa.int64(), "values": pa.large_binary(), "source": pa.string(),
             "domain": pa.string(), "label": pa.string(), "split": pa.string(), "channel_names": pa.list_(pa.string())}
    return pa.table({k: pa.array(v, type=types[k]) for k, v in out.items()})
