"""float32 exactness: shards store samples as float32; what happens to values float32 cannot hold.

Readers hand over samples in the file's own dtype. ``to_float32`` converts them once and says what the
conversion would change, so nothing is altered silently:

- overflow (a finite value beyond float32's range, ~3.4e38) would become inf: always quarantined, with its
  own reason (never "NaN/inf", so a NaN policy can never zero real samples);
- underflow (a non-zero float64 value below float32's smallest normal, ~1.2e-38) would become 0 or lose
  precision as a subnormal;
- integers above 2**24 (int32/int64 counts, e.g. broadband seismometers) would be rounded: float32 keeps 24
  bits of mantissa.

The last two follow the policy: ``quarantine`` (default) sets the record aside naming the count and the fix;
``round`` keeps the rounded values and records what changed in ``meta.flags`` (counted in the manifest).
Ordinary float64 values inside float32's normal range are stored at float32 precision, as the record
schema says; that is not flagged (every decimal CSV would be), but ``meta.source_dtype`` keeps the origin.
"""
from __future__ import annotations

from typing import Any

import numpy as np

F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)  # smallest normal
INT_EXACT = 1 << 24  # every integer of magnitude <= 2**24 is exact in float32


def to_float32(values: np.ndarray, policy: str = "quarantine") -> tuple[np.ndarray | None, dict[str, Any], str | None]:
    """(float32 values or None, flags for meta.flags, quarantine reason or None)."""
    v = np.asarray(values)
    flags: dict[str, Any] = {}
    if v.dtype == np.float32:
        return np.ascontiguousarray(v), flags, None
    if v.dtype == bool or (np.issubdtype(v.dtype, np.integer) and v.dtype.itemsize <= 2) or v.dtype == np.float16:
        return np.ascontiguousarray(v, dtype=np.float32), flags, None
    if np.issubdtype(v.dtype, np.integer):
        return _from_integers(v, policy)
    if np.issubdtype(v.dtype, np.floating):
        return _from_floats(v, policy)
    return None, flags, f"samples of dtype {v.dtype} cannot be stored as float32; save real numbers"


def _from_integers(v: np.ndarray, policy: str) -> tuple[np.ndarray | None, dict[str, Any], str | None]:
    out = np.ascontiguousarray(v, dtype=np.float32)
    if v.size == 0 or (int(v.max()) <= INT_EXACT and int(v.min()) >= -INT_EXACT):
        return out, {}, None
    # Which values changed: compare in the integer domain (float64 would itself round int64 above 2**53).
    big = (v > INT_EXACT) | (v < -INT_EXACT)
    back = out[big].astype(np.float64)
    orig = v[big]
    changed = back != orig.astype(np.float64) if v.dtype.itemsize <= 4 else _int64_changed(out[big], orig)
    n = int(np.count_nonzero(changed))
    if n == 0:
        return out, {}, None
    peak = int(np.abs(orig.astype(np.float64)).max())
    if policy != "round":
        return None, {}, (
            f"inexact in float32: {n} integer sample(s) above 2**24 (max |x| = {peak}) would be rounded "
            "(float32 keeps 24 bits); pass --float32-policy round to keep them rounded (recorded in meta), or "
            "rescale the data"
        )
    err = float(np.abs(back[changed] - orig[changed].astype(np.float64)).max())
    return out, {"float32_rounded_integers": {"samples": n, "max_abs_error": err, "max_abs": peak}}, None


def _int64_changed(f32: np.ndarray, orig: np.ndarray) -> np.ndarray:
    """For 64-bit integers: a float32 value beyond int64's range, or one whose integer differs."""
    lim = float(np.iinfo(orig.dtype).max)
    out_of_range = np.abs(f32.astype(np.float64)) >= lim
    as_int = np.where(out_of_range, 0, f32).astype(orig.dtype)
    return out_of_range | (as_int != orig)


def _from_floats(v: np.ndarray, policy: str) -> tuple[np.ndarray | None, dict[str, Any], str | None]:
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        out = np.ascontiguousarray(v, dtype=np.float32)
    if v.size == 0:
        return out, {}, None
    finite = np.isfinite(v)
    overflow = finite & ~np.isfinite(out)
    n_over = int(np.count_nonzero(overflow))
    if n_over:
        peak = float(np.abs(v[overflow]).max())
        return None, {}, (
            f"overflow: {n_over} finite sample(s) exceed float32's range (max |x| = {peak:.3g} > {F32_MAX:.3g}); "
            "rescale the data (e.g. other units) before ingest"
        )
    tiny = finite & (v != 0) & (np.abs(v) < F32_TINY)
    n_tiny = int(np.count_nonzero(tiny))
    if not n_tiny:
        return out, {}, None
    smallest = float(np.abs(v[tiny]).min())
    zeroed = int(np.count_nonzero(out[tiny] == 0))
    if policy != "round":
        return None, {}, (
            f"underflow: {n_tiny} non-zero sample(s) below float32's smallest normal {F32_TINY:.3g} "
            f"(min |x| = {smallest:.3g}; {zeroed} would become 0); rescale the data (e.g. other units), or pass "
            "--float32-policy round to keep them rounded (recorded in meta)"
        )
    return out, {"float32_underflow": {"samples": n_tiny, "zeroed": zeroed, "min_abs": smallest}}, None
