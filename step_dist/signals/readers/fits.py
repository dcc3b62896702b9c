"""FITS binary tables through astropy: light curves (a time column plus one or more flux columns).

The first table HDU with a time column is read. Flux columns are FLUX / PDCSAP_FLUX / SAP_FLUX when present,
else every floating column except time, errors (``*_ERR``) and quality flags. Time is converted to seconds
from the column unit (days when the unit says so or the name is a Julian date). Light curves are often
irregular: samples are kept as they are, in time order, not resampled; the rate is 1 / median spacing and
``meta`` records the cadence, the gaps and the time span. Missing flux (NaN) goes to the NaN policy.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from step_dist.signals.readers.base import Piece, ReaderError, ReaderOptions, need_rate
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


def read_fits(path: str, opts: ReaderOptions, uri: str = "") -> Iterator[Piece]:
    from astropy.io import fits
    from astropy.table import Table

    where = uri or path
    with fits.open(path, memmap=False) as hdul:
        hdu_index = None
        for i, h in enumerate(hdul):
            if isinstance(h, fits.BinTableHDU) and any(c.upper() in TIME_COLS for c in h.columns.names):
                hdu_index = i
                break
        if hdu_index is None:
            raise ReaderError(f"{where}: no binary table with a time column ({', '.join(TIME_COLS)}); not a light curve")
        table = Table.read(hdul[hdu_index])
    names = table.colnames
    tname = next(c for c in names if c.upper() in TIME_COLS)
    flux = [c for c in names if c.upper() in FLUX_COLS]
    if not flux:
        flux = [
            c for c in names
            if c != tname and table[c].ndim == 1 and np.issubdtype(table[c].dtype, np.floating)
            and not c.upper().endswith("ERR") and "QUALITY" not in c.upper()
        ]
    if not flux:
        raise ReaderError(f"{where}: no flux columns besides {tname!r}; columns are {names[:20]}")
    t, tunit = _seconds(table[tname], tname)
    order = np.argsort(t, kind="stable")
    finite_t = np.isfinite(t[order])
    order = order[finite_t]  # rows without a time stamp cannot be placed; counted below
    rate_found, meta = cadence(t[order])
    meta.update(time_column=tname, time_unit=tunit, n_rows_without_time=int((~finite_t).sum()), hdu=hdu_index)
    if order.size and not np.all(order[:-1] < order[1:]):
        meta["reordered_by_time"] = True
    values = np.stack([np.ma.filled(np.ma.asarray(table[c]).astype(np.float64), np.nan)[order] for c in flux])
    rate = need_rate(opts, rate_found if opts.rate_hz is None else None, where, "fewer than 2 time stamps")
    yield Piece(values, rate, flux, meta=meta)
