"""FITS binary tables through astropy: light curves (a time column plus one or more flux columns).

The first table HDU with a time column is read. Flux columns are FLUX / PDCSAP_FLUX / SAP_FLUX when present,
else every floating column except time, errors (``*_ERR``) and quality flags. Time is converted to seconds
from the column unit (days when the unit says so or the name is a Julian date). Light curves are often
irregular: samples are kept as they are, in time order, not resampled; the rate is 1 / median spacing and
``meta`` records the cadence, the gaps and the time span. Missing flux (NaN) goes to the NaN policy. The rate
measured from the time column always wins; ``--rate`` only fills a table with fewer than two time stamps.

astropy is handed an open file, never a name: given a name it would download URLs and open s3:// or gs://
through fsspec, and it decompresses gzip/bzip2/zip/xz FITS by their magic bytes; the file must start with the
FITS ``SIMPLE`` card instead, and an archive is refused by name. (FITS itself has no external-data feature
that astropy follows.) Before any table data is read, the header's NAXIS1 x NAXIS2 (+ heap) must fit in the
file and NAXIS2 rows x the flux columns must pass the size limits.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from step_dist.signals.readers.base import (
    Piece,
    ReaderError,
    ReaderOptions,
    check_file_size,
    check_size,
    container_kind,
    need_rate,
    rate_origin,
)
from step_dist.signals.readers.tabular import cadence

TIME_COLS = ("TIME", "MJD", "BJD", "JD", "HJD", "T")
FLUX_COLS = ("FLUX", "PDCSAP_FLUX", "SAP_FLUX")


def _seconds(col, name: str) -> tuple[np.ndarray, str]:
    import astropy.units as u

    t = np.asarray(col, dtype=np.float64)
    unit = getattr(col, "unit", None)
    if unit is not None:
        try:
            return t * float(u.Unit(unit).to(u.s)), str(unit)
        except (u.UnitConversionError, ValueError, TypeError):
            pass
    if name.upper() in ("MJD", "BJD", "JD", "HJD"):
        return t * 86400.0, "d"
    return t, "s (assumed)"


def _filled(col) -> np.ndarray:
    """The column with masked (TNULL) entries as NaN, in the narrowest float dtype that holds it exactly:
    float32 flux stays float32 (the central float32 step then has nothing to round)."""
    a = np.ma.asarray(col)
    return np.ma.filled(a.astype(np.result_type(a.dtype, np.float32)), np.nan)


def _flux_columns(cols, tname: str, where: str) -> list[str]:
    """FLUX / PDCSAP_FLUX / SAP_FLUX, else every scalar floating column except time, errors and quality
    flags: chosen from the header's column definitions, before any data is read."""
    named = [c for c in cols if c.name.upper() in FLUX_COLS]
    vector = [f"{c.name} {c.dtype.shape}" for c in named if c.dtype.shape != ()]
    if vector:  # e.g. a target pixel file: an image per row, which the rows x columns size check would miss
        raise ReaderError(f"{where}: flux columns hold an array per row ({', '.join(vector)}); not a light curve")
    if named:
        return [c.name for c in named]
    return [
        c.name for c in cols
        if c.name != tname and c.dtype.shape == () and (np.issubdtype(c.dtype, np.floating) or c.bscale not in (None, 1))
        and not c.name.upper().endswith("ERR") and "QUALITY" not in c.name.upper()
    ]


def read_fits(path: str, opts: ReaderOptions, uri: str = "") -> Iterator[Piece]:
    from astropy.io import fits
    from astropy.table import Table

    where = uri or path
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        check_file_size(opts, size, where)
        head = fh.read(512)
        what = container_kind(head)
        if what:
            raise ReaderError(f"{where}: this file is {what}, not FITS; ingest never unpacks archives: decompress it first")
        if head[:9] != b"SIMPLE  =":
            raise ReaderError(f"{where}: not a FITS file (it does not start with the SIMPLE card)")
        fh.seek(0)
        with fits.open(fh, memmap=False, lazy_load_hdus=True) as hdul:
            hdu_index = None
            for i, h in enumerate(hdul):  # headers only: data is read on first access
                if isinstance(h, fits.BinTableHDU) and any(c.upper() in TIME_COLS for c in h.columns.names):
                    hdu_index = i
                    break
            if hdu_index is None:
                raise ReaderError(f"{where}: no binary table with a time column ({', '.join(TIME_COLS)}); not a light curve")
            h = hdul[hdu_index]
            tname = next(c for c in h.columns.names if c.upper() in TIME_COLS)
            flux = _flux_columns(h.columns, tname, where)
            if not flux:
                raise ReaderError(f"{where}: no flux columns besides {tname!r}; columns are {list(h.columns.names)[:20]}")
            rows = int(h.header.get("NAXIS2", 0))
            data_bytes = int(h.header.get("NAXIS1", 0)) * rows + int(h.header.get("PCOUNT", 0))
            held = size - hdul.fileinfo(hdu_index)["datLoc"]
            if data_bytes > held:
                raise ReaderError(f"{where}: truncated: HDU {hdu_index} declares {rows} rows = {data_bytes} bytes of table "
                                  f"data, the file holds {max(held, 0)}; re-export or re-download it")
            check_size(opts, len(flux), rows, where, f"HDU {hdu_index} ({rows} rows x {len(flux)} flux columns)")
            table = Table.read(h)
    names = table.colnames
    missing = [c for c in flux if c not in names]
    if missing:
        raise ReaderError(f"{where}: flux columns {missing} were not read back from HDU {hdu_index}")
    t, tunit = _seconds(table[tname], tname)
    order = np.argsort(t, kind="stable")
    finite_t = np.isfinite(t[order])
    order = order[finite_t]  # rows without a time stamp cannot be placed; counted below
    try:
        rate_found, meta = cadence(t[order])
    except ReaderError as e:
        raise ReaderError(f"{where}: {e}") from None
    meta.update(time_column=tname, time_unit=tunit, n_rows_without_time=int((~finite_t).sum()), hdu=hdu_index)
    if order.size and not np.all(order[:-1] < order[1:]):
        meta["reordered_by_time"] = True
    values = np.stack([_filled(table[c])[order] for c in flux])
    # the time column's rate wins; --rate only fills a table that has fewer than two time stamps
    rate = need_rate(opts, rate_found, where, "fewer than 2 time stamps")
    piece = Piece(values, rate, flux, meta=meta)
    piece.rate_source = rate_origin(rate_found)
    yield piece
