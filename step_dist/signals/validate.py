"""Per-record rules: is this record fit to train on? Pure functions of a record (or a shard row) and a config.

``validate_record`` never changes anything: it returns the reason a record must be set aside, or None. The
train-time pipeline calls the same function on rows read back from shards. Repairing NaN/inf is a separate,
explicit step (``apply_nan_policy``) that ingest runs first and records in the record's meta, so values are
never altered silently.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from step_dist.signals.record import SignalRecord, decode_values

NAN_POLICIES = ("quarantine", "zero-fill", "interpolate")


@dataclass
class ValidationConfig:
    nan_policy: str = "quarantine"  # quarantine | zero-fill | interpolate (the repair is written to meta)
    min_length: int = 1  # samples
    max_length: int = 0  # samples; 0 = no limit
    max_channels: int = 0  # 0 = no limit
    max_bytes: int = 0  # float32 payload bytes; 0 = no limit
    allow_constant: bool = False  # a flat line carries no signal and z-scores to NaN downstream

    def __post_init__(self) -> None:
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {self.nan_policy!r}")
        for k in ("min_length", "max_length", "max_channels", "max_bytes"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k} must be >= 0, got {getattr(self, k)}")


@dataclass
class Quarantined:
    """A file or record set aside, with why. ``index``/``id`` are None when the whole file failed."""

    uri: str
    reason: str
    index: int | None = None
    id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_record(record: SignalRecord | dict[str, Any], cfg: ValidationConfig) -> str | None:
    """The reason ``record`` (a SignalRecord or a shard row) must be quarantined, or None when it is fit."""
    if isinstance(record, dict):
        row = record
        c, n = int(row["n_channels"]), int(row["length"])
        names = row.get("channel_names") or []
        if len(names) != c:
            return f"mismatched channels: {len(names)} channel names for {c} channels"
        nbytes = len(row["values"])
        if nbytes != 4 * c * n:
            return f"mismatched channel lengths: {nbytes} value bytes, expected 4 x {c} channels x {n} samples"
        values = decode_values(row) if c * n else np.zeros((c, n), np.float32)
    else:
        values = record.values
        c, n = values.shape
        if len(record.channel_names) != c:
            return f"mismatched channels: {len(record.channel_names)} channel names for {c} channels"
    if c == 0 or n == 0:
        return f"zero-length signal ({c} channels x {n} samples)"
    if n < cfg.min_length:
        return f"too short: {n} samples < min_length {cfg.min_length}"
    if cfg.max_length and n > cfg.max_length:
        return f"too long: {n} samples > max_length {cfg.max_length}; split the file or raise the limit"
    if cfg.max_channels and c > cfg.max_channels:
        return f"too many channels: {c} > max_channels {cfg.max_channels}"
    if cfg.max_bytes and 4 * c * n > cfg.max_bytes:
        return f"too large: {4 * c * n} bytes > max_bytes {cfg.max_bytes}"
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(values.size - finite.sum())
        return (
            f"non-finite values: {bad} of {values.size} samples are NaN/inf "
            f"(nan policy 'quarantine'; --nan-policy zero-fill or interpolate repairs them, recorded in meta)"
        )
    if not cfg.allow_constant and n > 1:
        flat = [i for i in range(c) if values[i].min() == values[i].max()]
        if len(flat) == c:
            return f"constant signal: every channel is flat (value {float(values[0, 0])})"
    return None


def apply_nan_policy(record: SignalRecord, cfg: ValidationConfig) -> SignalRecord:
    """Repair NaN/inf per ``cfg.nan_policy`` (a no-op for 'quarantine' or a finite record), recording in
    ``meta.nan_policy`` what was done and how many samples it touched."""
    v = record.values
    finite = np.isfinite(v)
    if cfg.nan_policy == "quarantine" or finite.all():
        return record
    bad = ~finite
    out = v.copy()
    if cfg.nan_policy == "zero-fill":
        out[bad] = 0.0
    else:  # interpolate linearly along time per channel; a channel with no finite sample stays bad
        x = np.arange(v.shape[1])
        for i in range(v.shape[0]):
            ok = finite[i]
            if ok.any() and not ok.all():
                out[i, ~ok] = np.interp(x[~ok], x[ok], v[i, ok]).astype(np.float32)
    meta = dict(record.meta)
    meta["nan_policy"] = {"policy": cfg.nan_policy, "samples_repaired": int(bad.sum())}
    return SignalRecord(
        id=record.id, source=record.source, domain=record.domain, sampling_rate_hz=record.sampling_rate_hz,
        values=out, channel_names=record.channel_names, label=record.label, split=record.split,
        uri=record.uri, index=record.index, meta=meta,
    )


def check(record: SignalRecord, cfg: ValidationConfig) -> tuple[SignalRecord | None, Quarantined | None]:
    """Ingest's per-record step: apply the NaN policy, then validate. Returns (record, None) or (None, entry)."""
    fixed = apply_nan_policy(record, cfg)
    reason = validate_record(fixed, cfg)
    if reason:
        return None, Quarantined(uri=record.uri, index=record.index, id=record.id, reason=reason)
    return fixed, None
