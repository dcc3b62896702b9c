"""MiniSEED, SAC and every other format obspy reads.

Traces with the same id are merged first (gaps become NaN, then the NaN policy decides). Traces of one
station (network.station.location) that share rate, start and length become the channels of one record
(e.g. the Z/N/E components); any other trace is a record of its own.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from step_dist.signals.readers.base import Piece, ReaderOptions


def read_seismic(path: str, opts: ReaderOptions, fmt: str | None = None) -> Iterator[Piece]:
    import obspy

    st = obspy.read(path, format=fmt) if fmt else obspy.read(path)
    try:
        st.merge(method=1, fill_value=None)  # masked where there are gaps
    except Exception:  # noqa: BLE001 - differing dtypes/rates for one id: keep the traces as read
        pass
    yield from stream_pieces(st)


def stream_pieces(st) -> Iterator[Piece]:
    groups: dict[tuple, list] = {}
    for tr in st:
        s = tr.stats
        key = (s.network, s.station, s.location, float(s.sampling_rate), str(s.starttime), int(s.npts))
        groups.setdefault(key, []).append(tr)
    for (net, sta, loc, rate, start, _), traces in groups.items():
        data = []
        for tr in traces:
            d = tr.data
            data.append(np.ma.filled(d.astype(np.float64), np.nan) if np.ma.isMaskedArray(d) else d)
        meta = {"station": ".".join(p for p in (net, sta, loc) if p), "start": start, "ids": [t.id for t in traces]}
        if not np.issubdtype(np.asarray(data[0]).dtype, np.number):
            yield Piece(None, rate, meta=meta, error=f"trace {traces[0].id} holds non-numeric data")
            continue
        yield Piece(np.stack(data), rate, [t.stats.channel or t.id for t in traces], meta=meta)
