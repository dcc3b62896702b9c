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


# Defaults that keep several parallel ingest tasks inside a 24 GB machine: a record may decode to at most
# 256 MiB of float32 (64M samples: a 3-channel day of 100 Hz seismogram is 26M, an hour of 16 kHz audio 58M),
# and a file may be at most 4 GiB on disk. Both are settable (--max-record-mb, --max-file-mb).
DEFAULT_MAX_RECORD_BYTES = 256 << 20
DEFAULT_MAX_FILE_BYTES = 4 << 30


@dataclass
class ReaderOptions:
    source: str = "default"  # dataset name written into every record
    domain: str = "unknown"  # seismic, eeg, audio, light_curve, ...
    rate_hz: float | None = None  # sampling rate for formats that do not carry one (NPY, CSV, HDF5, .ts)
    h5_dataset: str | None = None  # dataset path inside HDF5 files; None = the only dataset in the file
    split: str | None = None  # train / val / test written into every record (UCR files infer it from the name)
    csv_time_column: str | None = None  # None = detect a column named time / t / timestamp / seconds
    # Size limits, checked against what a file *declares* before anything is decoded or allocated.
    max_length: int = 0  # samples per channel; 0 = no limit (--max-length)
    max_channels: int = 0  # 0 = no limit (--max-channels)
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES  # float32 bytes of one record, channels x length x 4
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES  # bytes of one raw file before it is read or downloaded
    # Values float32 cannot hold exactly (integers above 2**24, float64 below float32's smallest normal):
    # 'quarantine' the record (default) or 'round' them, recorded in meta.flags and counted in the manifest.
    float32_policy: str = "quarantine"

    def __post_init__(self) -> None:
        if self.rate_hz is not None and not (np.isfinite(self.rate_hz) and self.rate_hz > 0):
            raise ValueError(f"--rate must be a positive number of Hz, got {self.rate_hz}")
        for k in ("max_length", "max_channels", "max_record_bytes", "max_file_bytes"):
            if getattr(self, k) < 0:
                raise ValueError(f"{k} must be >= 0, got {getattr(self, k)}")
        if self.float32_policy not in FLOAT32_POLICIES:
            raise ValueError(f"float32_policy must be one of {FLOAT32_POLICIES}, got {self.float32_policy!r}")


FLOAT32_POLICIES = ("quarantine", "round")


def size_problem(opts: ReaderOptions, n_channels: int, length: int, what: str = "record", declared: bool = True) -> str | None:
    """Why a record of the *declared* shape must not be decoded (None: fine). Readers call this with the shape
    a header promises, before reading or allocating the samples, so a small file that claims billions of
    samples (an unallocated HDF5 dataset, a zip bomb) costs nothing."""
    n_channels, length = int(n_channels), int(length)
    has, when = ("declares", " (checked before decoding)") if declared else ("has", "")
    if opts.max_length and length > opts.max_length:
        return (f"too long: {what} {has} {length} samples > max_length {opts.max_length}{when}; split the file or "
                "raise --max-length")
    if opts.max_channels and n_channels > opts.max_channels:
        return f"too many channels: {what} {has} {n_channels} > max_channels {opts.max_channels}; raise --max-channels"
    nbytes = 4 * n_channels * length
    if opts.max_record_bytes and nbytes > opts.max_record_bytes:
        return (f"too large: {what} {has} {n_channels} x {length} samples = {nbytes / 2**20:.0f} MiB of float32 "
                f"> {opts.max_record_bytes / 2**20:.0f} MiB{when}; split the file or raise --max-record-mb")
    return None


def check_size(opts: ReaderOptions, n_channels: int, length: int, where: str, what: str = "record") -> None:
    """``size_problem`` as a ReaderError naming the file: for a file that is one record."""
    reason = size_problem(opts, n_channels, length, what)
    if reason:
        raise ReaderError(f"{where}: {reason}")


def check_file_size(opts: ReaderOptions, nbytes: int, where: str) -> None:
    if opts.max_file_bytes and nbytes > opts.max_file_bytes:
        raise ReaderError(
            f"{where}: file is {nbytes / 2**20:.0f} MiB > {opts.max_file_bytes / 2**20:.0f} MiB; split it or raise --max-file-mb"
        )


@dataclass
class Piece:
    values: np.ndarray | None  # [channels, length]; any float/int dtype, cast to float32 once in the record
    rate_hz: float
    channel_names: list[str] = field(default_factory=list)
    label: str | None = None
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # set: this record is quarantined with this reason
    # Where the rate came from: "file" (the file's own header, time column, attribute or sidecar) or
    # "--rate" (the user's fill-in for a file that carries none), or "none" (a placeholder rate, e.g. a .ts file
    # without --rate: meta.rate_known is false). A file's own rate always wins over --rate.
    rate_source: str = "file"

    def flag(self, name: str, detail: Any) -> None:
        """Record that a value was changed or something was found wrong but kept (a truncated file, rounded
        integers...): ``meta.flags[name] = detail``; ingest counts flags per name in the manifest."""
        self.meta.setdefault("flags", {})[name] = detail


def rejected(reason: str, **meta: Any) -> Piece:
    return Piece(values=None, rate_hz=0.0, meta=dict(meta), error=reason)


RATE_ATTRS = ("sampling_rate_hz", "sampling_rate", "sample_rate", "fs", "rate_hz", "rate")


def need_rate(opts: ReaderOptions, found: float | None, uri: str, where: str) -> float:
    """The rate from the file when it carries one, else --rate; never a silent default. (Whether --rate
    disagrees with a file's own rate is checked once for every reader in ``read_records``.)"""
    rate = found if found is not None else opts.rate_hz
    if rate is None:
        raise ReaderError(
            f"{uri}: no sampling rate ({where}); pass --rate HZ or add one to the file"
        )
    rate = float(rate)
    if not (np.isfinite(rate) and rate > 0):
        raise ReaderError(f"{uri}: sampling rate {rate} is not a positive number; fix the file or pass --rate HZ")
    return rate


# Containers a format library might unpack or unpickle when handed a data file; named so that a refusal says
# what the file really is. Readers that take a file object check its first bytes against these.
_CONTAINERS = (
    (0, b"\x1f\x8b", "a gzip archive"), (0, b"BZh", "a bzip2 archive"), (0, b"\xfd7zXZ\x00", "an xz archive"),
    (0, b"PK\x03\x04", "a zip archive"), (0, b"PK\x05\x06", "a zip archive"), (0, b"\x28\xb5\x2f\xfd", "a zstd archive"),
    (0, b"7z\xbc\xaf\x27\x1c", "a 7z archive"), (257, b"ustar", "a tar archive"),
)


def container_kind(head: bytes) -> str | None:
    """'a gzip archive', 'a Python pickle'... when the file's first bytes (at least 512 for tar) are a
    container rather than data; None otherwise."""
    for offset, magic, what in _CONTAINERS:
        if head[offset:offset + len(magic)] == magic:
            return what
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # PROTO opcode: pickle protocol 2-5
        return "a Python pickle"
    return None


def rate_origin(found: float | None) -> str:
    """``Piece.rate_source`` for a rate chosen by ``need_rate(opts, found, ...)``."""
    return "file" if found is not None else "--rate"


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


def regular_file_problem(path: str) -> str | None:
    """Why a local path cannot be read as a data file (None: it is a regular file). Distinguishes what
    ``os.path.isfile`` lumps together as "not there": a missing file, a symlink loop, a FIFO or device
    (opening a FIFO would block ingest forever)."""
    import errno
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            return "is a symbolic link to a missing file; fix or remove the link"
        return "does not exist: check the path"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link loop; fix or remove the link"
        return f"cannot be read ({e.strerror}); check its permissions"
    if stat.S_ISREG(st.st_mode):
        return None
    kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else \
        "a folder" if stat.S_ISDIR(st.st_mode) else "a device"
    return f"is {kind}, not a regular file; only regular files are read"


@contextlib.contextmanager
def local_path(uri: str, sidecar: bool = False, max_bytes: int = 0) -> Iterator[str]:
    """A real local path for ``uri``: the file itself when local, else a temporary download removed afterwards
    (most format libraries want a path, not a stream). ``sidecar``: also fetch ``<file>.json`` when it exists.
    ``max_bytes``: refuse a file larger than this before reading or downloading it (0: no limit)."""
    loc = storage.parse_uri(uri)
    if loc.scheme == "file":
        problem = regular_file_problem(loc.path)
        if problem:
            if problem.startswith("does not exist"):
                raise FileNotFoundError(f"{loc.uri} {problem}")
            raise ReaderError(f"{loc.uri} {problem}")
        if max_bytes and os.path.getsize(loc.path) > max_bytes:
            raise ReaderError(f"{loc.uri}: file is {os.path.getsize(loc.path) / 2**20:.0f} MiB > "
                              f"{max_bytes / 2**20:.0f} MiB; split it or raise --max-file-mb")
        yield loc.path
        return
    fs, path = storage.fsspec_filesystem(uri)
    tmpdir = tempfile.mkdtemp(prefix="step-dist-read-")
    try:
        dest = os.path.join(tmpdir, os.path.basename(path) or "object")
        if not storage.with_retries(lambda: fs.exists(path), f"checking {loc.uri}"):
            raise FileNotFoundError(f"{loc.uri} does not exist: check the bucket and key")
        if max_bytes:
            size = storage.with_retries(lambda: fs.size(path), f"checking {loc.uri}")
            if size is not None and size > max_bytes:
                raise ReaderError(f"{loc.uri}: object is {size / 2**20:.0f} MiB > {max_bytes / 2**20:.0f} MiB; "
                                  "split it or raise --max-file-mb")
        storage.with_retries(lambda: fs.get_file(path, dest), f"downloading {loc.uri}")
        if sidecar and storage.with_retries(lambda: fs.exists(path + ".json"), f"checking {loc.uri}.json"):
            storage.with_retries(lambda: fs.get_file(path + ".json", dest + ".json"), f"downloading {loc.uri}.json")
        yield dest
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
