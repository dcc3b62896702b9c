"""MiniSEED (and the data part of full SEED), SAC, GSE2 and SEG-Y through obspy's format plugins.

Not ``obspy.read``: it guesses the format from the bytes (one of the formats it tries is obspy's own pickle,
so a data file can run code), unpacks tar/zip archives first and reads the path as a glob pattern. Here the
extension names exactly one plugin, whose reader gets the open file (MiniSEED: its bytes), never a name, so
nothing is globbed, unpickled or unpacked; the bytes must look like that format first, and an archive or a
pickle is refused by name.

Shapes are checked against the size limits from the headers (a header-only pass) before any sample is
decoded, then again on what was decoded before traces are stacked. Traces keep their native dtype (int32
counts stay int32); gaps make masked arrays, which become float64 with NaN for the NaN policy.

Traces with the same id are merged (gaps become NaN). Traces of one station (network.station.location) that
share rate, start and length become the channels of one record (e.g. the Z/N/E components); any other trace
is a record of its own. SEG-Y traces are never merged: they are receivers of one shot, not pieces of one time
series, and they all share one empty id (merging would overwrite all but one of them).
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
    container_kind,
    rejected,
    size_problem,
)

# extension -> obspy format; nothing else is read (no pickle, no archives, no sniffing).
FORMATS = {
    ".mseed": "MSEED", ".miniseed": "MSEED", ".ms": "MSEED",
    ".seed": "MSEED",  # full SEED: libmseed reads its data records and skips the control headers
    # binary SAC only: obspy's check for alphanumeric SAC reads the whole file into Python strings first
    ".sac": "SAC", ".gse2": "GSE2", ".gse": "GSE2", ".segy": "SEGY", ".sgy": "SEGY",
}
NAMES = {"MSEED": "MiniSEED", "SAC": "SAC", "GSE2": "GSE2", "SEGY": "SEG-Y"}

def _is_format(fmt: str, fh) -> bool:
    if fmt == "MSEED":
        from obspy.io.mseed.core import _is_mseed as is_fmt
    elif fmt == "SAC":
        from obspy.io.sac.core import _is_sac as is_fmt
    elif fmt == "GSE2":
        from obspy.io.gse2.core import _is_gse2 as is_fmt
    else:
        from obspy.io.segy.core import _is_segy as is_fmt
    fh.seek(0)
    try:
        return bool(is_fmt(fh))
    finally:
        fh.seek(0)


def _parse(fmt: str, fh, buf: np.ndarray | None, headonly: bool):
    """The plugin's own reader on the open file (or, for MiniSEED, on its bytes): never a name to glob."""
    fh.seek(0)
    if fmt == "MSEED":
        from obspy.io.mseed.core import _read_mseed

        return _read_mseed(buf, headonly=headonly)
    if fmt == "SAC":
        from obspy.io.sac.core import _read_sac

        return _read_sac(fh, headonly=headonly)  # checks npts against the file size
    if fmt == "GSE2":
        from obspy.io.gse2.core import _read_gse2

        return _read_gse2(fh, headonly=headonly)
    if headonly:  # obspy.io.segy.core._read_segy decodes every trace even with headonly=True
        from obspy.io.segy.segy import _read_segy as read_segy_file

        return read_segy_file(fh, headonly=True).traces  # .npts per trace, data skipped
    from obspy.io.segy.core import _read_segy

    return _read_segy(fh)


def _decode(path: str, opts: ReaderOptions, where: str, fmt: str):
    """(Stream, file bytes, bytes no data record covered) after the container, format and size checks.
    One open file serves every step (magic check, header pass, decode): the plugins read the file object
    itself (MiniSEED: its bytes), so nothing re-resolves the name (obspy.read would glob it)."""
    import obspy

    ext, name = os.path.splitext(path)[1].lower(), NAMES[fmt]
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        check_file_size(opts, size, where)
        first = fh.read(512)
        what = container_kind(first)
        if what:
            raise ReaderError(
                f"{where}: this {ext} file is {what}, not {name}; refused: ingest never unpickles or unpacks "
                "archives (they can run code or hide other files). Unpack it yourself and ingest the waveform files inside"
            )
        if not _is_format(fmt, fh):
            if fmt == "MSEED" and first[6:7] == b"V":
                raise ReaderError(f"{where}: a SEED volume without data records (dataless SEED): no waveforms to read")
            raise ReaderError(f"{where}: the bytes do not look like {name} (the format its {ext} extension names); "
                              "fix the extension or re-export the file")
        buf = None
        if fmt == "MSEED":  # libmseed parses a buffer: a writable one, as obspy's own copy-on-write memmap is
            buf = np.empty(size, dtype=np.int8)
            buf = buf[: fh.readinto(memoryview(buf).cast("B"))]
        head = _parse(fmt, fh, buf, headonly=True)
        reason = _declared_problem(opts, head, fmt)
        if reason:
            raise ReaderError(f"{where}: {reason}")
        unread = _mseed_unread_bytes(buf, head) if fmt == "MSEED" else 0
        del head
        st = obspy.Stream(list(_parse(fmt, fh, buf, headonly=False)))
    if not len(st):
        raise ReaderError(f"{where}: no {name} data records found (truncated, or a dataless SEED volume?)")
    return st, size, unread


def read_seismic(path: str, opts: ReaderOptions | None, uri: str = "") -> Iterator[Piece]:
    where = uri or path
    opts = opts or ReaderOptions()  # the demo corpus reads obspy's own test files without options
    ext = os.path.splitext(path)[1].lower()
    fmt = FORMATS.get(ext)
    if fmt is None:
        raise ReaderError(f"{where}: {ext!r} is not a seismic format read here ({' '.join(sorted(FORMATS))})")
    st, size, unread = _decode(path, opts, where, fmt)
    if fmt == "SEGY":  # every SEG-Y trace has the id '...': name the channels by position
        for i, tr in enumerate(st):
            tr.stats.channel = tr.stats.channel or f"trace{i}"
    keep = []
    for tr in st:
        rate = float(tr.stats.sampling_rate)
        if np.isfinite(rate) and rate > 0:
            keep.append(tr)
        else:
            yield rejected(f"trace {tr.id} has sampling rate {rate}: not a sampled time series "
                           "(a log or text channel?)", ids=[tr.id])
    st.traces = keep
    replaced: dict[str, int] = {}
    if fmt != "SEGY":
        try:
            overlaps = _overlaps(st)
            st.merge(method=1, fill_value=None)  # masked where there are gaps
            replaced = overlaps
        except Exception:  # noqa: BLE001 - differing dtypes/rates for one id: keep the traces as read
            pass
    for piece in stream_pieces(st, opts):
        if unread:
            piece.flag("unread_bytes", {"bytes": unread, "file_bytes": size})  # e.g. a truncated last record
        lost = {i: replaced[i] for i in piece.meta.get("ids", []) if i in replaced}
        if lost:  # where two traces of one id overlap, obspy's merge keeps the later one's samples
            piece.flag("overlap", {"samples_replaced": lost, "kept": "later trace"})
        yield piece


def _overlaps(st) -> dict[str, int]:
    """Samples per trace id that lie under a later trace of the same id (merging replaces them)."""
    by_id: dict[str, list] = {}
    for tr in st:
        by_id.setdefault(tr.id, []).append(tr)
    out = {}
    for tid, ts in by_id.items():
        end, n = None, 0
        for t in sorted(ts, key=lambda t: t.stats.starttime):
            if end is not None and t.stats.starttime <= end:
                n += int(round((min(end, t.stats.endtime) - t.stats.starttime) * t.stats.sampling_rate)) + 1
            end = t.stats.endtime if end is None else max(end, t.stats.endtime)
        if n:
            out[tid] = n
    return out


def _declared_shapes(traces) -> dict[tuple, int]:
    """{(station, rate, start, npts): channels} as ``stream_pieces`` will group them after the merge, from
    header-only traces: merging spans a trace id from its first sample to its last (two tiny records a year
    apart allocate a year). Traces without a usable rate are rejected before the merge, so left out here."""
    by_id: dict[str, list] = {}
    for tr in traces:
        rate = float(tr.stats.sampling_rate)
        if np.isfinite(rate) and rate > 0:
            by_id.setdefault(tr.id, []).append(tr)
    if not all(len({float(t.stats.sampling_rate) for t in ts}) == 1 for ts in by_id.values()):
        by_id = {str(i): [t] for i, t in enumerate(t for ts in by_id.values() for t in ts)}  # merge will fail
    groups: dict[tuple, int] = {}
    for ts in by_id.values():
        s, rate = ts[0].stats, float(ts[0].stats.sampling_rate)
        start = min(t.stats.starttime for t in ts)
        end = max(t.stats.starttime + (int(t.stats.npts) - 1) / rate for t in ts)
        key = (".".join(p for p in (s.network, s.station, s.location) if p), rate, str(start),
               int(round((end - start) * rate)) + 1)
        groups[key] = groups.get(key, 0) + 1
    return groups


def _declared_problem(opts: ReaderOptions, traces, fmt: str) -> str | None:
    if fmt == "SEGY":  # header-only SEGYTrace objects (no stats): at most one record per trace length
        shapes: dict[tuple, int] = {}
        for t in traces:
            shapes[("traces", 0.0, "", int(t.npts))] = shapes.get(("traces", 0.0, "", int(t.npts)), 0) + 1
    else:
        shapes = _declared_shapes(traces)
    for (station, _, _, npts), n_channels in shapes.items():
        reason = size_problem(opts, n_channels, npts, f"{station or 'traces'} (from the headers)")
        if reason:
            return reason
    return None


def _mseed_unread_bytes(data: np.ndarray, head) -> int:
    """Bytes of a MiniSEED file that no decoded data record covers: libmseed skips a truncated last record
    or a corrupt one without a word. Leading SEED control headers (a full SEED volume) do not count."""
    covered = sum(int(t.stats.mseed.number_of_records) * int(t.stats.mseed.record_length) for t in head)
    skipped = 0
    if len(head):
        reclen = int(head[0].stats.mseed.record_length)
        while skipped + 7 <= len(data) and bytes(data[skipped + 6: skipped + 7]) in (b"V", b"A", b"S", b"T"):
            skipped += reclen
    return max(0, len(data) - skipped - covered)


def stream_pieces(st, opts: ReaderOptions | None = None) -> Iterator[Piece]:
    groups: dict[tuple, list] = {}
    for tr in st:
        s = tr.stats
        key = (s.network, s.station, s.location, float(s.sampling_rate), str(s.starttime), int(s.npts))
        groups.setdefault(key, []).append(tr)
    for (net, sta, loc, rate, start, npts), traces in groups.items():
        meta = {"station": ".".join(p for p in (net, sta, loc) if p), "start": start, "ids": [t.id for t in traces]}
        # the declared shapes were checked before decoding; this holds for what was actually decoded
        reason = size_problem(opts, len(traces), npts, f"station {meta['station'] or traces[0].id}") if opts else None
        if reason:
            yield rejected(reason, **meta)
            continue
        if not all(np.issubdtype(np.asarray(t.data).dtype, np.number) for t in traces):
            yield Piece(None, rate, meta=meta, error=f"trace {traces[0].id} holds non-numeric data")
            continue
        data = [np.ma.filled(t.data.astype(np.float64), np.nan) if np.ma.isMaskedArray(t.data) else t.data for t in traces]
        if len({d.dtype for d in data}) > 1:  # one dtype for the record, wide enough for every channel
            data = [d.astype(np.result_type(*data)) for d in data]
        yield Piece(np.stack(data), rate, [t.stats.channel or t.id for t in traces], meta=meta)
