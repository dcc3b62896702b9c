"""Format readers, chosen by file extension, each through its field's standard library.

``read_records(uri, opts)`` yields a SignalRecord for every signal in the file, or a Quarantined entry for a
record the file holds but that cannot become a signal. A file that cannot be read at all raises ReaderError /
FileNotFoundError with a message that names it; the caller (ingest) quarantines the file.
"""
from __future__ import annotations

import os
from typing import Callable, Iterator

import numpy as np

from step_dist import storage
from step_dist.signals.readers.arrays import read_npy, read_npz
from step_dist.signals.readers.audio import read_audio
from step_dist.signals.precision import to_float32
from step_dist.signals.readers.base import Piece, ReaderError, ReaderOptions, local_path, size_problem
from step_dist.signals.readers.edf import read_edf
from step_dist.signals.readers.fits import read_fits
from step_dist.signals.readers.hdf5 import read_hdf5
from step_dist.signals.readers.seismic import read_seismic
from step_dist.signals.readers.tabular import read_csv
from step_dist.signals.readers.ucr import read_ts
from step_dist.signals.record import SignalRecord
from step_dist.signals.validate import Quarantined

Reader = Callable[..., Iterator[Piece]]

# extension -> (reader, wants the URI for its messages)
READERS: dict[str, Reader] = {}
for _exts, _fn in (
    ((".wav", ".flac", ".ogg", ".aiff", ".aif"), read_audio),
    ((".edf", ".bdf"), read_edf),
    ((".mseed", ".miniseed", ".ms", ".sac", ".gse2", ".gse", ".segy", ".sgy", ".seed"), read_seismic),
    ((".npy",), read_npy),
    ((".npz",), read_npz),
    ((".h5", ".hdf5", ".hdf"), read_hdf5),
    ((".csv",), read_csv),
    ((".fits", ".fit", ".fts"), read_fits),
    ((".ts",), read_ts),
):
    for _e in _exts:
        READERS[_e] = _fn

EXTENSIONS = tuple(sorted(READERS))


def extension(uri: str) -> str:
    return os.path.splitext(uri)[1].lower()


def reader_for(uri: str) -> Reader:
    ext = extension(uri)
    if ext not in READERS:
        raise ReaderError(
            f"{uri}: unknown extension {ext or '(none)'!r}; readable: {' '.join(EXTENSIONS)} "
            "(rename the file or convert it)"
        )
    return READERS[ext]


def is_sidecar(uri: str, siblings: set[str]) -> bool:
    """``x.npy.json`` beside ``x.npy`` describes it; it is not a signal file of its own."""
    return uri.endswith(".json") and uri[: -len(".json")] in siblings


def record_id(source: str, name: str, index: int) -> str:
    return f"{source}:{name}#{index}"


def read_records(uri: str, opts: ReaderOptions, name: str | None = None) -> Iterator[SignalRecord | Quarantined]:
    """Every record in the file at ``uri``. ``name`` (default: the file name) goes into record ids; ingest
    passes the path relative to the source folder so that ids are unique and stable."""
    loc = storage.parse_uri(uri)
    name = name or os.path.basename(loc.path)
    fn = reader_for(loc.uri)
    with local_path(loc.uri, sidecar=fn in (read_npy, read_npz), max_bytes=opts.max_file_bytes) as path:
        for index, piece in enumerate(fn(path, opts, uri=loc.uri)):
            rid = record_id(opts.source, name, index)
            reason = piece.error or _finish(piece, opts)
            if reason:
                yield Quarantined(uri=loc.uri, index=index, id=rid, reason=reason)
                continue
            yield SignalRecord(
                id=rid,
                source=opts.source,
                domain=opts.domain,
                sampling_rate_hz=float(piece.rate_hz),
                values=piece.values,
                channel_names=[str(c) for c in piece.channel_names],
                label=piece.label,
                split=piece.split or opts.split,
                uri=loc.uri,
                index=index,
                meta=piece.meta,
            )


def _finish(piece: Piece, opts: ReaderOptions) -> str | None:
    """What every reader's output goes through once: the size limits (a second line behind the readers' own
    checks of declared sizes), the float32 conversion with its exactness rules, and the rate rule. Returns a
    quarantine reason, or None with ``piece.values`` now float32 and ``piece.meta`` saying what was done."""
    values = piece.values
    if values is None or values.ndim != 2:
        return f"reader gave no [channels, length] array (shape {getattr(values, 'shape', None)})"
    too_big = size_problem(opts, values.shape[0], values.shape[1], declared=False)
    if too_big:
        return too_big
    f32, flags, reason = to_float32(values, opts.float32_policy)
    if reason:
        return reason
    piece.meta.setdefault("source_dtype", str(values.dtype))
    for k, v in flags.items():
        piece.flag(k, v)
    piece.values = f32
    piece.meta["rate_source"] = piece.rate_source
    given = opts.rate_hz
    if given is not None and piece.rate_source == "file" and not np.isclose(piece.rate_hz, given, rtol=1e-9, atol=0.0):
        # the file's own rate wins: --rate only fills files that carry none
        piece.flag("rate_conflict", {"file_hz": float(piece.rate_hz), "given_hz": float(given), "kept": "file"})
    return None


__all__ = ["EXTENSIONS", "READERS", "ReaderError", "ReaderOptions", "extension", "is_sidecar", "read_records", "reader_for", "record_id"]
