"""What every format reader shares: its options, what it yields, and how a URI becomes a local path.

A reader is a generator ``read(path, opts) -> Iterator[Piece]``: one Piece per record it finds in the file.
A Piece is a record before it gets its identity (id, source, provenance), which ``read_records`` adds so that
ids look the same whatever the format. A Piece with ``error`` set is a record the file holds but that cannot be
turned into a signal (mismatched channel lengths, a non-numeric column...): it is quarantined with that reason
while the file's other records go on.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from step_dist import storage


class ReaderError(ValueError):
    """A whole file cannot be read; the message names the file and says what to do."""


@dataclass
class ReaderOptions:
    source: str = "default"  # dataset name written into every record
    domain: str = "unknown"  # seismic, eeg, audio, light_curve, ...
    rate_hz: float | None = None  # sampling rate for formats that do not carry one (NPY, CSV, HDF5, .ts)
    h5_dataset: str | None = None  # dataset path inside HDF5 files; None = the only dataset in the file
    split: str | None = None  # train / val / test written into every record (UCR files infer it from the name)
    csv_time_column: str | None = None  # None = detect a column named time / t / timestamp / seconds

    def __post_init__(self) -> None:
        if self.rate_hz is not None and not (np.isfinite(self.rate_hz) and self.rate_hz > 0):
            raise ValueError(f"--rate must be a positive number of Hz, got {self.rate_hz}")


@dataclass
class Piece:
    values: np.ndarray | None  # [channels, length]; any float/int dtype, cast to float32 once in the record
    rate_hz: float
    channel_names: list[str] = field(default_factory=list)
    label: str | None = None
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # set: this record is quarantined with this reason


def rejected(reason: str, **meta: Any) -> Piece:
    return Piece(values=None, rate_hz=0.0, meta=dict(meta), error=reason)


RATE_ATTRS = ("sampling_rate_hz", "sampling_rate", "sample_rate", "fs", "rate_hz", "rate")


def need_rate(opts: ReaderOptions, found: float | None, uri: str, where: str) -> float:
    """The rate from the file when it carries one, else --rate; never a silent default."""
    rate = found if found is not None else opts.rate_hz
    if rate is None:
        raise ReaderError(
            f"{uri}: no sampling rate ({where}); pass --rate HZ or add one to the file"
        )
    rate = float(rate)
    if not (np.isfinite(rate) and rate > 0):
        raise ReaderError(f"{uri}: sampling rate {rate} is not a positive number; fix the file or pass --rate HZ")
    return rate


def split_from_stack(arr: np.ndarray, uri: str) -> list[np.ndarray]:
    """1-D -> one record [1, L]; 2-D [C, L] -> one record; 3-D [N, C, L] -> N records."""
    if arr.dtype == object:
        raise ReaderError(f"{uri}: object arrays are refused (they need pickle); save a numeric array")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.iscomplexobj(arr):
        raise ReaderError(f"{uri}: dtype {arr.dtype} is not a real numeric type; save float or int samples")
    if arr.ndim == 1:
        return [arr[None, :]]
    if arr.ndim == 2:
        return [arr]
    if arr.ndim == 3:
        return [arr[i] for i in range(arr.shape[0])]
    raise ReaderError(f"{uri}: array of shape {arr.shape} has {arr.ndim} dims; expected [L], [C, L] or [N, C, L]")


@contextlib.contextmanager
def local_path(uri: str, sidecar: bool = False) -> Iterator[str]:
    """A real local path for ``uri``: the file itself when local, else a temporary download removed afterwards
    (most format libraries want a path, not a stream). ``sidecar``: also fetch ``<file>.json`` when it exists."""
    loc = storage.parse_uri(uri)
    if loc.scheme == "file":
        if not os.path.isfile(loc.path):
            raise FileNotFoundError(f"{loc.uri} does not exist: check the path")
        yield loc.path
        return
    fs, path = storage.fsspec_filesystem(uri)
    tmpdir = tempfile.mkdtemp(prefix="step-dist-read-")
    try:
        dest = os.path.join(tmpdir, os.path.basename(path) or "object")
        if not storage.with_retries(lambda: fs.exists(path), f"checking {loc.uri}"):
            raise FileNotFoundError(f"{loc.uri} does not exist: check the bucket and key")
        storage.with_retries(lambda: fs.get_file(path, dest), f"downloading {loc.uri}")
        if sidecar and storage.with_retries(lambda: fs.exists(path + ".json"), f"checking {loc.uri}.json"):
            storage.with_retries(lambda: fs.get_file(path + ".json", dest + ".json"), f"downloading {loc.uri}.json")
        yield dest
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
