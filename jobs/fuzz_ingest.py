"""Fuzz `step-dist ingest` with hostile and broken files and check the promises of issue 14.

    .venv/bin/python jobs/fuzz_ingest.py [--seed 0] [--budget 1] [--out DIR] [--only no_code,memory,...]

Each class below has small generator functions, one per kind (registered with ``@kind``), that write real
files in real formats through the formats' own libraries, for every reader, deterministically from --seed;
--budget N writes N variants of every kind (different data, names and formats where a kind rotates through
them). All files but the memory cases are ingested by ONE real command, ``python -m step_dist.cli ingest
SRC SRC2 --out OUT --rate 100 --h5-dataset signal --num-cpus 2`` (its own local Ray; SRC2 is a second folder of
the same name); the memory cases by a second command of their own, whose memory is watched; usage errors (no
Ray) by small commands of their own. All run side by side.

Promises (checked per file unless said):
  no_code     the marker file a payload (pickle, archive, YAML tag) would create never exists
  no_leak     the secret token of a file outside SRC appears nowhere: shard values (as float32 bytes or as
              bytes 0-255), any string column, the manifest, the command's output
  memory      the peak RSS of the Ray worker while it reads the file stays under --mem-bound-mb, and no
              reason says it ran out of memory
  accounted   the file is written, quarantined with a reason naming it, or listed under "skipped"
  bit_exact   every good record is in the shards with exactly the float32 values written, nothing else
  rate        every record of the file has the file's own rate (--rate 100 only fills files without one)
  flagged     a file or value changed on the way in (float32 cannot hold it, a file shorter than its header)
              is quarantined, or written with meta.flags that the manifest counts under "flagged"
  reason      its reason does not say something misleading ("NaN/inf" for an overflow, "does not exist"
              for a FIFO, "corrupt" for a non-UTF-8 name)
  no_hang     nothing opened a FIFO (a reader would block on it forever)
  clean_exit  per command: the expected exit code, no Python traceback, counts that add up

Memory: the bombs decode to --bomb-mb (1.6 GB) or more each, the bound is --mem-bound-mb (1.5 GB) of one
worker's RSS (an idle worker is ~0.3 GB). The peak comes from polling every process of the command
(attributed to the SRC file the worker has open) and from getrusage(RUSAGE_CHILDREN).ru_maxrss of a small
wrapper process that is the command's child subreaper, so Ray's workers are reaped by it and counted.
Safety: Ray reserves tens of GB of address space (an RLIMIT_AS below ~16 GB on the whole command stops it
from starting), so the cap goes on each Ray worker instead: RLIMIT_AS = its address space when it first
opens a SRC file + --worker-as-headroom-mb, and the command is killed when any process passes --kill-rss-mb.

Prints a table (class, kind, files tried, promises checked, held, broken), writes DIR/fuzz.json, exits 1 when
any promise broke (2 on a usage error of this script).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1 << 20


# ---------------------------------------------------------------------------------------------------------
# The measuring wrapper: `fuzz_ingest.py --measured-child REPORT -- CMD...` (stdlib only, starts fast)

def _measured_child(report: str, cmd: list[str]) -> int:
    """Run CMD as a child subreaper, reap every descendant (Ray's workers are orphaned to us when the
    raylet goes), then write {"rc", "maxrss_kb"}: the peak RSS of the largest descendant."""
    import ctypes
    import resource
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    child = subprocess.Popen(cmd)
    signal.signal(signal.SIGTERM, lambda *_: (child.kill(), os._exit(143)))
    rc = child.wait()
    deadline = time.time() + 20
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if time.time() > deadline:  # something of Ray's lingers: end it, it is ours
                for p in _descendants(os.getpid()):
                    _kill(p)
            time.sleep(0.1)
    with open(report, "w") as f:
        json.dump({"rc": rc, "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, f)
    return 0


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _kill(proc) -> None:
    import psutil

    try:
        proc.kill()
    except psutil.Error:
        pass


if __name__ == "__main__" and len(sys.argv) > 3 and sys.argv[1] == "--measured-child":
    sys.exit(_measured_child(sys.argv[2], sys.argv[sys.argv.index("--") + 1:]))

# ---------------------------------------------------------------------------------------------------------
import bz2  # noqa: E402
import gzip  # noqa: E402
import io  # noqa: E402
import lzma  # noqa: E402
import pickle  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import struct  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import zipfile  # noqa: E402
import zlib  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Callable  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, ROOT)

CLASSES = ("no_code", "no_leak", "memory", "good", "silent_loss", "globs", "rates", "exactness", "broken", "messages")
RATE = 100.0  # --rate given to every ingest command: it must fill only files that carry no rate
NAN_WORDS = ("nan/inf", "non-finite")
OOM_WORDS = ("memoryerror", "unable to allocate", "cannot allocate", "out of memory")
TRACEBACK = "Traceback (most recent call last)"
RAY_START_FAILED = "The current node timed out during startup"  # Ray's own 30 s deadline, not a finding


# ---------------------------------------------------------------------------------------------------------
# What a generated file must come to

@dataclass
class Expect:
    path: str  # the file (or link) under SRC
    records: list | None = None  # good: these float32 [C, L] arrays, bit-exact, and nothing else; None: nothing good
    rate: float | None = None  # every written record carries this rate
    optional: bool = False  # records may be left out, then with a reason naming the file (_private.npy)
    partial: bool = False  # a record of the file must also be quarantined (an npz's broken middle array)
    changed: bool = False  # values/length changed on the way in: quarantined, or written with meta.flags
    reason_not: tuple = ()  # words its reason must not use
    marker: str | None = None  # the payload would create this file
    token: bytes | None = None  # a secret outside SRC that must not come out
    memory: bool = False
    fifo: bool = False
    aliases: tuple = ()  # other spellings of the path (a non-UTF-8 name, escaped)
    cls: str = ""
    kind: str = ""

    def promises(self) -> list[str]:
        p = ["accounted"]
        p += ["bit_exact"] if self.records is not None else []
        p += ["rate"] if self.rate is not None else []
        p += ["flagged"] if self.changed else []
        p += ["reason"] if self.reason_not else []
        p += ["no_code"] if self.marker else []
        p += ["no_leak"] if self.token else []
        p += ["memory"] if self.memory else []
        p += ["no_hang"] if self.fifo else []
        return p


@dataclass
class Ctx:
    root: str  # --out
    seed: int
    src: str = ""  # main SRC
    src2: str = ""  # a second SRC of the main command, with the same folder name as the first
    mem_src: str = ""  # SRC of the memory command
    outside: str = ""  # secrets and markers: never under a SRC
    bomb_bytes: int = 1600 * MiB

    def rng(self, kind: str, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, zlib.crc32(kind.encode()), i])

    def marker(self, name: str) -> str:
        return os.path.join(self.outside, "markers", name)

    def secret(self, name: str, rng: np.random.Generator, n: int = 96) -> tuple[str, bytes]:
        """A credentials-like file outside SRC with a random token of its own."""
        token = "".join(f"{b:02x}" for b in rng.integers(0, 256, 16)).encode()
        text = (b"[default]\naws_secret_access_key = " + token + b"\n").ljust(n, b"#")
        path = os.path.join(self.outside, f"secret-{name}.txt")
        with open(path, "wb") as f:
            f.write(text)
        return path, token


@dataclass
class Kind:
    cls: str
    name: str
    fn: Callable[[Ctx, int], list[Expect]]
    batch: str  # "main" or "memory"
    max_variants: int


KINDS: list[Kind] = []


def kind(cls: str, name: str, batch: str = "main", max_variants: int = 1 << 30):
    """Register a generator ``fn(ctx, variant) -> [Expect]`` that writes its files and says what they must
    come to."""
    assert cls in CLASSES, cls

    def deco(fn):
        KINDS.append(Kind(cls, name, fn, batch, max_variants))
        return fn
    return deco


# ---------------------------------------------------------------------------------------------------------
# Writers: real files through the formats' own libraries

def _signal(rng, channels: int, length: int) -> np.ndarray:
    """float32 noise at a random scale, never subnormal, never constant."""
    return (rng.standard_normal((channels, length)) * 10 ** rng.uniform(-3, 3)).astype(np.float32)


def _counts(rng, length: int, hi: int = 1 << 23) -> np.ndarray:
    return rng.integers(-hi, hi, length).astype(np.int32)


def _p(ctx: Ctx, rel: str, src: str | None = None) -> str:
    path = os.path.join(src or ctx.src, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def _npy(path: str, arr: np.ndarray, rate: float | None = None) -> str:
    with open(path, "wb") as f:  # np.save(path) would append .npy to a name that lacks it
        np.save(f, arr, allow_pickle=arr.dtype == object)
    if rate is not None:
        with open(path + ".json", "w") as f:
            json.dump({"sampling_rate_hz": rate}, f)
    return path


def _wav(path: str, values: np.ndarray, rate: int, subtype: str = "FLOAT", fmt: str | None = None) -> bytes:
    import soundfile as sf

    sf.write(path, values.T, rate, subtype=subtype, format=fmt)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    peak = data.find(b"PEAK")  # libsndfile's PEAK chunk of float WAV/AIFF holds the time of writing
    if peak > 0:
        data[peak + 12:peak + 16] = bytes(4)
        _write(path, bytes(data))
    return bytes(data)


def _mseed(path: str, data: np.ndarray, rate: float, station: str, fmt: str = "MSEED") -> None:
    import obspy

    tr = obspy.Trace(data=data, header={"network": "FZ", "station": station, "channel": "HHZ", "sampling_rate": rate,
                                        "starttime": obspy.UTCDateTime(2020, 1, 1)})
    obspy.Stream([tr]).write(path, format=fmt)


def _csv(path: str, columns: np.ndarray, names: list[str] | None = None, time_rate: float | None = None) -> None:
    """Columns [C, N] as text that parses back to the same float32 (shortest repr of the float64)."""
    rows = []
    if names:
        rows.append(",".join((["time"] if time_rate else []) + names))
    for k in range(columns.shape[1]):
        cells = [repr(k / time_rate)] if time_rate else []
        rows.append(",".join(cells + [repr(float(v)) for v in columns[:, k]]))
    with open(path, "w") as f:
        f.write("\n".join(rows) + "\n")


def _fits_lc(path: str, flux: np.ndarray, cadence_s: float, fmt: str = "E") -> float:
    """A light curve: TIME in days (unit d), FLUX and FLUX_ERR; returns the rate the time column gives."""
    from astropy.io import fits

    t = 2458000.0 + np.arange(flux.size) * (cadence_s / 86400.0)
    cols = [fits.Column(name="TIME", format="D", unit="d", array=t),
            fits.Column(name="FLUX", format=fmt, array=flux),
            fits.Column(name="FLUX_ERR", format="E", array=np.full(flux.size, 0.1, np.float32))]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path, overwrite=True)
    return 1.0 / float(np.median(np.diff(t * 86400.0)))


def _h5(path: str, name: str, arr: np.ndarray | None = None, rate: float | None = None, **kw) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        ds = f.create_dataset(name, data=arr, **kw)
        if rate is not None:
            ds.attrs["sampling_rate_hz"] = rate


def _ts(path: str, series: np.ndarray, labels: list[str]) -> None:
    lines = ["@problemName fuzz", "@timeStamps false", "@missing false", "@univariate true", "@equalLength true",
             f"@seriesLength {series.shape[1]}", f"@classLabel true {' '.join(sorted(set(labels)))}", "@data"]
    lines += [",".join(repr(float(v)) for v in s) + ":" + lab for s, lab in zip(series, labels)]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _edf(path: str, rng, channels: int = 2, seconds: int = 4, rate: int = 64) -> None:
    import pyedflib
    from pyedflib import highlevel

    sigs = [rng.standard_normal(seconds * rate) * 50 for _ in range(channels)]
    heads = highlevel.make_signal_headers([f"EEG{c}" for c in range(channels)], sample_frequency=rate,
                                          physical_min=-500, physical_max=500)
    import datetime

    header = highlevel.make_header(startdate=datetime.datetime(2020, 1, 1))  # not today: the same bytes every run
    highlevel.write_edf(path, sigs, heads, header, file_type=pyedflib.FILETYPE_EDFPLUS)


def _sample_file(ctx: Ctx, ext: str, rng) -> bytes:
    """A small real file for the reader of ``ext`` (for truncation and archives); chosen by reader, so an
    extension added to READERS later gets its reader's format."""
    reader = next((name for name, exts in _readers().items() if ext in exts), "")
    tmp = os.path.join(ctx.outside, "tmp" + ext)
    if reader == "read_audio":
        fmt = {".aif": "AIFF", ".aiff": "AIFF", ".ogg": "OGG", ".flac": "FLAC"}.get(ext, "WAV")
        sub = {"OGG": "VORBIS", "FLAC": "PCM_16", "AIFF": "PCM_16"}.get(fmt, "FLOAT")
        data = _wav(tmp, np.clip(_signal(rng, 1, 4000) / 1e3, -0.9, 0.9), 8000, sub, fmt)
        os.remove(tmp)
        return data
    if reader == "read_edf":
        tmp = os.path.join(ctx.outside, "tmp.edf")  # pyedflib picks the writer by the name
        _edf(tmp, rng)
    elif reader == "read_seismic":
        fmt = {".sac": "SAC", ".gse2": "GSE2", ".gse": "GSE2", ".segy": "SEGY", ".sgy": "SEGY"}.get(ext, "MSEED")
        # small counts for GSE2: obspy's CM6 buffer (4 bytes a sample) overflows on big ones
        data = _signal(rng, 1, 3000)[0] if fmt in ("SAC", "SEGY") else _counts(rng, 3000, 1 << (10 if fmt == "GSE2" else 20))
        _mseed(tmp, data, 50.0, "TR", fmt)
    elif reader == "read_npy":
        _npy(tmp, _signal(rng, 2, 2000))
    elif reader == "read_npz":
        np.savez(tmp, x=_signal(rng, 2, 2000))
    elif reader == "read_hdf5":
        _h5(tmp, "signal", _signal(rng, 2, 2000), rate=100.0)
    elif reader == "read_fits":
        _fits_lc(tmp, _signal(rng, 1, 500)[0], 120.0)
    elif reader == "read_csv":
        _csv(tmp, _signal(rng, 2, 300), ["a", "b"])
    elif reader == "read_ts":
        _ts(tmp, _signal(rng, 4, 40), ["a", "b", "a", "b"])
    else:
        raise ValueError(f"fuzz_ingest: no sample writer for {ext} (reader {reader or 'unknown'}); add one here")
    with open(tmp, "rb") as f:
        data = f.read()
    os.remove(tmp)
    return data


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


def _readers() -> dict[str, list[str]]:
    """Reader name -> its extensions, from the READERS table of the code under test."""
    from step_dist.signals.readers import READERS

    out: dict[str, list[str]] = {}
    for ext, fn in sorted(READERS.items()):
        out.setdefault(getattr(fn, "__name__", str(fn)), []).append(ext)
    return out


def _one_ext_per_reader(i: int) -> list[str]:
    """One extension of every reader, rotating through each reader's extensions with the variant."""
    return [exts[i % len(exts)] for exts in _readers().values()]


# ---------------------------------------------------------------------------------------------------------
# Payloads

class _MakeMarker:
    """Unpickling this calls open(marker, "w"): the marker file exists iff the pickle was loaded."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _ObspyName:
    """Puts b"obspy.core.stream" in the first 100 bytes: obspy unpickles only files that look like its own."""

    def __reduce__(self):
        return (str, ("obspy.core.stream",))


def _payload(marker: str) -> bytes:
    return pickle.dumps([_ObspyName(), _MakeMarker(marker)], protocol=2)


def _object_array(marker: str) -> np.ndarray:
    arr = np.empty(2, dtype=object)
    arr[0], arr[1] = 1.0, _MakeMarker(marker)
    return arr


def _tar(members: dict[str, bytes], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


ARCHIVES: dict[str, Callable[[dict[str, bytes]], bytes]] = {
    "tar": lambda m: _tar(m), "tar.gz": lambda m: gzip.compress(_tar(m), mtime=0), "tar.bz2": lambda m: _tar(m, "w:bz2"),
    "tar.xz": lambda m: _tar(m, "w:xz"), "zip": _zip,
}


def _seismic() -> list[str]:
    """The extensions obspy's reader takes (the one that sniffed formats and unpacked archives)."""
    return _readers().get("read_seismic") or [".mseed", ".sac"]


# ---------------------------------------------------------------------------------------------------------
# Bombs: small files that decode to gigabytes, built without ever holding the gigabytes

def _deflate_zeros(prefix: bytes, total: int) -> tuple[bytes, int]:
    """Raw deflate of ``prefix`` + zeros up to ``total`` bytes (a multiple of 1 MiB): one compressed MiB
    repeated, each a stand-alone full-flushed block, so 1.6 GB is ~1.7 MB and no compression time."""
    def block(data: bytes) -> bytes:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush(zlib.Z_FULL_FLUSH)

    first, zero, n = prefix + bytes(MiB - len(prefix)), bytes(MiB), total // MiB
    crc = zlib.crc32(first)
    for _ in range(n - 1):
        crc = zlib.crc32(zero, crc)
    return block(first) + block(zero) * (n - 1) + zlib.compressobj(9, zlib.DEFLATED, -15).flush(), crc


def _gzip_zeros(prefix: bytes, total: int) -> bytes:
    raw, crc = _deflate_zeros(prefix, total)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + raw + struct.pack("<II", crc, total & 0xFFFFFFFF)


def _zip_zeros(name: str, prefix: bytes, total: int) -> bytes:
    raw, crc = _deflate_zeros(prefix, total)
    n = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(raw), total, len(n), 0) + n
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(raw), total,
                          len(n), 0, 0, 0, 0, 0, 0) + n
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(raw), 0)
    return local + raw + central + end


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[pos]
        out |= (b & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not b & 0x80:
            return out, pos


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def _xz_zeros(prefix: bytes, total: int, block: int = 16 * MiB) -> bytes:
    """One .xz stream of ``prefix`` + zeros: one compressed 16 MiB block repeated, with its index."""
    def one(data: bytes) -> tuple[bytes, bytes, int, int]:
        s = lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=0)
        back = (struct.unpack("<I", s[-8:-4])[0] + 1) * 4
        index = s[-12 - back:-12]
        unpadded, pos = _varint(index, 2)  # after the indicator byte and the record count (1)
        size, _ = _varint(index, pos)
        return s[:12], s[12:-12 - back], unpadded, size

    head, b0, u0, s0 = one(prefix + bytes(block - len(prefix)))
    _, bz, uz, sz = one(bytes(block))
    n = total // block
    body = b"\x00" + _enc_varint(n) + _enc_varint(u0) + _enc_varint(s0) + (_enc_varint(uz) + _enc_varint(sz)) * (n - 1)
    body += bytes(-len(body) % 4)
    index = body + struct.pack("<I", zlib.crc32(body))
    back = struct.pack("<I", len(index) // 4 - 1)
    return head + b0 + bz * (n - 1) + index + struct.pack("<I", zlib.crc32(back + head[6:8])) + back + head[6:8] + b"YZ"


def _npy_header(shape: tuple, dtype: str = "<f8") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------
# Generators, one per kind. Each writes its files (variant i) and returns what they must come to.

# -- no code runs
@kind("no_code", "pickle saved under a data extension")
def _pickle_as_data(ctx, i):
    from step_dist.signals.readers import EXTENSIONS

    out = []
    for ext in EXTENSIONS:
        m = ctx.marker(f"pickle{ext}-{i}")
        out.append(Expect(_write(_p(ctx, f"payload/pickle-{i}{ext}"), _payload(m)), marker=m))
    return out


@kind("no_code", "pickle inside tar/zip named as seismic data")
def _pickle_in_archive(ctx, i):
    out = []
    fmts, seismic = list(ARCHIVES), _seismic()
    for j in range(max(len(fmts), len(seismic))):
        fmt, ext = fmts[(i + j) % len(fmts)], seismic[(i + j) % len(seismic)]
        m = ctx.marker(f"archive-{fmt}{ext}-{i}")
        path = _p(ctx, f"payload/{fmt.replace('.', '_')}-{i}{ext}")
        out.append(Expect(_write(path, ARCHIVES[fmt]({f"inner{ext}": _payload(m)})), marker=m))
    return out


@kind("no_code", "pickle inside tar/zip named as other data")
def _pickle_in_archive_other(ctx, i):
    out = []
    for j, ext in enumerate(e for e in _one_ext_per_reader(i) if e not in _seismic()):
        fmt = list(ARCHIVES)[(i + j) % len(ARCHIVES)]
        m = ctx.marker(f"archive-other-{fmt}{ext}-{i}")
        path = _p(ctx, f"payload/other-{fmt.replace('.', '_')}-{i}{ext}")
        out.append(Expect(_write(path, ARCHIVES[fmt]({f"inner{ext}": _payload(m), "inner.mseed": _payload(m)})), marker=m))
    return out


@kind("no_code", "gz/bz2/xz-compressed pickle named as seismic data")
def _pickle_compressed(ctx, i):
    out = []
    gz = lambda b: gzip.compress(b, mtime=0)  # noqa: E731
    for j, (name, comp) in enumerate((("gz", gz), ("bz2", bz2.compress), ("xz", lzma.compress))):
        ext = _seismic()[(i + j) % len(_seismic())]
        m = ctx.marker(f"compressed-{name}{ext}-{i}")
        out.append(Expect(_write(_p(ctx, f"payload/{name}-{i}{ext}"), comp(_payload(m))), marker=m))
    return out


@kind("no_code", "tar member whose path escapes (../)")
def _tar_escape(ctx, i):
    m = os.path.join(ctx.outside, "markers", f"escaped-{i}.sac")  # where ../../ from SRC/payload lands
    rel = os.path.relpath(m, os.path.join(ctx.src, "payload"))
    path = _p(ctx, f"payload/escape-{i}.sac")
    return [Expect(_write(path, _tar({rel: _sample_file(ctx, ".sac", ctx.rng("escape", i))})), marker=m)]


@kind("no_code", "npy with object dtype")
def _npy_object(ctx, i):
    m = ctx.marker(f"npy-object-{i}")
    return [Expect(_npy(_p(ctx, f"payload/object-{i}.npy"), _object_array(m)), marker=m)]


@kind("no_code", "npz holding a pickled member")
def _npz_pickled_member(ctx, i):
    m = ctx.marker(f"npz-object-{i}")
    good = _signal(ctx.rng("npz-object", i), 1, 300)
    path = _p(ctx, f"payload/object-{i}.npz")
    np.savez(path, a_good=good, b_pickled=_object_array(m))
    # the good member may be kept or the whole file refused; either way nothing runs
    return [Expect(path, records=[good], rate=RATE, optional=True, partial=True, marker=m)]


# -- nothing leaks
@kind("no_leak", "HDF5 dataset with external storage")
def _h5_external(ctx, i):
    out = []
    for dtype in ("u1", "<f4"):
        secret, token = ctx.secret(f"h5ext-{dtype[-2:]}-{i}", ctx.rng("h5ext" + dtype, i))
        n = os.path.getsize(secret) // np.dtype(dtype).itemsize
        path = _p(ctx, f"leak/external-{dtype[-2:]}-{i}.h5")
        _h5(path, "signal", shape=(n,), dtype=dtype, external=[(secret, 0, n * np.dtype(dtype).itemsize)], rate=10.0)
        out.append(Expect(path, token=token))
    return out


def _secret_h5(ctx, name: str, i: int) -> tuple[str, bytes]:
    secret, token = ctx.secret(name, ctx.rng(name, i))
    path = secret[:-4] + ".h5"
    with open(secret, "rb") as f:
        _h5(path, "data", np.frombuffer(f.read(), np.uint8), rate=10.0)
    return path, token


@kind("no_leak", "HDF5 external link to a file outside SRC")
def _h5_external_link(ctx, i):
    import h5py

    target, token = _secret_h5(ctx, f"h5link-{i}", i)
    path = _p(ctx, f"leak/extlink-{i}.h5")
    with h5py.File(path, "w") as f:
        f["signal"] = h5py.ExternalLink(target, "/data")
    target2, token2 = _secret_h5(ctx, f"h5grouplink-{i}", i)
    path2 = _p(ctx, f"leak/extlink-group-{i}.h5")
    with h5py.File(path2, "w") as f:  # a soft link in the file, through an external link to a group
        f["group"] = h5py.ExternalLink(target2, "/")
        f["signal"] = h5py.SoftLink("/group/data")
    return [Expect(path, token=token), Expect(path2, token=token2)]


@kind("no_leak", "HDF5 virtual dataset over a file outside SRC")
def _h5_virtual(ctx, i):
    import h5py

    target, token = _secret_h5(ctx, f"h5vds-{i}", i)
    with h5py.File(target, "r") as f:
        n = f["data"].shape[0]
    path = _p(ctx, f"leak/virtual-{i}.h5")
    with h5py.File(path, "w") as f:  # low-level, so the object carries no time stamp (same bytes every run)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_obj_track_times(False)
        space = h5py.h5s.create_simple((n,))
        dcpl.set_virtual(space, target.encode(), b"data", h5py.h5s.create_simple((n,)))
        h5py.h5d.create(f.id, b"signal", h5py.h5t.NATIVE_UINT8, space, dcpl=dcpl)
        f["signal"].attrs["sampling_rate_hz"] = 10.0
    return [Expect(path, token=token)]


@kind("no_leak", "symlink in SRC to a file outside it")
def _symlink_file(ctx, i):
    rng = ctx.rng("symlink", i)
    secret, token = ctx.secret(f"link-npy-{i}", rng)
    with open(secret, "rb") as f:
        target = _npy(secret[:-4] + ".npy", np.frombuffer(f.read(), np.uint8).copy())
    link = _p(ctx, f"leak/link-{i}.npy")
    os.symlink(target, link)  # absolute
    secret2, token2 = ctx.secret(f"link-csv-{i}", rng)
    target2 = secret2[:-4] + ".csv"
    with open(target2, "wb") as f:
        f.write(token2 + b"\n1.5\n2.5\n3.5\n")  # the token is the column name
    link2 = _p(ctx, f"leak/rel-link-{i}.csv")
    os.symlink(os.path.relpath(target2, os.path.dirname(link2)), link2)  # relative, through ../
    return [Expect(link, token=token), Expect(link2, token=token2)]


@kind("no_leak", "symlink in SRC to a folder outside it")
def _symlink_dir(ctx, i):
    folder = os.path.join(ctx.outside, f"secret-dir-{i}")
    os.makedirs(folder, exist_ok=True)
    secret, token = ctx.secret(f"dir-{i}", ctx.rng("symlink-dir", i))
    with open(secret, "rb") as f:
        _npy(os.path.join(folder, "data.npy"), np.frombuffer(f.read(), np.uint8).copy())
    link = _p(ctx, f"leak/linked-dir-{i}")
    os.symlink(folder, link)
    return [Expect(link, token=token)]


# -- peak memory bounded (their own command)
@kind("memory", "HDF5 with an unallocated 250M-element dataset", batch="memory", max_variants=1)
def _h5_unallocated(ctx, i):
    path = _p(ctx, "h5-unallocated.h5", ctx.mem_src)
    _h5(path, "signal", shape=(250_000_000,), dtype="<f8", rate=100.0)  # 2 GB on read, 2 KB on disk
    return [Expect(path, memory=True, changed=True)]


@kind("memory", "npz of compressed zeros", batch="memory", max_variants=1)
def _npz_bomb(ctx, i):
    head = _npy_header(((ctx.bomb_bytes - 128) // 8,))
    assert len(head) == 128
    path = _write(_p(ctx, "zeros-bomb.npz", ctx.mem_src), _zip_zeros("signal.npy", head, ctx.bomb_bytes))
    return [Expect(path, memory=True, changed=True)]


@kind("memory", "tar.xz bomb named .sac", batch="memory", max_variants=1)
def _tar_xz_bomb(ctx, i):
    info = tarfile.TarInfo("inner.sac")
    info.size, info.mtime = ctx.bomb_bytes - 512 - 1024, 0  # header, zeros, the two zero end blocks
    path = _write(_p(ctx, "tar-xz-bomb.sac", ctx.mem_src), _xz_zeros(info.tobuf(tarfile.USTAR_FORMAT), ctx.bomb_bytes))
    return [Expect(path, memory=True, changed=True)]


@kind("memory", "gzip-compressed FITS table declaring 100M rows", batch="memory", max_variants=1)
def _fits_gzip_bomb(ctx, i):
    from astropy.io import fits

    cols = [fits.Column(name="TIME", format="D", array=np.zeros(1)), fits.Column(name="FLUX", format="D", array=np.zeros(1))]
    table = fits.BinTableHDU.from_columns(cols)
    rows = (ctx.bomb_bytes - 2 * 2880) // 16
    table.header["NAXIS2"] = rows
    head = fits.PrimaryHDU().header.tostring().encode() + table.header.tostring().encode()
    path = _write(_p(ctx, "gzip-bomb.fits", ctx.mem_src), _gzip_zeros(head, ctx.bomb_bytes))
    return [Expect(path, memory=True, changed=True)]


@kind("memory", "headers declaring huge sizes (WAV, FLAC, EDF, SAC, FITS, NPY, NPZ, .ts)", batch="memory", max_variants=1)
def _header_lies(ctx, i):
    from astropy.io import fits

    rng = ctx.rng("header-lies", i)
    wav = bytearray(_sample_file(ctx, ".wav", rng))
    pos = wav.find(b"data")
    wav[4:8] = struct.pack("<I", 0xFFFFFFF0)
    wav[pos + 4:pos + 8] = struct.pack("<I", 0xFFFFFF00)  # a data chunk of 4 GB
    flac = bytearray(_sample_file(ctx, ".flac", rng))
    v = int.from_bytes(flac[18:26], "big")  # STREAMINFO: rate 20 bits, channels 3, bits 5, total samples 36
    flac[18:26] = ((v & ~((1 << 36) - 1)) | (1 << 35)).to_bytes(8, "big")  # 34 G samples
    edf = bytearray(_sample_file(ctx, ".edf", rng))
    edf[236:244] = b"99999999"  # number of data records
    sac = bytearray(_sample_file(ctx, ".sac", rng))
    sac[316:320] = struct.pack("<i", 10 ** 9)  # npts (the 10th integer header word)
    buf = io.BytesIO()
    cols = [fits.Column(name="TIME", format="D", array=np.arange(4.0)), fits.Column(name="FLUX", format="D", array=np.ones(4))]
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(buf)
    lc = buf.getvalue().replace(b"NAXIS2  =                    4", b"NAXIS2  =           1000000000", 1)
    npy = _npy_header((10 ** 9, 4)) + bytes(320)
    npz = _zip({"signal.npy": npy})
    ts = ("@problemName lie\n@timeStamps false\n@univariate true\n@equalLength true\n@seriesLength 2000000000\n"
          "@classLabel true a\n@data\n1.0,2.0,3.0:a\n").encode()
    out = [Expect(_write(_p(ctx, f"huge-header{ext}", ctx.mem_src), bytes(data)), memory=True, changed=True)
           for ext, data in ((".wav", wav), (".flac", flac), (".edf", edf), (".sac", sac), (".fits", lc),
                             (".npy", npy), (".npz", npz))]
    # the .ts values are all there (only @seriesLength lies): read them as they are, or refuse the file
    ts_path = _write(_p(ctx, "huge-header.ts", ctx.mem_src), ts)
    return out + [Expect(ts_path, records=[np.array([[1.0, 2.0, 3.0]], np.float32)], rate=RATE, optional=True, memory=True)]


# -- good files: present and bit-exact
@kind("good", "float32 npy")
def _good_npy(ctx, i):
    rng = ctx.rng("good-npy", i)
    x = _signal(rng, int(rng.integers(1, 4)), int(rng.integers(50, 3000)))
    return [Expect(_npy(_p(ctx, f"good/float32-{i}.npy"), x), records=[x], rate=RATE)]


@kind("good", "big-endian and Fortran-order npy, int16 HDF5")
def _good_layouts(ctx, i):
    rng = ctx.rng("good-layouts", i)
    be, fo, ints = _signal(rng, 2, 700), _signal(rng, 3, 500), rng.integers(-32768, 32767, (2, 600)).astype(np.int16)
    p1, p2, p3 = _p(ctx, f"good/big-endian-{i}.npy"), _p(ctx, f"good/fortran-{i}.npy"), _p(ctx, f"good/int16-{i}.h5")
    _npy(p1, be.astype(">f4"))
    _npy(p2, np.asfortranarray(fo))
    _h5(p3, "signal", ints, rate=200.0)
    return [Expect(p1, records=[be], rate=RATE), Expect(p2, records=[fo], rate=RATE),
            Expect(p3, records=[ints.astype(np.float32)], rate=200.0)]


@kind("good", "float WAV")
def _good_wav(ctx, i):
    rng = ctx.rng("good-wav", i)
    x = np.clip(_signal(rng, int(rng.integers(1, 3)), int(rng.integers(100, 4000))) / 1e3, -1, 1)
    path = _p(ctx, f"good/float-{i}.wav")
    _wav(path, x, 8000, "FLOAT")
    return [Expect(path, records=[x], rate=8000.0)]


@kind("good", "16-bit FLAC")
def _good_flac(ctx, i):
    rng = ctx.rng("good-flac", i)
    q = rng.integers(-30000, 30000, (1, 3000)).astype(np.int16)
    path = _p(ctx, f"good/pcm16-{i}.flac")
    _wav(path, q, 16000, "PCM_16")  # int16 written as is; read back in libsndfile's scale, q / 32768
    return [Expect(path, records=[q.astype(np.float32) / np.float32(32768)], rate=16000.0)]


@kind("good", "MiniSEED int32 and SAC float32")
def _good_seismic(ctx, i):
    rng = ctx.rng("good-seismic", i)
    counts, wave = _counts(rng, int(rng.integers(500, 5000))), _signal(rng, 1, int(rng.integers(500, 5000)))[0]
    ms, sac = _p(ctx, f"good/int32-{i}.mseed"), _p(ctx, f"good/float32-{i}.sac")
    _mseed(ms, counts, 50.0, "GOOD")
    _mseed(sac, wave, 40.0, "GOOD", "SAC")
    return [Expect(ms, records=[counts[None].astype(np.float32)], rate=50.0),
            Expect(sac, records=[wave[None]], rate=40.0)]


@kind("good", "UCR .ts (no rate: --rate fills it)")
def _good_ts(ctx, i):
    x = _signal(ctx.rng("good-ts", i), 4, 60)
    path = _p(ctx, f"good/fuzz-{i}_TRAIN.ts")
    _ts(path, x, ["a", "b", "a", "b"])
    return [Expect(path, records=[r[None] for r in x], rate=RATE)]


# -- nothing lost or changed silently
@kind("silent_loss", "CSV without a header row")
def _csv_no_header(ctx, i):
    x = _signal(ctx.rng("csv-noheader", i), 3, 200)
    path = _p(ctx, f"silent/no-header-{i}.csv")
    _csv(path, x)
    return [Expect(path, records=[x], rate=RATE)]


@kind("silent_loss", "WAV shorter than its header says")
def _wav_truncated(ctx, i):
    x = np.clip(_signal(ctx.rng("wav-trunc", i), 1, 16000) / 1e3, -1, 1)
    path = _p(ctx, f"silent/truncated-{i}.wav")
    raw = _wav(path, x, 8000, "FLOAT")
    start = raw.find(b"data") + 8
    _write(path, raw[:start + 7978 * 4])  # 16,000 frames promised, 7,978 there
    return [Expect(path, records=[x[:, :7978]], rate=8000.0, optional=True, changed=True)]


@kind("silent_loss", "npz whose middle array is broken")
def _npz_middle(ctx, i):
    rng = ctx.rng("npz-middle", i)
    a, c = _signal(rng, 1, 400), _signal(rng, 2, 300)
    broken = [np.array(["not", "numbers"]), (rng.standard_normal(8) + 1j).astype(np.complex64),
              np.zeros((2, 2, 2, 2), np.float32)][i % 3]
    path = _p(ctx, f"silent/middle-broken-{i}.npz")
    np.savez(path, a_first=a, b_broken=broken, c_last=c)
    return [Expect(path, records=[a, c], rate=RATE, partial=True)]


@kind("silent_loss", "same file name in two folders")
def _same_name(ctx, i):
    rng = ctx.rng("same-name", i)
    out = []
    for sub in ("one", "two"):
        x = _signal(rng, 1, 500)
        out.append(Expect(_npy(_p(ctx, f"silent/{sub}/same-{i}.npy"), x), records=[x], rate=RATE))
    return out


@kind("silent_loss", "same path under two SRCs of the same folder name")
def _same_name_two_srcs(ctx, i):
    rng = ctx.rng("same-name-srcs", i)
    out = []
    for src in (ctx.src, ctx.src2):
        x = _signal(rng, 1, 500)
        out.append(Expect(_npy(_p(ctx, f"dup/same-{i}.npy", src), x), records=[x], rate=RATE))
    return out


@kind("silent_loss", "names ingest skips (_private, .hidden, _SUCCESS)")
def _skipped_names(ctx, i):
    rng = ctx.rng("skipped", i)
    x, y = _signal(rng, 1, 300), _signal(rng, 1, 300)
    return [Expect(_npy(_p(ctx, f"silent/_private-{i}.npy"), x), records=[x], rate=RATE, optional=True),
            Expect(_npy(_p(ctx, f"silent/.hidden-{i}.npy"), y), records=[y], rate=RATE, optional=True),
            Expect(_write(_p(ctx, f"silent/sub-{i}/_SUCCESS"), b""))]


@kind("silent_loss", "files that are not signals (unknown extension, orphan JSON)")
def _not_signals(ctx, i):
    return [Expect(_write(_p(ctx, f"silent/notes-{i}.txt"), b"field notes\n")),
            Expect(_write(_p(ctx, f"silent/orphan-{i}.npy.json"), b'{"sampling_rate_hz": 5}'))]


# -- paths are not globs
@kind("globs", "glob characters in seismic file names")
def _glob_names(ctx, i):
    rng = ctx.rng("globs", i)
    out = []
    for n, name in enumerate(("[ab].mseed", "a.mseed", "b.mseed", "q?.mseed", "q1.mseed", "s*.sac", "s1.sac")):
        path = _p(ctx, f"globs-{i}/{name}")
        if name.endswith(".sac"):
            x = _signal(rng, 1, 400)[0]
            _mseed(path, x, 50.0, f"G{n}", "SAC")
        else:
            x = _counts(rng, 400)
            _mseed(path, x, 50.0, f"G{n}")
        out.append(Expect(path, records=[x[None].astype(np.float32)], rate=50.0))
    return out


# -- a file's own rate wins over --rate
@kind("rates", "CSV with a 250 Hz time column")
def _csv_time(ctx, i):
    x = _signal(ctx.rng("csv-time", i), 2, 500)
    path = _p(ctx, f"rates/timed-{i}.csv")
    _csv(path, x, ["a", "b"], time_rate=250.0)
    return [Expect(path, records=[x], rate=250.0)]


@kind("rates", "FITS light curve with a time column")
def _fits_time(ctx, i):
    flux = _signal(ctx.rng("fits-time", i), 1, 720)[0]
    path = _p(ctx, f"rates/lightcurve-{i}.fits")
    rate = _fits_lc(path, flux, 120.0)
    return [Expect(path, records=[flux[None]], rate=rate)]


@kind("rates", "rate in an HDF5 attribute, NPY sidecar, NPZ entry")
def _rate_attrs(ctx, i):
    rng = ctx.rng("rate-attrs", i)
    h, n, z = _signal(rng, 2, 400), _signal(rng, 1, 400), _signal(rng, 1, 400)
    hp, npath, zp = _p(ctx, f"rates/attr-{i}.h5"), _p(ctx, f"rates/sidecar-{i}.npy"), _p(ctx, f"rates/entry-{i}.npz")
    _h5(hp, "signal", h, rate=500.0)
    _npy(npath, n, rate=20.0)
    np.savez(zp, x=z, fs=np.float64(40.0))
    return [Expect(hp, records=[h], rate=500.0), Expect(npath, records=[n], rate=20.0), Expect(zp, records=[z], rate=40.0)]


# -- exactness: what float32 cannot hold is refused or flagged, never silently changed
def _exact(path: str) -> Expect:
    return Expect(path, changed=True, reason_not=NAN_WORDS)


@kind("exactness", "float64 below float32's range (1e-50)")
def _underflow(ctx, i):
    rng = ctx.rng("underflow", i)
    x = rng.standard_normal((1, 300))
    x[0, 7] = 1e-50
    np_path = _npy(_p(ctx, f"exact/underflow-{i}.npy"), x)
    csv_path = _p(ctx, f"exact/underflow-{i}.csv")
    _csv(csv_path, x, ["v"])
    wav_path = _p(ctx, f"exact/underflow-{i}.wav")
    _wav(wav_path, x / 10, 8000, "DOUBLE")
    ms_path = _p(ctx, f"exact/underflow-{i}.mseed")
    _mseed(ms_path, x[0], 50.0, "TINY")  # float64 data: encoding FLOAT64
    return [_exact(np_path), _exact(csv_path), _exact(wav_path), _exact(ms_path)]


@kind("exactness", "float64 above float32's range (1e39)")
def _overflow(ctx, i):
    rng = ctx.rng("overflow", i)
    x = rng.standard_normal((1, 300))
    x[0, 11] = 1e39
    np_path = _npy(_p(ctx, f"exact/overflow-{i}.npy"), x)
    z_path = _p(ctx, f"exact/overflow-{i}.npz")
    np.savez(z_path, x=x)
    fits_path = _p(ctx, f"exact/overflow-{i}.fits")
    _fits_lc(fits_path, x[0], 60.0, "D")
    return [_exact(np_path), _exact(z_path), _exact(fits_path)]


@kind("exactness", "integers above 2**24")
def _big_ints(ctx, i):
    rng = ctx.rng("big-ints", i)
    x = _counts(rng, 300)
    x[5] = (1 << 24) + 1
    np_path = _npy(_p(ctx, f"exact/int32-{i}.npy"), x[None])
    ms_path = _p(ctx, f"exact/int32-{i}.mseed")
    _mseed(ms_path, x, 50.0, "BIG")
    h5_path = _p(ctx, f"exact/int64-{i}.h5")
    _h5(h5_path, "signal", np.concatenate([x.astype(np.int64), [(1 << 53) + 1]])[None], rate=10.0)
    csv_path = _p(ctx, f"exact/int-{i}.csv")
    with open(csv_path, "w") as f:
        f.write("v\n" + "\n".join(str(v) for v in x) + "\n")
    wav_path = _p(ctx, f"exact/pcm32-{i}.wav")
    _wav(wav_path, rng.integers(-(1 << 31), (1 << 31) - 1, (1, 400)).astype(np.int32), 8000, "PCM_32")
    return [_exact(np_path), _exact(ms_path), _exact(h5_path), _exact(csv_path), _exact(wav_path)]


# -- broken files of every reader: accounted, never written
@kind("broken", "empty file")
def _empty(ctx, i):
    return [Expect(_write(_p(ctx, f"broken/empty-{i}{ext}"), b"")) for ext in _one_ext_per_reader(i)]


@kind("broken", "random bytes")
def _garbage(ctx, i):
    rng = ctx.rng("garbage", i)
    return [Expect(_write(_p(ctx, f"broken/garbage-{i}{ext}"), rng.integers(0, 256, 700, np.uint8).tobytes()))
            for ext in _one_ext_per_reader(i)]


@kind("broken", "real file cut in half")
def _truncated(ctx, i):
    rng = ctx.rng("truncated", i)
    out = []
    for ext in _one_ext_per_reader(i):
        if ext == ".csv":
            continue  # a CSV cut at a row is just a shorter CSV
        data = _sample_file(ctx, ext, rng)
        out.append(Expect(_write(_p(ctx, f"broken/half-{i}{ext}"), data[: len(data) // 2]), changed=True))
    return out


# -- clear messages
@kind("messages", "file name that is not UTF-8", max_variants=1)
def _bad_name(ctx, i):
    x = _signal(ctx.rng("bad-name", i), 1, 100)
    path = os.fsdecode(os.fsencode(_p(ctx, "messages/x")).replace(b"/x", b"/bad-\xff-name.npy"))
    _npy(path, x)
    shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return [Expect(path, records=[x], rate=RATE, optional=True, reason_not=("corrupt",), aliases=(shown,))]


@kind("messages", "FIFO, link loop, dangling link", max_variants=1)
def _odd_entries(ctx, i):
    fifo, loop, dangling = _p(ctx, "messages/pipe.npy"), _p(ctx, "messages/loop.mseed"), _p(ctx, "messages/dangling.wav")
    os.mkfifo(fifo)
    os.symlink(os.path.basename(loop), loop)
    os.symlink(os.path.join(ctx.outside, "no-such-file.wav"), dangling)
    return [Expect(fifo, fifo=True, reason_not=("does not exist",)), Expect(loop, reason_not=("does not exist",)),
            Expect(dangling)]


# ---------------------------------------------------------------------------------------------------------
# Usage errors: small commands without Ray; each must exit 2 with a message and no traceback

def usage_cases(ctx: Ctx) -> list[tuple[str, list[str], str | None]]:
    """(kind, CLI arguments, marker a payload would create)."""
    d = os.path.join(ctx.root, "usage")
    os.makedirs(os.path.join(d, "src"), exist_ok=True)
    np.save(os.path.join(d, "src", "x.npy"), np.arange(10, dtype=np.float32))
    a_file = _write(os.path.join(d, "a-file.txt"), b"not a folder\n")
    for name, text in (("bad-json", "{not json"), ("json-list", "[1, 2]"), ("no-fields", '{"schema_version": 1}')):
        os.makedirs(os.path.join(d, name), exist_ok=True)
        _write(os.path.join(d, name, "_manifest.json"), text.encode())
    marker = ctx.marker("yaml-tag")
    cfg = _write(os.path.join(d, "evil.yaml"), f"data: !!python/object/apply:builtins.open ['{marker}', 'w']\n".encode())
    src = os.path.join(d, "src")
    return [
        ("ingest --out is a file", ["ingest", src, "--out", a_file, "--rate", "100"], None),
        ("ingest --out unwritable (/proc)", ["ingest", src, "--out", "/proc/fuzz-out", "--rate", "100"], None),
        ("inspect a file", ["inspect", a_file], None),
        ("inspect a manifest that is not JSON", ["inspect", os.path.join(d, "bad-json")], None),
        ("inspect a manifest that is a list", ["inspect", os.path.join(d, "json-list")], None),
        ("inspect a manifest without its fields", ["inspect", os.path.join(d, "no-fields")], None),
        ("pretrain --config with a python YAML tag", ["pretrain", "--config", cfg], marker),
    ]


# ---------------------------------------------------------------------------------------------------------
# Running a command and watching it

@dataclass
class Run:
    name: str
    cmd: list[str]
    rc: int | None = None
    wall_s: float = 0.0
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    killed: str | None = None  # why the watchdog ended it
    peak_rss: int = 0  # bytes: the largest process of the command
    file_rss: dict = field(default_factory=dict)  # SRC path -> peak RSS of the worker reading it
    fifo_opened: set = field(default_factory=set)
    manifest: dict | None = None
    manifest_bytes: bytes = b""
    records: dict = field(default_factory=dict)  # uri -> [SignalRecord]
    rows_text: list = field(default_factory=list)  # (uri, every string of the row joined)
    error: str | None = None
    retried: str | None = None  # the first attempt's output, when Ray did not start and it ran again


def _env(code: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", AWS_EC2_METADATA_DISABLED="true", HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = code + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Watch(threading.Thread):
    """Polls the command's processes: peak RSS (per process, and per SRC file a worker has open), the
    per-worker RLIMIT_AS, the RSS watchdog, and FIFOs (opened for writing the moment a reader opens one,
    then closed, so the reader gets EOF instead of blocking forever)."""

    def __init__(self, pid: int, run: Run, src: str, every: float, headroom: int, kill_rss: int, fifos: list[str]):
        super().__init__(daemon=True)
        self.pid, self.run_, self.src, self.every = pid, run, src.rstrip("/") + "/", every
        self.headroom, self.kill_rss, self.fifos = headroom, kill_rss, fifos
        self.stop = threading.Event()
        self.current: dict[int, set] = {}
        self.capped: set[int] = set()

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            for fifo in self.fifos:
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                    self.run_.fifo_opened.add(fifo)
                except OSError:
                    pass
            try:
                procs = [psutil.Process(self.pid)] + psutil.Process(self.pid).children(recursive=True)
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    self.run_.peak_rss = max(self.run_.peak_rss, rss)
                    if rss > self.kill_rss and not self.run_.killed:
                        self.run_.killed = f"process {p.pid} passed {self.kill_rss >> 20} MB RSS"
                        for q in procs:
                            _kill(q)
                    cmdline = " ".join(p.cmdline()[:3])
                    if not (cmdline.startswith("ray::") or "default_worker" in cmdline):
                        continue  # a Ray worker (its title is ray::IDLE / ray::<task>), not raylet or GCS
                    opened = {f.path for f in p.open_files() if f.path.startswith(self.src)}
                    if opened:
                        self.current[p.pid] = opened
                        if p.pid not in self.capped:  # now it is a working worker: its address space is settled
                            cap = p.memory_info().vms + self.headroom
                            p.rlimit(psutil.RLIMIT_AS, (cap, cap))
                            self.capped.add(p.pid)
                    for path in self.current.get(p.pid, ()):
                        self.run_.file_rss[path] = max(self.run_.file_rss.get(path, 0), rss)
                except psutil.Error:
                    continue
            self.stop.wait(self.every)


def run_command(run: Run, code: str, timeout: float, watch: dict | None = None) -> Run:
    """Run ``run.cmd`` (CLI arguments) under the measuring wrapper; fills rc, output and memory."""
    with tempfile.NamedTemporaryFile(prefix="fuzz-report-", suffix=".json", delete=False) as f:
        report = f.name
    cmd = [sys.executable, os.path.abspath(__file__), "--measured-child", report, "--", sys.executable, "-m",
           "step_dist.cli", *run.cmd]
    t0 = time.time()
    out_f, err_f = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, cwd=code, env=_env(code), stdout=out_f, stderr=err_f, stdin=subprocess.DEVNULL)
    w = Watch(proc.pid, run, **watch) if watch else None
    if w:
        w.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        run.timed_out = True
        for p in _descendants(proc.pid):
            _kill(p)
        proc.kill()
        proc.wait()
    if w:
        w.stop.set()
        w.join()
    run.wall_s = time.time() - t0
    for f, attr in ((out_f, "stdout"), (err_f, "stderr")):
        f.seek(0)
        setattr(run, attr, f.read().decode("utf-8", "replace"))
        f.close()
    try:
        with open(report) as f:
            rep = json.load(f)
        os.remove(report)
        run.rc, run.peak_rss = rep["rc"], max(run.peak_rss, rep["maxrss_kb"] * 1024)
    except (OSError, ValueError):
        run.rc = None
    return run


def load_outputs(run: Run, out: str) -> None:
    """The manifest and every record the command wrote."""
    from step_dist.signals.record import SignalRecord
    from step_dist.signals.shards import MANIFEST, iter_rows

    path = os.path.join(out, MANIFEST)
    if not os.path.exists(path):
        return
    with open(path, "rb") as f:
        run.manifest_bytes = f.read()
    try:
        run.manifest = json.loads(run.manifest_bytes)
        for row in iter_rows(out):
            rec = SignalRecord.from_row(row)
            run.records.setdefault(rec.uri, []).append(rec)
            strings = [str(row.get(k)) for k in ("id", "source", "domain", "label", "split", "uri", "meta")]
            run.rows_text.append((rec.uri, "\n".join(strings + [str(c) for c in rec.channel_names])))
    except Exception as e:  # noqa: BLE001 - a shard set this harness cannot read is itself a finding
        run.error = f"reading the shards failed: {type(e).__name__}: {e}"


# ---------------------------------------------------------------------------------------------------------
# Checking the promises

def _entries(run: Run, e: Expect) -> list[dict]:
    """Quarantine and skip entries that name the file."""
    names = (e.path, *e.aliases)
    m = run.manifest or {}
    out = []
    for entry in list(m.get("quarantined") or []) + list(m.get("skipped") or []):
        uri, reason = str(entry.get("uri") or ""), str(entry.get("reason") or "")
        if reason and any(uri == n or uri.startswith(n + "/") or _mentions(reason, n) for n in names):
            out.append(entry)
    return out


def _mentions(text: str, name: str) -> bool:
    """``name`` in ``text`` as a whole path: x.ms is not named by a reason about x.mseed."""
    start = text.find(name)
    while start >= 0:
        nxt = text[start + len(name):start + len(name) + 1]
        if not (nxt.isalnum() or nxt in "._-"):
            return True
        start = text.find(name, start + 1)
    return False


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(np.ascontiguousarray(a, np.float32).view(np.uint32), b.view(np.uint32))


def _diff(got: np.ndarray, want: list[np.ndarray]) -> str:
    like = [w for w in want if w.shape == got.shape]
    if not like:
        return f"shape {got.shape}, written {[w.shape for w in want]}"
    w = np.asarray(like[0], np.float32)
    bad = np.flatnonzero(w.view(np.uint32) != got.view(np.uint32))
    if not bad.size:
        return "the same record written twice"
    k = bad[0]
    return f"{bad.size} of {w.size} values differ (e.g. [{k}]: {w.ravel()[k]!r} written, {got.ravel()[k]!r} read)"


def _leaks(run: Run, token: bytes) -> list[str]:
    where = []
    if token in run.manifest_bytes:
        where.append("manifest")
    if token.decode() in run.stdout + run.stderr:
        where.append("command output")
    for uri, text in run.rows_text:
        if token.decode() in text:
            where.append(f"strings of a record from {uri}")
    for uri, recs in run.records.items():
        for r in recs:
            v = r.values.ravel()
            as_bytes = bytes(v.astype(np.uint8)) if v.size and np.all((v >= 0) & (v <= 255) & (v == np.round(v))) else b""
            if token in v.tobytes() or token in as_bytes:
                where.append(f"values of {r.id}")
    return where


def check(e: Expect, run: Run, bound: int) -> dict[str, str | None]:
    """promise -> None (held) or what broke."""
    recs = run.records.get(e.path, [])
    entries = _entries(run, e)
    reasons = [str(x.get("reason")) for x in entries]
    res: dict[str, str | None] = {}
    must_not_write = e.records is None and not e.changed
    if run.killed or run.timed_out or run.manifest is None:
        why = run.killed or ("timed out" if run.timed_out else f"no manifest (exit {run.rc})")
        for p in e.promises():
            res[p] = f"the command did not finish: {why}"
        if e.marker:
            res["no_code"] = f"the payload ran: {e.marker} exists" if os.path.exists(e.marker) else None
        if e.memory and e.path in run.file_rss and run.file_rss[e.path] <= bound and not run.killed:
            res["memory"] = None
        return res
    if recs and must_not_write:
        res["accounted"] = f"written as {len(recs)} record(s), though it holds no good signal"
    elif not recs and not entries:
        res["accounted"] = "neither written, quarantined with a reason naming it, nor listed as skipped"
    elif e.partial and not entries:
        res["accounted"] = "a record of it is missing and no reason names the file"
    else:
        res["accounted"] = None
    if e.records is not None:
        want = [np.ascontiguousarray(w, np.float32) for w in e.records]
        left, extra = list(range(len(want))), []
        for r in recs:
            j = next((j for j in left if _same(want[j], r.values)), None)
            if j is None:
                extra.append(r)
            else:
                left.remove(j)
        if extra:
            res["bit_exact"] = f"{len(extra)} record(s) differ from what was written: {_diff(extra[0].values, want)}"
        elif left and not (e.optional and entries):
            res["bit_exact"] = f"{len(left)} of {len(want)} record(s) missing" + ("" if entries else ", without a reason")
        else:
            res["bit_exact"] = None
    if e.rate is not None:
        off = [r.sampling_rate_hz for r in recs if abs(r.sampling_rate_hz - e.rate) > 1e-6 * e.rate]
        if off:
            res["rate"] = f"written at {off[0]:g} Hz; the file says {e.rate:g} Hz (--rate {RATE:g})"
        else:
            res["rate"] = None if recs or e.optional else "not written"
    if e.changed:
        unflagged = [r.id for r in recs if not (r.meta or {}).get("flags")]
        counted = (run.manifest or {}).get("flagged") or {}
        uncounted = sorted({n for r in recs for n in (r.meta or {}).get("flags", {}) if not counted.get(n)})
        if unflagged:
            res["flagged"] = f"written without meta.flags (changed silently): {unflagged[0]}"
        elif uncounted:
            res["flagged"] = f"meta.flags {uncounted} not counted in the manifest's 'flagged'"
        else:
            res["flagged"] = None if recs or entries else "neither flagged nor quarantined"
    if e.reason_not:
        bad = [r for r in reasons if any(w in r.lower() for w in e.reason_not)]
        res["reason"] = f"misleading reason: {bad[0][:160]}" if bad else (None if recs or entries else "no reason given")
    if e.marker:
        res["no_code"] = f"the payload ran: {e.marker} exists" if os.path.exists(e.marker) else None
    if e.token:
        where = _leaks(run, e.token)
        res["no_leak"] = f"the secret's token is in the {', '.join(where[:3])}" if where else None
    if e.memory:
        peak = run.file_rss.get(e.path)
        oom = [r for r in reasons if any(w in r.lower() for w in OOM_WORDS)]
        if peak is not None and peak > bound:
            res["memory"] = f"worker peak RSS {peak >> 20} MB > {bound >> 20} MB while reading it"
        elif oom:
            res["memory"] = f"ran out of memory instead of checking the size first: {oom[0][:160]}"
        elif peak is None and run.peak_rss > bound and not any(v > bound for v in run.file_rss.values()):
            # over the bound, and no file that was seen open explains it
            res["memory"] = f"the command peaked at {run.peak_rss >> 20} MB > {bound >> 20} MB (not attributed to a file)"
        else:
            res["memory"] = None
    if e.fifo:
        res["no_hang"] = "a reader opened the FIFO (it would have blocked forever)" if e.path in run.fifo_opened else None
    return res


def check_exit(run: Run, ok_rcs: tuple[int, ...], marker: str | None = None) -> dict[str, str | None]:
    text = run.stdout + run.stderr
    problems = []
    if run.timed_out or run.killed:
        problems.append(run.killed or "timed out")
    elif run.rc not in ok_rcs:
        problems.append(f"exit {run.rc}, expected {' or '.join(map(str, ok_rcs))}")
    if TRACEBACK in text:
        line = next((ln for ln in reversed(text.strip().splitlines()) if ln.strip()), "")
        problems.append(f"traceback on output ({line.strip()[:140]})")
    for a, b in re.findall(r"\((\d+) of (\d+) file", text):
        if int(a) > int(b):
            problems.append(f"counts that do not add up: '({a} of {b} file(s)'")
    if ok_rcs == (2,) and not text.strip():
        problems.append("no message")
    if run.error:
        problems.append(run.error)
    res: dict[str, str | None] = {"clean_exit": "; ".join(problems) or None}
    if marker:
        res["no_code"] = f"the payload ran: {marker} exists" if os.path.exists(marker) else None
    return res


# ---------------------------------------------------------------------------------------------------------
# The table

@dataclass
class Row:
    cls: str
    kind: str
    files: int = 0
    promises: dict = field(default_factory=dict)  # promise -> [held, broken]
    broken: list = field(default_factory=list)  # (file, promise, what)

    def add(self, where: str, outcome: dict[str, str | None]) -> None:
        for p, what in outcome.items():
            hb = self.promises.setdefault(p, [0, 0])
            hb[0 if what is None else 1] += 1
            if what is not None:
                self.broken.append((where, p, what))

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.cls, "kind": self.kind, "files": self.files,
                "promises": {p: {"held": h, "broken": b} for p, (h, b) in self.promises.items()},
                "held": sum(h for h, _ in self.promises.values()), "broken": sum(b for _, b in self.promises.values()),
                "failures": [{"file": f, "promise": p, "what": w} for f, p, w in self.broken]}


def print_table(rows: list[Row], out=sys.stdout) -> None:
    head = f"{'class':<12} {'kind':<52} {'files':>5}  {'promises checked':<52} {'held':>5} {'broken':>6}"
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        d = r.to_dict()
        promises = ",".join(r.promises)
        print(f"{r.cls:<12} {r.kind[:52]:<52} {r.files:>5}  {promises[:52]:<52} {d['held']:>5} {d['broken']:>6}", file=out)
    print("-" * len(head), file=out)
    tot = {k: sum(r.to_dict()[k] for r in rows) for k in ("files", "held", "broken")}
    print(f"{'total':<12} {str(len(rows)) + ' kinds':<52} {tot['files']:>5}  {'':<52} {tot['held']:>5} {tot['broken']:>6}", file=out)


# ---------------------------------------------------------------------------------------------------------

def generate(ctx: Ctx, budget: int, only: set[str]) -> list[tuple[Kind, list[Expect]]]:
    out = []
    for k in KINDS:
        if only and k.cls not in only:
            continue
        expects: list[Expect] = []
        for i in range(min(budget, k.max_variants)):
            for e in k.fn(ctx, i):
                e.cls, e.kind = k.cls, k.name
                expects.append(e)
        out.append((k, expects))
    return out


def prepare_out(root: str) -> None:
    """A new folder, or one this script filled before (its own subfolders are replaced)."""
    if os.path.isdir(root) and os.listdir(root):
        if not os.path.exists(os.path.join(root, "fuzz.json")):
            raise SystemExit(f"fuzz_ingest: {root} is not empty and holds no fuzz.json; give a new or empty --out")
        for name in ("src", "second", "mem-src", "outside", "usage", "out-main", "out-memory", "fuzz.json"):
            p = os.path.join(root, name)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            elif os.path.lexists(p):
                os.remove(p)
    os.makedirs(root, exist_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=1, help="variants of every kind (default 1: the CI size)")
    ap.add_argument("--out", help="work folder: SRCs, outputs, fuzz.json (default: a new temporary folder)")
    ap.add_argument("--only", default="", help=f"comma-separated classes of {','.join(CLASSES)}")
    ap.add_argument("--code", default=ROOT, help="step-dist checkout under test (default: this one)")
    ap.add_argument("--mem-bound-mb", type=int, default=1536, help="peak RSS of one worker reading a bomb")
    ap.add_argument("--bomb-mb", type=int, default=1600, help="what the npz/tar.xz/FITS bombs decode to")
    ap.add_argument("--worker-as-headroom-mb", type=int, default=4096)
    ap.add_argument("--kill-rss-mb", type=int, default=5120)
    ap.add_argument("--timeout", type=float, default=400.0, help="seconds per ingest command")
    args = ap.parse_args(argv)
    only = {c.strip() for c in args.only.split(",") if c.strip()}
    if only - set(CLASSES) or args.budget < 1 or args.bomb_mb % 16:
        print(f"fuzz_ingest: --only takes {','.join(CLASSES)}; --budget >= 1; --bomb-mb a multiple of 16", file=sys.stderr)
        return 2
    root = os.path.abspath(args.out or tempfile.mkdtemp(prefix="fuzz-ingest-"))
    prepare_out(root)
    ctx = Ctx(root=root, seed=args.seed, src=os.path.join(root, "src"), src2=os.path.join(root, "second", "src"),
              mem_src=os.path.join(root, "mem-src"), outside=os.path.join(root, "outside"), bomb_bytes=args.bomb_mb * MiB)
    for d in (ctx.src, ctx.src2, ctx.mem_src, os.path.join(ctx.outside, "markers")):
        os.makedirs(d, exist_ok=True)
    bound = args.mem_bound_mb * MiB
    t0 = time.time()
    generated = generate(ctx, args.budget, only)
    gen_s = time.time() - t0
    n_files = sum(len(ex) for _, ex in generated)
    print(f"fuzz_ingest: seed {args.seed}, budget {args.budget}: {n_files} files of {len(generated)} kinds in "
          f"{gen_s:.1f} s under {root}", flush=True)

    # usage commands first (side by side: no Ray, small), then the two ingest commands one after the other:
    # two Ray instances starting at once on a busy 2-core machine can miss Ray's 30 s start-up deadline
    cases = usage_cases(ctx) if not only or "messages" in only else []
    usage = [Run(k, cmd) for k, cmd, _ in cases]
    markers = {k: m for k, _, m in cases}
    jobs = [threading.Thread(target=run_command, args=(r, args.code, 180.0)) for r in usage]
    for t in jobs:
        t.start()
    for t in jobs:
        t.join()
    runs: dict[str, Run] = {}
    watch = dict(headroom=args.worker_as_headroom_mb * MiB, kill_rss=args.kill_rss_mb * MiB)
    for batch, srcs in (("main", [ctx.src, ctx.src2]), ("memory", [ctx.mem_src])):
        expects = [e for k, ex in generated if k.batch == batch for e in ex]
        if not expects:
            continue
        out = os.path.join(root, f"out-{batch}")
        cmd = ["ingest", *[s for s in srcs if os.listdir(s)], "--out", out, "--rate", f"{RATE:g}",
               "--h5-dataset", "signal", "--num-cpus", "2"]  # every HDF5 file here names its signal "signal"
        w = dict(src=root, every=0.05 if batch == "memory" else 0.2, fifos=[e.path for e in expects if e.fifo], **watch)
        run = runs[batch] = run_command(Run(batch, cmd), args.code, args.timeout, w)
        if RAY_START_FAILED in run.stderr and not os.path.exists(os.path.join(out, "_manifest.json")):
            print(f"  ingest {batch}: Ray did not start in time (a busy machine); once more", flush=True)
            shutil.rmtree(out, ignore_errors=True)
            run = runs[batch] = run_command(Run(batch, cmd, retried=run.stderr[-1000:]), args.code, args.timeout, w)
        load_outputs(run, out)
        print(f"  ingest {batch}: exit {run.rc}, {run.wall_s:.0f} s, peak process RSS {run.peak_rss >> 20} MB"
              f"{', ' + run.killed if run.killed else ''}{', timed out' if run.timed_out else ''}", flush=True)

    rows: list[Row] = []
    for k, expects in generated:
        row = Row(k.cls, k.name, files=len(expects))
        for e in expects:
            row.add(os.path.relpath(e.path, root), check(e, runs[k.batch], bound))
        rows.append(row)
    for name, run in runs.items():
        row = Row("messages", f"exit code and output of the {name} ingest command", files=0)
        row.add(name, check_exit(run, (3,) if name == "main" else (2, 3)))
        rows.append(row)
    for r in usage:
        row = Row("messages", f"usage: {r.name}", files=1)
        row.add(r.name, check_exit(r, (2,), markers[r.name]))
        rows.append(row)
        runs[f"usage: {r.name}"] = r

    print()
    print_table(rows)
    broken = [b for r in rows for b in r.broken]
    mem = runs.get("memory")
    if mem:
        per_file = ", ".join(f"{os.path.basename(p)} {v >> 20}" for p, v in sorted(mem.file_rss.items()))
        print(f"\nmemory bound: {bound >> 20} MB per worker; peak of the memory command {mem.peak_rss >> 20} MB; "
              f"per file (MB): {per_file or 'none seen open'}")
    if broken:
        print(f"\n{len(broken)} promise(s) broken:")
        for where, p, what in broken[:80]:
            print(f"  [{p}] {where}: {what}")
        if len(broken) > 80:
            print(f"  ... and {len(broken) - 80} more in fuzz.json")
    report = {
        "seed": args.seed, "budget": args.budget, "files": n_files, "generate_s": round(gen_s, 1),
        "mem_bound_mb": args.mem_bound_mb, "bomb_mb": args.bomb_mb, "classes": sorted({r.cls for r in rows}),
        "ok": not broken, "wall_s": round(time.time() - t0, 1),
        "runs": {n: {"cmd": r.cmd, "rc": r.rc, "wall_s": round(r.wall_s, 1), "timed_out": r.timed_out,
                     "killed": r.killed, "peak_rss_mb": r.peak_rss >> 20, "retried": r.retried,
                     "file_rss_mb": {os.path.relpath(p, root): v >> 20 for p, v in r.file_rss.items()},
                     "stderr_tail": r.stderr[-2000:]} for n, r in runs.items()},
        "rows": [r.to_dict() for r in rows],
    }
    with open(os.path.join(root, "fuzz.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    print(f"\n{'all promises held' if not broken else 'PROMISES BROKEN'}; {time.time() - t0:.0f} s; "
          f"{os.path.join(root, 'fuzz.json')}")
    return 0 if not broken else 1


if __name__ == "__main__":
    sys.exit(main())
