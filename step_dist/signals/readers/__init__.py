"""Format readers, chosen by file extension, each through its field's standard library.

``read_records(uri, opts)`` yields a SignalRecord for every signal in the file, or a Quarantined entry for a
record the file holds but that cannot become a signal. A file that cannot be read at all raises ReaderError /
FileNotFoundError with a message that names it; the caller (ingest) quarantines the file.
"""
from __future__ import annotations

import functools
import os
from typing import Callable, Iterator

from step_dist import storage
from step_dist.signals.readers.arrays import read_hdf5, read_npy, read_npz
from step_dist.signals.readers.audio import read_audio
from step_dist.signals.readers.base import Piece, ReaderError, ReaderOptions, local_path
from step_dist.signals.readers.edf import read_edf
from step_dist.signals.readers.fits import read_fits
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
    ((".mseed", ".miniseed", ".ms", ".sac", ".gse2", ".segy", ".sgy", ".seed"), read_seismic),
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
    with local_path(loc.uri, sidecar=fn in (read_npy, read_npz)) as path:
        call = functools.partial(fn, path, opts) if fn in (read_audio, read_edf, read_seismic) else functools.partial(fn, path, opts, uri=loc.uri)
        for index, piece in enumerate(call()):
            rid = record_id(opts.source, name, index)
            if piece.error:
                yield Quarantined(uri=loc.uri, index=index, id=rid, reason=piece.error)
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


__all__ = ["EXTENSIONS", "READERS", "ReaderError", "ReaderOptions", "extension", "is_sidecar", "read_records", "reader_for", "record_id"]
