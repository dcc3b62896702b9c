"""NPY / NPZ (numpy): arrays that carry samples but usually not a sampling rate (HDF5: readers/hdf5.py).

Shapes: [L] and [C, L] are one record, [N, C, L] is N records. The rate comes from the file when it has one
(a scalar ``sampling_rate_hz`` / ``fs`` entry in an NPZ, a JSON sidecar ``<file>.json``
with ``{"sampling_rate_hz": ..., "channel_names": [...]}``), else from --rate; with neither the file is
quarantined rather than given a made-up rate.

Hostile files. Sizes are checked against what the file *declares* (the .npy header, each NPZ member's .npy
header) before anything is decoded, so a compressed NPZ of zeros costs nothing: every record against the
record limits, and a whole [N, C, L] stack against the file limit (a file may not declare more float32 bytes
than it may hold on disk). Nothing is unpickled: object dtypes are refused. In an NPZ one bad array is
quarantined under its name while the others go on.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from typing import Any, Iterator

import numpy as np
from numpy.lib import format as npformat

from step_dist.signals.readers.base import (
    RATE_ATTRS,
    Piece,
    ReaderError,
    ReaderOptions,
    need_rate,
    rate_origin,
    rejected,
    size_problem,
    split_from_stack,
)

LABEL_KEYS = ("labels", "label", "y")
# A sidecar, an NPZ's labels or channel names describe the samples; anything bigger is not a description.
SMALL_BYTES = 64 << 20


def _sidecar(path: str) -> dict[str, Any]:
    side = path + ".json"
    if not os.path.exists(side):
        return {}
    if os.path.getsize(side) > SMALL_BYTES:
        raise ReaderError(f"sidecar {side} is over {SMALL_BYTES >> 20} MiB; a sidecar holds a rate and names, not data")
    try:
        with open(side) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ReaderError(f"sidecar {side} is not valid JSON ({e}); fix or remove it") from e


def scalar_value(v: Any) -> float | None:
    v = np.asarray(v)
    return float(v.reshape(())) if v.size == 1 and v.dtype.kind in "biuf" else None


def _rate_from(mapping: Any) -> float | None:
    for k in RATE_ATTRS:
        if k in mapping and scalar_value(mapping[k]) is not None:
            return scalar_value(mapping[k])
    return None


def first_found(*rates: float | None) -> float | None:
    return next((r for r in rates if r is not None), None)


def dtype_problem(dtype: np.dtype) -> str | None:
    if dtype.hasobject:
        return "object arrays are refused (they need pickle); save a numeric array"
    if dtype.kind not in "biuf":
        return f"dtype {dtype} is not a real numeric type; save float or int samples"
    return None


def stack_problem(opts: ReaderOptions, shape: tuple[int, ...], what: str) -> str | None:
    """Why an array of this *declared* shape must not be decoded: a bad number of dims, a record over the
    record limits, or an [N, C, L] stack over the file limit. None: fine."""
    if len(shape) not in (1, 2, 3):
        return f"{what} has shape {tuple(shape)} ({len(shape)} dims); expected [L], [C, L] or [N, C, L]"
    n, c, length = (1, 1, *shape) if len(shape) == 1 else (1, *shape) if len(shape) == 2 else shape
    problem = size_problem(opts, c, length, f"{what} (each record)" if len(shape) == 3 else what)
    total = 4 * n * c * length
    if not problem and len(shape) == 3 and opts.max_file_bytes and total > opts.max_file_bytes:
        problem = (f"too large: {what} declares {n} records of {c} x {length} samples = {total / 2**20:.0f} MiB of "
                   f"float32 > {opts.max_file_bytes / 2**20:.0f} MiB (checked before decoding); split the file or "
                   "raise --max-file-mb")
    return problem


def record_pieces(stacks: Any, rate: float, names: list[str] | None, labels: Any, meta: dict, source: str) -> Iterator[Piece]:
    for i, values in enumerate(stacks):
        ch = list(names) if names and len(names) == values.shape[0] else None
        label = None if labels is None else str(labels[i])
        yield Piece(values, rate, ch or [], label=label, meta=dict(meta), rate_source=source)


def _check_labels(labels: Any, n: int, where: str) -> None:
    if labels is not None and len(labels) != n:
        raise ReaderError(f"{where}: {len(labels)} labels for {n} records; make them the same length")


def _n_records(shape: tuple[int, ...]) -> int:
    return shape[0] if len(shape) == 3 else 1


# ---- NPY ---------------------------------------------------------------------------------------------------

def npy_header(fh: Any) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from an .npy header, nothing more read. Raises ValueError."""
    version = npformat.read_magic(fh)
    if version == (1, 0):
        return npformat.read_array_header_1_0(fh)
    if version == (2, 0):
        return npformat.read_array_header_2_0(fh)
    raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported; save with numpy's default")


def npy_layout(path: str, where: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(declared shape, dtype, data offset) of a .npy file, read from its header alone; a header numpy cannot
    parse or a dtype that is not plain numbers (object arrays would need pickle) is a ReaderError."""
    with open(path, "rb") as fh:
        try:
            shape, _, dtype = npy_header(fh)
        except ValueError as e:
            raise ReaderError(f"{where}: not a valid .npy file ({e}); re-export it with numpy.save") from e
        offset = fh.tell()
    problem = dtype_problem(dtype)
    if problem:
        raise ReaderError(f"{where}: {problem}")
    return tuple(shape), dtype, offset


def check_npy_complete(path: str, where: str, shape: tuple[int, ...], dtype: np.dtype, offset: int) -> None:
    """The file holds every byte its header declares (checked before np.load allocates them)."""
    need, have = offset + math.prod(shape) * dtype.itemsize, os.path.getsize(path)
    if have < need:
        raise ReaderError(f"{where}: truncated: the header declares {tuple(shape)} {dtype} ({need} bytes with the "
                          f"header) but the file holds {have} bytes; re-export or re-download it")


def read_npy(path: str, opts: ReaderOptions, uri: str = "") -> Iterator[Piece]:
    where = uri or path
    side = _sidecar(path)
    shape, dtype, offset = npy_layout(path, where)
    problem = stack_problem(opts, shape, "the array")
    if problem:
        raise ReaderError(f"{where}: {problem}")
    check_npy_complete(path, where, shape, dtype, offset)
    found = _rate_from(side)
    rate = need_rate(opts, found, where, "an NPY file carries none; a <file>.json sidecar can")
    _check_labels(side.get("labels"), _n_records(shape), where)
    # memory-mapped: a record's samples are read when it is converted, one record at a time
    arr = np.asarray(np.load(path, allow_pickle=False, mmap_mode="r"))
    yield from record_pieces(split_from_stack(arr, where), rate, side.get("channel_names"), side.get("labels"),
                       {"dtype": str(dtype)}, rate_origin(found))


# ---- NPZ ---------------------------------------------------------------------------------------------------

class _MemberError(ValueError):
    """One NPZ member cannot be read; the file's other members go on."""


# what reading one zip member raises on bad input: a CRC or zlib error, an encrypted member (RuntimeError),
# a compression method zipfile lacks (NotImplementedError)
MEMBER_ERRORS = (_MemberError, zipfile.BadZipFile, zlib.error, OSError, EOFError, RuntimeError, NotImplementedError)


def _open_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[Any, tuple[int, ...], bool, np.dtype]:
    """The member's stream positioned at its samples, and its declared shape, order and dtype; checks that
    the zip holds as many bytes as the header declares. Nothing is decompressed beyond the header."""
    if not info.filename.endswith(".npy"):
        raise _MemberError(f"member {info.filename!r} is not an .npy array; an NPZ holds only .npy members")
    fh = zf.open(info)
    try:
        shape, fortran, dtype = npy_header(fh)
    except ValueError as e:
        fh.close()
        raise _MemberError(f"not a valid .npy member ({e})") from e
    need = fh.tell() + math.prod(shape) * dtype.itemsize
    if need > info.file_size:
        fh.close()
        raise _MemberError(f"truncated: its header declares {tuple(shape)} {dtype} ({need} bytes with the header) "
                           f"but the zip holds {info.file_size} bytes for it; re-export the file")
    return fh, shape, fortran, dtype


def _read_exact(fh: Any, count: int, dtype: np.dtype) -> np.ndarray:
    """``count`` samples from a stream into one preallocated array, a MiB at a time (no growing buffers)."""
    out = np.empty(count, dtype)
    view, pos = memoryview(out.view(np.uint8)), 0
    while pos < len(view):
        chunk = fh.read(min(1 << 20, len(view) - pos))
        if not chunk:
            raise _MemberError(f"truncated: {len(view)} bytes of samples declared, {pos} present; re-export the file")
        view[pos:pos + len(chunk)] = chunk
        pos += len(chunk)
    return out


def _small(zf: zipfile.ZipFile, info: zipfile.ZipInfo, max_items: int, where: str) -> np.ndarray:
    """A describing member (rate, labels, channel names), refused when it declares more than a description."""
    try:
        fh, shape, fortran, dtype = _open_member(zf, info)
        with fh:
            if dtype.hasobject or math.prod(shape) > max_items or math.prod(shape) * dtype.itemsize > SMALL_BYTES:
                raise _MemberError(f"declares {tuple(shape)} {dtype}, more than a description holds")
            return _read_exact(fh, math.prod(shape), dtype).reshape(shape, order="F" if fortran else "C")
    except MEMBER_ERRORS as e:
        raise ReaderError(f"{where}: NPZ member {info.filename!r}: {e}") from e


def _member_records(fh: Any, shape: tuple[int, ...], fortran: bool, dtype: np.dtype,
                    where: str) -> Iterator[np.ndarray]:
    """The records of one member. An [N, C, L] stack in C order is read one record at a time from the stream,
    so a stack costs one record of memory; anything else is one read of its declared (checked) size."""
    if len(shape) == 3 and not fortran:
        n, c, length = shape
        for _ in range(n):
            yield _read_exact(fh, c * length, dtype).reshape(c, length)
        return
    arr = _read_exact(fh, math.prod(shape), dtype).reshape(shape, order="F" if fortran else "C")
    yield from split_from_stack(arr, where)


def _npz_rate(zf: zipfile.ZipFile, by_key: dict, where: str) -> tuple[str | None, float | None]:
    """The first rate-named member that is a numeric scalar: (its name, its value), else (None, None)."""
    for k in RATE_ATTRS:
        if k in by_key:
            try:
                value = scalar_value(_small(zf, by_key[k], 1, where))
            except ReaderError:
                value = None  # not a scalar: it is then read as an array, and refused under its name
            if value is not None:
                return k, value
    return None, None


def read_npz(path: str, opts: ReaderOptions, uri: str = "") -> Iterator[Piece]:
    where = uri or path
    side = _sidecar(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ReaderError(f"{where}: not a readable NPZ (zip) file ({e}); re-export it with numpy.savez") from e
    with zf:
        members = [(i.filename[:-4] if i.filename.endswith(".npy") else i.filename, i)
                   for i in zf.infolist() if not i.is_dir()]
        by_key = {k: info for k, info in reversed(members)}  # the first of duplicate names
        rate_key, file_rate = _npz_rate(zf, by_key, where)
        found = first_found(file_rate, _rate_from(side))
        rate = need_rate(opts, found, where, "no sampling_rate_hz / fs entry in the NPZ")
        label_key = next((k for k in LABEL_KEYS if k in by_key), None)
        labels = _small(zf, by_key[label_key], 10**7, where) if label_key else side.get("labels")
        names = side.get("channel_names")
        if "channel_names" in by_key:
            names = [str(s) for s in _small(zf, by_key["channel_names"], 10**5, where).reshape(-1)]
        described = {rate_key, label_key, "channel_names"}
        data = [(k, info) for k, info in members if k not in described]
        if not data:
            raise ReaderError(f"{where}: the NPZ holds no signal arrays (only {[k for k, _ in members]})")
        use_labels = labels if len(data) == 1 else None
        for k, info in data:
            yield from _npz_array(zf, k, info, opts, rate, rate_origin(found), names, use_labels, where)


def _npz_array(zf: zipfile.ZipFile, key: str, info: zipfile.ZipInfo, opts: ReaderOptions, rate: float, source: str,
               names: Any, labels: Any, where: str) -> Iterator[Piece]:
    """One NPZ array's records; when the array cannot be read, one rejected piece naming it (the records it
    gave before breaking off are kept) and the file's other arrays go on."""
    done = 0
    try:
        fh, shape, fortran, dtype = _open_member(zf, info)
        with fh:
            if key in RATE_ATTRS and math.prod(shape) == 1:
                return  # a second scalar rate entry describes the file, as the first one does
            if key in RATE_ATTRS:  # not a scalar: neither a rate nor to be dropped silently
                raise _MemberError(f"named like a sampling rate but holds {tuple(shape)} values; rename it")
            problem = dtype_problem(dtype) or stack_problem(opts, shape, f"array {key!r}")
            if problem:
                raise _MemberError(problem)
            _check_labels(labels, _n_records(shape), where)
            meta = {"array": key, "dtype": str(dtype)}
            for piece in record_pieces(_member_records(fh, shape, fortran, dtype, where), rate, names, labels, meta, source):
                yield piece
                done += 1
    except MEMBER_ERRORS as e:
        after = f" after {done} record(s)" if done else ""
        yield rejected(f"NPZ array {key!r} failed{after}: {e}", array=key)
