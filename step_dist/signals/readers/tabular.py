"""CSV through pandas: columns are channels; an optional time column gives the sampling rate.

Header rule: the first line is a header unless every field in it is a number or a missing-value marker
(empty, X, NaN, NA...) and at least one is a number; then it is the first data row, the columns have no names
and no time column is detected by name. Two exceptions make a numeric first line a header: it names the
``--csv-time-column``, or it reads exactly ``0,1,...,n-1`` or ``,0,...,n-2`` (the header pandas'
``DataFrame.to_csv`` writes for an unnamed frame, without or with its index), which is also recorded as the
flag ``csv_header_guess``. ``meta.csv_header`` says which was chosen. Rows with more fields than the first
line are an error, never a silently dropped column. Integer columns beside float columns are checked for
float32 exactness as the integers they are (--float32-policy), since the shared array is float64.

A time column (``--csv-time-column``, or one named time / t / timestamp / seconds) is taken in seconds; the
rate is 1 / median spacing, and it always wins: --rate only fills a CSV without a time column. Irregular
spacing is not resampled away: the values stay as they are and ``meta.cadence`` says "irregular" with the
spread. Empty cells and 'X' (missing in SciTS files) become NaN, which the NaN policy then decides.
"""
from __future__ import annotations

import csv
import os
import warnings
from typing import Iterator

import numpy as np

from step_dist.signals.precision import to_float32
from step_dist.signals.readers.base import (
    Piece,
    ReaderError,
    ReaderOptions,
    check_file_size,
    need_rate,
    rate_origin,
    size_problem,
)

TIME_NAMES = ("time", "t", "timestamp", "seconds", "time_s")
MISSING = {"", "x", "nan", "na", "n/a", "null", "none", "-nan"}  # lower-cased; pandas' defaults plus SciTS' 'X'
FIRST_LINE_MAX = 8 << 20  # a header line longer than this is not a header


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


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return "_" not in field  # Python reads 1_000 as a number, pandas does not


def _scan(path: str, where: str) -> tuple[list[str], int]:
    """The first line's fields and the number of lines, read in 16 MiB blocks before pandas allocates anything.
    The count is exact or high (blank lines, newlines inside quotes), so a size check on it is safe."""
    lines, last = 0, b""
    with open(path, "rb") as f:
        while True:  # pandas skips blank lines before the first one too
            first = f.readline(FIRST_LINE_MAX + 1)
            if len(first) > FIRST_LINE_MAX:
                raise ReaderError(f"{where}: the first line is over {FIRST_LINE_MAX >> 20} MiB; is this a CSV of columns?")
            lines, last = lines + first.count(b"\n"), first[-1:] or last
            if first.strip() or not first:
                break
        for block in iter(lambda: f.read(16 << 20), b""):
            lines, last = lines + block.count(b"\n"), block[-1:]
    if not first.strip():
        raise ReaderError(f"{where}: the CSV is empty")
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ReaderError(f"{where}: the first line is not UTF-8 ({e}); save the CSV as UTF-8") from e
    return next(csv.reader([text.rstrip("\r\n")])), lines + (last != b"\n")


def _has_header(fields: list[str], opts: ReaderOptions) -> tuple[bool, bool]:
    """(first line is a header, that was a guess on a numeric line): the rule in the module docstring."""
    stripped = [f.strip() for f in fields]
    numeric = all(f.lower() in MISSING or _is_number(f) for f in stripped) and any(_is_number(f) for f in stripped)
    if not numeric:
        return True, False
    if opts.csv_time_column is not None and opts.csv_time_column in stripped:
        return True, False
    n = len(stripped)
    if stripped == [str(i) for i in range(n)] or stripped == [""] + [str(i) for i in range(n - 1)]:
        return True, True  # pandas' header for an unnamed frame, without or with its index column
    return False, False


def read_csv(path: str, opts: ReaderOptions, uri: str = "") -> Iterator[Piece]:
    import pandas as pd

    where = uri or path
    check_file_size(opts, os.path.getsize(path), where)
    fields, n_lines = _scan(path, where)
    header, guessed = _has_header(fields, opts)
    names = [f.strip() for f in fields] if header else []
    tcol = opts.csv_time_column
    if tcol is None:
        tcol = next((c for c in names if c.lower() in TIME_NAMES), None)
    elif tcol not in names:
        raise ReaderError(f"{where}: no time column {tcol!r}; the header is {names[:20] if header else '(none: the first line is data)'}")
    # Bounded before parsing: the counted lines x the first line's fields are the most pandas can produce
    # (longer rows are an error below), so the record's declared shape is checked like any header's.
    too_big = size_problem(opts, len(fields) - (tcol is not None), n_lines - header, "the CSV")
    if too_big:
        raise ReaderError(f"{where}: {too_big}")
    try:
        with warnings.catch_warnings():
            # a row longer than the header would silently lose its extra fields (or become an index)
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(path, header=0 if header else None, index_col=False, na_values=["X", "x"],
                             float_precision="round_trip")  # exact decimal -> float parsing
    except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise ReaderError(f"{where}: not a readable CSV ({e}); check the delimiter, the encoding and that every "
                          "row has as many fields as the first") from e
    if tcol is not None and tcol not in df.columns:
        tcol = next(c for c in df.columns if str(c).strip() == tcol)  # pandas keeps the spaces around names
    meta: dict = {"csv_header": header}
    rate_found = None
    if tcol is not None:
        rate_found, found_meta = cadence(pd.to_numeric(df[tcol], errors="coerce").to_numpy(np.float64))
        meta.update(found_meta, time_column=str(tcol))
        df = df.drop(columns=[tcol])
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise ReaderError(f"{where}: non-numeric column(s) {bad[:5]}; drop them or make them numbers")
    if df.shape[1] == 0:
        raise ReaderError(f"{where}: no signal columns besides the time column")
    rate = need_rate(opts, rate_found, where, "no time column")
    ints = [c for c in df.columns if pd.api.types.is_integer_dtype(df[c])]
    if ints and len(ints) < df.shape[1]:  # ints beside floats travel as float64: check them as the ints they are
        _, int_flags, inexact = to_float32(df[ints].to_numpy(), opts.float32_policy)
        if inexact:
            raise ReaderError(f"{where}: integer column(s) {[str(c) for c in ints[:5]]}: {inexact}")
        if int_flags:
            meta.setdefault("flags", {}).update(int_flags)
    # the columns' own common dtype (ints stay ints), so the float32 exactness check sees the parsed values
    values = df.to_numpy(np.result_type(*df.dtypes)).T
    piece = Piece(values, rate, [str(c).strip() for c in df.columns] if header else [], meta=meta,
                  rate_source=rate_origin(rate_found))
    if guessed:
        piece.flag("csv_header_guess", f"first line {','.join(fields[:5])}... read as pandas' default column names")
    yield piece
