"""CSV through pandas: columns are channels; an optional time column gives the sampling rate.

A time column (``--csv-time-column``, or one named time / t / timestamp / seconds) is taken in seconds; the
rate is 1 / median spacing. Irregular spacing is not resampled away: the values stay as they are and
``meta.cadence`` says "irregular" with the spread. Empty cells become NaN, which the NaN policy then decides.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from step_dist.signals.readers.base import Piece, ReaderError, ReaderOptions, need_rate

TIME_NAMES = ("time", "t", "timestamp", "seconds", "time_s")


def cadence(t: np.ndarray) -> tuple[float | None, dict]:
    """Rate from time stamps (seconds) plus a note on how regular they are."""
    if t.size < 2:
        return None, {}
    dt = np.diff(t)
    if not np.all(np.isfinite(dt)) or np.any(dt <= 0):
        raise ReaderError("time stamps are not strictly increasing; sort the rows or drop the duplicates")
    med = float(np.median(dt))
    spread = float((dt.max() - dt.min()) / med)
    meta = {"median_dt_s": med, "t0": float(t[0])}
    if spread > 1e-3:
        big = dt > 1.5 * med
        meta.update(cadence="irregular", dt_spread=spread, n_gaps=int(big.sum()), max_gap_s=float(dt.max()))
    else:
        meta["cadence"] = "regular"
    return 1.0 / med, meta


def read_csv(path: str, opts: ReaderOptions, uri: str = "") -> Iterator[Piece]:
    import pandas as pd

    where = uri or path
    try:
        df = pd.read_csv(path, float_precision="round_trip")  # exact decimal -> float parsing
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise ReaderError(f"{where}: not a readable CSV ({e}); check the delimiter and encoding") from e
    tcol = opts.csv_time_column
    if tcol is None:
        tcol = next((c for c in df.columns if str(c).strip().lower() in TIME_NAMES), None)
    elif tcol not in df.columns:
        raise ReaderError(f"{where}: no time column {tcol!r}; columns are {list(df.columns)[:20]}")
    meta: dict = {}
    rate_found = None
    if tcol is not None:
        rate_found, meta = cadence(pd.to_numeric(df[tcol], errors="coerce").to_numpy(np.float64))
        df = df.drop(columns=[tcol])
        meta["time_column"] = str(tcol)
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise ReaderError(f"{where}: non-numeric column(s) {bad[:5]}; drop them or make them numbers")
    if df.shape[1] == 0:
        raise ReaderError(f"{where}: no signal columns besides the time column")
    rate = need_rate(opts, rate_found if opts.rate_hz is None else None, where, "no time column")
    yield Piece(df.to_numpy(np.float64).T, rate, [str(c) for c in df.columns], meta=meta)
