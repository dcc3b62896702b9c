"""The SciTS benchmark layout (the tasks STEP reports on) -> signal records -> a labelled shard set.

SciTS ships JSONL files whose rows point at signal files (.wav, .csv, .npy, .fif). A row is accepted in the
flat form or in SciTS's own nested form; the fields read are, first match wins:

  signal file   ``path`` | ``file`` | ``input_ts.segment.seg_path`` (when ``input_ts.already_segment``) |
                ``input_ts.original.ori_path`` | ``input_ts.path``, relative to the dataset root (below).
  label         ``label`` | ``gt_result`` (a scalar, or a mapping with ``label`` / ``answer``) |
                ``gt_text`` (a string, or the first of a list).
  split         ``split`` (train / val / valid / validation / dev / test); else the JSONL file name when it
                contains train / val / valid / test; else the ``split`` argument.
  rate (Hz)     ``sampling_rate_hz`` | ``sampling_rate`` | ``sample_rate`` | ``sr`` | ``fs``, at the top level
                or inside ``input_ts``; .wav and .fif files carry their own rate, which wins; else ``rate_hz``.
  id            ``id`` | ``uid``; else ``<jsonl name>:<line>``.
  source        ``dataset_name`` | ``source``; else the ``source`` argument.   domain: ``domain``, else ``domain``.
  channels      ``channel_names`` | ``channels`` (optional names, one per channel).

Values, as SciTS reads them: .wav through soundfile (float in [-1, 1)); .csv without a header, one column per
channel, 'X' marks a missing sample filled by linear interpolation (a non-numeric first row is taken as
channel names); .npy is [time] or [time, channels]; .fif through mne (the ``eeg`` extra). Lengths are kept
whole here: the 240k-sample cap SciTS applies is the task's ``max_length`` at evaluation time.
A row that cannot become a record is set aside with its reason (listed in the shard set's manifest).

A JSONL file is data from someone else, so nothing in it can make this module read outside the set or
allocate without bound:

- The dataset root is ``base_uri`` if given, else the JSONL file's own folder. A row's signal path must name
  a file inside it: relative, no ``..`` that climbs out after normalisation, no absolute path, no URI (no
  other bucket), and for a local root no symbolic link whose target lies outside the root. Any other path
  sets the row aside with the path and why; nothing is opened.
- Sizes are checked before anything is allocated, with the limits ingest uses (``max_record_bytes``: what a
  record decodes to as float32, ``max_file_bytes``: a signal file's bytes, checked before it is read or
  downloaded): the frames x channels a .wav/.flac header declares, the shape in an .npy header, the lines x
  fields of a .csv, the samples x channels in a .fif header. Only regular files are opened (not FIFOs).
- .wav/.flac files must start as WAV or FLAC and are handed to libsndfile as a stream: on bytes it does not
  recognise, libsndfile would open a Mac resource fork beside the file (``._<name>``), a link or a FIFO.
- .fif files are read through MNE, which follows a split set's link to its next file (a name inside the
  file, which may be absolute or climb out of the folder); a .fif that names another file is set aside.
  MNE's .fif reader runs no pickle or eval; .npy files are read without pickle.
- A JSONL file is at most ``max_jsonl_bytes`` and a line at most ``max_line_bytes``; a line that is not
  UTF-8, not JSON (or nested too deep for it) is set aside with its line number.
"""
from __future__ import annotations

import io
import json
import os
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from step_dist import storage
from step_dist.signals.readers.arrays import npy_header
from step_dist.signals.readers.base import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_RECORD_BYTES,
    ReaderError,
    ReaderOptions,
    check_size,
    local_path,
)
from step_dist.signals.record import SignalRecord

RATE_KEYS = ("sampling_rate_hz", "sampling_rate", "sample_rate", "sr", "fs")
SUFFIXES = (".wav", ".flac", ".csv", ".npy", ".fif")
_SPLIT_WORDS = (("train", "train"), ("valid", "val"), ("val", "val"), ("dev", "val"), ("test", "test"))
# SciTS's own JSONL files are a few MB with rows of a few hundred bytes; these leave a wide margin.
DEFAULT_MAX_JSONL_BYTES = 256 << 20
DEFAULT_MAX_LINE_BYTES = 16 << 20


class ScitsError(ValueError):
    """The SciTS set cannot be read as given (not a record-level problem): the message says what to do."""


class _SetAside(ValueError):
    """One row cannot become a record; the message is the reason, naming the path."""


@dataclass
class ScitsResult:
    records: list[SignalRecord] = field(default_factory=list)
    set_aside: list[dict[str, Any]] = field(default_factory=list)  # {jsonl, line, id, reason}

    def reasons(self) -> Counter:
        return Counter(r["reason"] for r in self.set_aside)


def _dig(row: dict, *keys: str) -> Any:
    node: Any = row
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


def _signal_path(row: dict) -> Any:
    for key in ("path", "file"):
        if isinstance(row.get(key), str) and row[key]:
            return row[key]
    ts = row.get("input_ts")
    if isinstance(ts, dict):
        if ts.get("already_segment") and _dig(ts, "segment", "seg_path"):
            return _dig(ts, "segment", "seg_path")
        return _dig(ts, "original", "ori_path") or ts.get("path")
    return None


def _label(row: dict) -> str | None:
    for value in (row.get("label"), row.get("gt_result"), row.get("gt_text")):
        if isinstance(value, dict):
            value = value.get("label", value.get("answer"))
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None and str(value).strip() != "":
            return str(value).strip()
    return None


def _split(row: dict, jsonl_uri: str, default: str | None) -> str | None:
    if row.get("split"):
        return str(row["split"]).strip().lower()
    name = posixpath.basename(jsonl_uri).lower()
    for word, split in _SPLIT_WORDS:
        if word in name:
            return split
    return default


def _rate(row: dict) -> float | None:
    for node in (row, row.get("input_ts") if isinstance(row.get("input_ts"), dict) else {}):
        for k in RATE_KEYS:
            if node.get(k) is not None:
                try:
                    return float(node[k])
                except (TypeError, ValueError):
                    raise _SetAside(f"sampling rate {k}={node[k]!r} is not a number") from None
    return None


def _channel_names(row: dict, found: list[str]) -> list[str]:
    given = row.get("channel_names") or row.get("channels")
    return [str(n) for n in given] if isinstance(given, list) else found


def _resolve(path: Any, jsonl_uri: str, base_uri: str | None) -> str:
    """The URI of a row's signal file, which must lie inside the dataset root; else _SetAside, nothing opened."""
    if not isinstance(path, str) or "\0" in path:
        raise _SetAside(f"signal path {path!r} is not a file name")
    if "://" in path:
        raise _SetAside(f"signal path {path!r} is a URI; a row must name a file relative to the dataset root")
    if os.path.isabs(path):
        raise _SetAside(f"signal path {path!r} is absolute; a row must name a file relative to the dataset root")
    rel = posixpath.normpath(path)
    if rel in (".", "..") or rel.startswith("../"):
        raise _SetAside(f"signal path {path!r} leads out of the dataset root; a row must name a file inside it")
    root = storage.parse_uri(base_uri or jsonl_uri.rsplit("/", 1)[0])
    uri = storage.parse_uri(root.uri.rstrip("/") + "/" + rel).uri
    if root.scheme == "file":  # the path's own links must not lead out either
        real_root, real = os.path.realpath(root.path), os.path.realpath(uri)
        if os.path.commonpath([real_root, real]) != real_root:
            raise _SetAside(f"signal path {path!r} is a symbolic link (or lies under one) to {real}, outside "
                            f"the dataset root {root.uri}; copy the file into the root instead")
    return uri


def _read_csv(data: bytes) -> tuple[np.ndarray, list[str]]:
    import pandas as pd

    df = pd.read_csv(io.BytesIO(data), header=None, dtype=str, keep_default_na=False)
    names: list[str] = []
    first = df.iloc[0].tolist() if len(df) else []
    if first and not all(_is_number_or_x(v) for v in first):  # a header row: take its names
        names, df = [str(v).strip() for v in first], df.iloc[1:]
    df = df.apply(lambda col: col.str.strip()).replace({"X": np.nan, "x": np.nan, "": np.nan})
    num = df.apply(pd.to_numeric, errors="coerce")
    bad = num.isna() & df.notna()
    if bad.any().any():
        r, c = np.argwhere(bad.to_numpy())[0]
        raise ValueError(f"non-numeric value {df.iat[r, c]!r} at row {r}, column {c}")
    if num.isna().any().any():  # 'X' = missing: SciTS fills by linear interpolation
        num = num.interpolate(method="linear", limit_direction="both")
    return num.to_numpy(dtype=np.float64).T, names


def _is_number_or_x(v: Any) -> bool:
    s = str(v).strip()
    if s in ("X", "x", ""):
        return True
    try:
        float(s)
        return True
    except ValueError:
        return False


def _audio_magic_ok(f: Any) -> bool:
    """A WAV (RIFF/RIFX/RF64) or FLAC (after an optional ID3v2 tag) header. libsndfile probes for a Mac resource
    fork (``._<name>``, ``.AppleDouble/``: siblings of a path, the working folder for a stream) only when it
    does not recognise the bytes; a FIFO there would block it, a link there it would follow."""
    head = f.read(12)
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return True
    if head[:3] == b"ID3" and len(head) >= 10:  # a 10-byte header whose last 4 bytes are a 28-bit size
        f.seek(10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)))
        head = f.read(4)
    return head[:4] == b"fLaC"


def _audio(path: str, opts: ReaderOptions, uri: str) -> tuple[np.ndarray, float | None, list[str]]:
    import soundfile as sf

    with open(path, "rb") as f:  # a stream, not a path: libsndfile then opens nothing beside it
        if not _audio_magic_ok(f):
            raise ReaderError(f"{uri}: not a WAV or FLAC file (its first bytes say otherwise); re-export it")
        f.seek(0)
        info = sf.info(f)  # a FLAC header can declare 2**36 frames in a few bytes: sf.read allocates them
        check_size(opts, info.channels, info.frames, uri, f"{info.format} audio (header)")
        f.seek(0)
        values, rate = sf.read(f, dtype="float32", always_2d=True)
    return values.T, float(rate), []


def _npy(path: str, opts: ReaderOptions, uri: str) -> tuple[np.ndarray, float | None, list[str]]:
    with open(path, "rb") as fh:
        try:
            shape, _, dtype = npy_header(fh)
        except ValueError as e:
            raise ReaderError(f"{uri}: not a valid .npy file ({e}); re-export it with numpy.save") from None
        offset = fh.tell()
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ReaderError(f"{uri}: dtype {dtype} is not a real numeric type; save float or int samples")
    if len(shape) not in (1, 2):
        raise ReaderError(f"{uri}: npy array has shape {shape}; SciTS npy files are [time] or [time, channels]")
    length, n_channels = (shape[0], 1) if len(shape) == 1 else shape
    check_size(opts, n_channels, length, uri, "the .npy array (header)")
    if os.path.getsize(path) < offset + length * n_channels * dtype.itemsize:
        raise ReaderError(f"{uri}: truncated: the header declares {shape} {dtype} but the file is shorter")
    arr = np.load(path, allow_pickle=False)
    return np.asarray(arr.reshape(length, n_channels), dtype=np.float32).T, None, []


def _csv(path: str, opts: ReaderOptions, uri: str) -> tuple[np.ndarray, float | None, list[str]]:
    with open(path, "rb") as f:
        data = f.read()
    # the most pandas can produce: the lines x the first line's fields (a longer row is a parse error)
    lines = data.count(b"\n") + (not data.endswith(b"\n"))
    check_size(opts, data.split(b"\n", 1)[0].count(b",") + 1, lines, uri, "the CSV (lines x fields)")
    values, names = _read_csv(data)
    return values, None, names


def _fif(path: str, opts: ReaderOptions, uri: str) -> tuple[np.ndarray, float | None, list[str]]:
    try:
        import mne
        from mne._fiff.open import fiff_open  # the parse read_raw_fif itself does (mne >= 1.6, the eeg extra)
        from mne._fiff.tree import dir_tree_find
        from mne.io.constants import FIFF
    except ImportError:
        raise ScitsError(
            f"{uri}: reading .fif needs mne; install the eeg extra: pip install 'step-dist[eeg]'"
        ) from None
    # read_raw_fif opens the "next file" a split set names (an absolute name, or one with '..', is followed
    # as it is): refuse any file that names another, before MNE opens anything else.
    fid, tree, _ = fiff_open(Path(path), verbose=False)
    with fid:
        refs = dir_tree_find(tree, FIFF.FIFFB_REF)
    if any(e.kind in (FIFF.FIFF_REF_FILE_NAME, FIFF.FIFF_REF_FILE_NUM) for n in refs for e in n["directory"]):
        raise ReaderError(f"{uri}: the .fif is part of a split set (it names another file to read with it); "
                          "a row must name one whole file: load the set with mne and save it as one file")
    raw = mne.io.read_raw_fif(path, preload=False, allow_maxshield=False, verbose=False)
    if len(raw.filenames) != 1:
        raise ReaderError(f"{uri}: the .fif names other files ({len(raw.filenames)} in all); save it as one file")
    check_size(opts, len(raw.ch_names), raw.n_times, uri, "the .fif recording (header)")
    return raw.get_data().astype(np.float32), float(raw.info["sfreq"]), list(raw.ch_names)


_READERS = {".wav": _audio, ".flac": _audio, ".npy": _npy, ".csv": _csv, ".fif": _fif}


def read_signal(uri: str, opts: ReaderOptions | None = None) -> tuple[np.ndarray, float | None, list[str]]:
    """(values [C, L], rate from the file or None, channel names) for one SciTS signal file, its sizes bounded
    by ``opts`` (ingest's defaults). Whether ``uri`` may be read at all is the caller's: see ``_resolve``."""
    opts = opts or ReaderOptions()
    ext = posixpath.splitext(uri.lower())[1]
    if ext not in SUFFIXES:
        raise ValueError(f"unsupported file type {ext!r} (SciTS files are {', '.join(SUFFIXES)})")
    # a regular file of at most max_file_bytes (its size checked before it is read or downloaded)
    with local_path(uri, max_bytes=opts.max_file_bytes) as path:
        return _READERS[ext](path, opts, uri)


def _jsonl_bytes(uri: str, max_bytes: int) -> bytes:
    """The JSONL's bytes, its size checked before it is read or downloaded."""
    def too_big(size: int | None) -> None:
        if max_bytes and size is not None and size > max_bytes:
            raise _SetAside(f"{storage.parse_uri(uri).uri}: the JSONL is {size / 2**20:.1f} MiB > max_jsonl_bytes "
                            f"{max_bytes / 2**20:.1f} MiB; split it or pass a larger max_jsonl_bytes")

    if storage.parse_uri(uri).is_remote:
        fs, key = storage.fsspec_filesystem(uri)
        too_big(storage.with_retries(lambda: fs.size(key), f"checking {storage.parse_uri(uri).uri}"))
    with local_path(uri) as path:  # a regular file (not a FIFO), downloaded when remote
        too_big(os.path.getsize(path))
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1 if max_bytes else -1)
    too_big(len(data))  # it grew since
    return data


def _jsonl_rows(uri: str, max_bytes: int = DEFAULT_MAX_JSONL_BYTES,
                max_line: int = DEFAULT_MAX_LINE_BYTES) -> Iterable[tuple[int | None, dict | None, str]]:
    """(line number, row or None, why not) per non-blank line; line None: the whole file was set aside."""
    try:
        data = _jsonl_bytes(uri, max_bytes)
    except (_SetAside, ReaderError) as e:
        yield None, None, str(e)
        return
    for n, raw in enumerate(data.splitlines(), start=1):
        if n == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as some editors write
            raw = raw[3:]
        if max_line and len(raw) > max_line:
            yield n, None, (f"line is {len(raw)} bytes > max_line_bytes {max_line}; a SciTS row is a few "
                            "hundred bytes (pass a larger max_line_bytes if this one is meant)")
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            yield n, None, f"not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); save the JSONL as UTF-8"
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield n, None, f"not valid JSON ({e.msg})"
            continue
        except (ValueError, RecursionError) as e:  # an integer of > 4300 digits, nesting deeper than Python's stack
            yield n, None, f"not readable JSON ({type(e).__name__}: {str(e)[:200]})"
            continue
        yield n, row if isinstance(row, dict) else None, "" if isinstance(row, dict) else "a JSON value, not an object"


def read_scits(
    jsonl_uris: str | list[str],
    *,
    base_uri: str | None = None,
    rate_hz: float | None = None,
    source: str = "scits",
    domain: str = "unknown",
    split: str | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_jsonl_bytes: int = DEFAULT_MAX_JSONL_BYTES,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> ScitsResult:
    """Records of one or more SciTS JSONL files (a folder URI means every .jsonl under it). The limits are
    ingest's (0: none); a row over one is set aside with the reason, before anything is allocated."""
    opts = ReaderOptions(max_record_bytes=max_record_bytes, max_file_bytes=max_file_bytes)
    uris: list[str] = []
    for u in [jsonl_uris] if isinstance(jsonl_uris, str) else list(jsonl_uris):
        uris += storage.list_files(u, (".jsonl",)) if not u.lower().endswith(".jsonl") else [storage.parse_uri(u).uri]
    if not uris:
        raise ScitsError(f"no .jsonl files in {jsonl_uris}: give SciTS JSONL files or a folder holding them")
    out = ScitsResult()
    seen: set[str] = set()
    for jsonl in uris:
        for line, row, problem in _jsonl_rows(jsonl, max_jsonl_bytes, max_line_bytes):
            where = {"jsonl": jsonl, "line": line, "id": (row or {}).get("id") or (row or {}).get("uid")}
            if row is None:
                out.set_aside.append({**where, "reason": problem})
                continue
            rid = str(where["id"] or f"{posixpath.basename(jsonl)}:{line}")
            path = _signal_path(row)
            label = _label(row)
            if not path:
                out.set_aside.append({**where, "reason": "no signal file (path / input_ts) in the row"})
                continue
            if label is None:
                out.set_aside.append({**where, "reason": "no label (label / gt_result / gt_text) in the row"})
                continue
            if rid in seen:
                out.set_aside.append({**where, "reason": f"duplicate id {rid}"})
                continue
            file_uri = None
            try:
                file_uri = _resolve(path, jsonl, base_uri)
                values, file_rate, names = read_signal(file_uri, opts)
                rate = file_rate or _rate(row) or rate_hz
            except (ScitsError, ImportError):
                raise
            except FileNotFoundError:
                out.set_aside.append({**where, "reason": f"signal file not found: {file_uri}"})
                continue
            except (_SetAside, ReaderError) as e:  # the message names the path or the file
                out.set_aside.append({**where, "reason": str(e)})
                continue
            except Exception as e:  # noqa: BLE001 - every reader's own error becomes the record's reason
                out.set_aside.append({**where, "reason": f"cannot read {file_uri}: {type(e).__name__}: {e}"})
                continue
            if not rate or not np.isfinite(rate) or rate <= 0:
                out.set_aside.append({**where, "reason": f"no sampling rate for {file_uri}: add sampling_rate_hz to the row or pass rate_hz"})
                continue
            if values.shape[1] == 0:
                out.set_aside.append({**where, "reason": f"{file_uri} holds no samples"})
                continue
            names = _channel_names(row, names)
            if names and len(names) != values.shape[0]:
                names = []  # names that do not match the data are worse than generic ones
            seen.add(rid)
            out.records.append(
                SignalRecord(
                    id=rid,
                    source=str(row.get("dataset_name") or row.get("source") or source),
                    domain=str(row.get("domain") or domain),
                    sampling_rate_hz=float(rate),
                    values=values,
                    channel_names=names,
                    label=label,
                    split=_split(row, jsonl, split),
                    uri=file_uri,
                    index=0,
                    meta={"jsonl": jsonl, "line": line, **({"task": row["task"]} if row.get("task") else {})},
                )
            )
    return out


def ingest_scits(jsonl_uris: str | list[str], out_uri: str, **kwargs: Any) -> dict[str, Any]:
    """Read SciTS JSONL into a labelled shard set at ``out_uri`` (shards + manifest, set-aside rows listed in
    the manifest's ``quarantined``); returns a summary (records, splits, set aside by reason, shard files)."""
    from step_dist.signals.shards import ShardWriter
    from step_dist.signals.validate import Quarantined

    result = read_scits(jsonl_uris, **kwargs)
    with ShardWriter(out_uri, extra={"ingested_from": "scits"}) as writer:
        for record in result.records:
            writer.add(record)
        for r in result.set_aside:
            writer.quarantine(Quarantined(uri=r["jsonl"], reason=r["reason"], index=r["line"], id=r["id"]))
    return {
        "records": len(result.records),
        "splits": dict(Counter(r.split for r in result.records)),
        "set_aside": len(result.set_aside),
        "reasons": dict(result.reasons()),
        "files": [storage.parse_uri(out_uri).join(s["path"]).uri for s in writer.manifest["shards"]],
    }
