"""SciTS JSONL (the benchmark STEP reports on) -> signal records, each row read as SciTS's own loader reads it.

What a row's fields mean (path, label, split, rate) is ``scits_rows``; how a signal file becomes values is
``scits_files``; the release layout (``meta_data.jsonl``, one folder per task) and the ``ingest-scits`` verb are
``scits_release``. This module reads JSONL files safely and turns rows into records:

  id        ``id`` | ``uid``; else ``<jsonl name>:<line>``.    source: ``dataset_name``, else ``source``.
  split     ``split``; else a train / val / test token of the JSONL's name; else the ``split`` argument.
  channels  ``channel_names`` | ``channels`` (optional names, one per channel); else the file's.

A JSONL file is data from someone else, so nothing in it can make this module read outside the set or
allocate without bound:

- The dataset root is ``base_uri`` if given, else the JSONL file's own folder. A row's signal path must name
  a file inside it: relative, no ``..`` that climbs out after normalisation, no absolute path, no URI (no
  other bucket), and for a local root no symbolic link whose target lies outside the root. Any other path
  sets the row aside with the path and why; nothing is opened.
- Sizes are checked before anything is allocated, with the limits ingest uses (``max_record_bytes``: what a
  record decodes to as float32, ``max_file_bytes``: a signal file's bytes, checked before it is read or
  downloaded); see ``scits_files`` for each format's declared size and its other guards.
- A JSONL file is at most ``max_jsonl_bytes`` and a line at most ``max_line_bytes``; a line that is not
  UTF-8, not JSON (or nested too deep for it) is set aside with its line number.
A row that cannot become a record is set aside with its reason and a short ``kind`` for summaries.
"""
from __future__ import annotations

import json
import os
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
from step_dist import storage
from step_dist.evaluate.scits_files import ScitsError, SetAside, read_signal, resolve_path
from step_dist.evaluate.scits_rows import provenance, row_id, row_label, row_rate, row_split, signal_path
from step_dist.signals.readers.base import (
    DEFAULT_MAX_FILE_BYTES,
    DEFAULT_MAX_RECORD_BYTES,
    ReaderError,
    ReaderOptions,
    local_path,
)
from step_dist.signals.record import SignalRecord

__all__ = ["ScitsError", "ScitsResult", "ingest_scits", "read_jsonl", "read_scits"]

# SciTS's own JSONL files are a few MB with rows of a few hundred bytes; these leave a wide margin.
DEFAULT_MAX_JSONL_BYTES = 256 << 20
DEFAULT_MAX_LINE_BYTES = 16 << 20


@dataclass
class ScitsResult:
    records: list[SignalRecord] = field(default_factory=list)
    set_aside: list[dict[str, Any]] = field(default_factory=list)  # {jsonl, line, id, kind, reason}

    def reasons(self) -> Counter:
        return Counter(r["reason"] for r in self.set_aside)

    def kinds(self) -> Counter:
        return Counter(r["kind"] for r in self.set_aside)

    def extend(self, other: "ScitsResult") -> None:
        self.records += other.records
        self.set_aside += other.set_aside


@dataclass
class RowOptions:
    """How rows become records: the dataset root, where rates come from, what is kept."""

    root_uri: str
    rate_hz: float | None = None  # --rate: for rows no file, row or table gives a rate
    table_rate_hz: float | None = None  # this task's entry in the per-task rate table
    source: str = "scits"
    domain: str = "unknown"
    split: str | None = None
    keep_unlabelled: bool = False  # rows without a label become records too (pretraining corpus)
    id_prefix: str = ""  # prepended to record ids ("<task>/"), so ids stay unique across a release
    reader: ReaderOptions = field(default_factory=ReaderOptions)


def _channel_names(row: dict, found: list[str]) -> list[str]:
    given = row.get("channel_names") or row.get("channels")
    return [str(n) for n in given] if isinstance(given, list) else found


def _jsonl_bytes(uri: str, max_bytes: int) -> bytes:
    """The JSONL's bytes, its size checked before it is read or downloaded."""
    def too_big(size: int | None) -> None:
        if max_bytes and size is not None and size > max_bytes:
            raise SetAside(f"{storage.parse_uri(uri).uri}: the JSONL is {size / 2**20:.1f} MiB > max_jsonl_bytes "
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
    except (SetAside, ReaderError) as e:
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


def _reject(where: dict, kind: str, reason: str) -> dict:
    return {**where, "kind": kind, "reason": reason}


def _path_kind(reason: str) -> str:
    return "path outside the dataset root" if ("root" in reason or "is a URI" in reason) else "bad signal path"


def _file_kind(reason: str) -> str:
    if "too large" in reason or "too long" in reason or "too many channels" in reason or "MiB" in reason:
        return "over the size limits"
    if ".m4a" in reason:
        return "format not readable here (.m4a)"
    return "unreadable signal file"


def row_record(row: dict, line: int, jsonl: str, opts: RowOptions, seen: set[str]) -> tuple[SignalRecord | None, dict | None]:
    """One row -> (record, None) or (None, set-aside entry {jsonl, line, id, kind, reason})."""
    rid = row_id(row)
    where = {"jsonl": jsonl, "line": line, "id": rid}
    rid = opts.id_prefix + (rid or f"{posixpath.basename(jsonl)}:{line}")
    path = signal_path(row)
    if not path:
        return None, _reject(where, "no signal file", "no signal file in the row (input_ts.original.ori_path, or "
                                                       "input_ts.segment.seg_path when already_segment is true)")
    try:
        label = row_label(row)
    except SetAside as e:
        return None, _reject(where, "malformed label", str(e))
    if label.label is None and not opts.keep_unlabelled:
        return None, _reject(where, "no label", "no label (gt_result.gt_class / contain / answer) in the row")
    if rid in seen:
        return None, _reject(where, "duplicate id", f"duplicate id {rid}")
    try:
        file_uri = resolve_path(path, opts.root_uri)
    except SetAside as e:
        return None, _reject(where, _path_kind(str(e)), str(e))
    try:
        values, file_rate, names, flags = read_signal(file_uri, opts.reader)
        rate = file_rate or row_rate(row) or opts.table_rate_hz or opts.rate_hz
    except (ScitsError, ImportError):
        raise
    except FileNotFoundError:
        return None, _reject(where, "signal file not found", f"signal file not found: {file_uri}")
    except SetAside as e:
        return None, _reject(where, "malformed rate", str(e))
    except ReaderError as e:  # the message names the file
        return None, _reject(where, _file_kind(str(e)), str(e))
    except Exception as e:  # noqa: BLE001 - every reader's own error becomes the record's reason
        return None, _reject(where, "unreadable signal file", f"cannot read {file_uri}: {type(e).__name__}: {e}")
    if not rate or not np.isfinite(rate) or rate <= 0:
        return None, _reject(where, "no sampling rate", (
            f"no sampling rate for {file_uri}: the file carries none and neither does the row; add "
            "sampling_rate_hz to the row, the task to the rate table (--rates), or pass --rate"))
    if values.shape[1] == 0:
        return None, _reject(where, "no samples", f"{file_uri} holds no samples")
    names = _channel_names(row, names)
    if names and len(names) != values.shape[0]:
        names = []  # names that do not match the data are worse than generic ones
    seen.add(rid)
    meta = {"jsonl": jsonl, "line": line, "kind": label.kind, **provenance(row), **label.meta}
    if flags:
        meta["flags"] = flags
    return SignalRecord(
        id=rid,
        source=str(row.get("dataset_name") or row.get("source") or opts.source),
        domain=str(row.get("domain") or opts.domain),
        sampling_rate_hz=float(rate),
        values=values,
        channel_names=names,
        label=label.label,
        split=row_split(row, posixpath.basename(jsonl), opts.split),
        uri=file_uri,
        index=0,
        meta=meta,
    ), None


def read_jsonl(jsonl: str, opts: RowOptions, seen: set[str] | None = None,
               max_jsonl_bytes: int = DEFAULT_MAX_JSONL_BYTES, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
               rows: Iterable[tuple[int | None, dict | None, str]] | None = None) -> ScitsResult:
    """Records of one JSONL file (or of the ``rows`` given, already read from it)."""
    out = ScitsResult()
    seen = set() if seen is None else seen
    for line, row, problem in rows if rows is not None else _jsonl_rows(jsonl, max_jsonl_bytes, max_line_bytes):
        if row is None:
            kind = "JSONL too large" if line is None else "malformed line"
            out.set_aside.append({"jsonl": jsonl, "line": line, "id": None, "kind": kind, "reason": problem})
            continue
        record, rejected = row_record(row, line, jsonl, opts, seen)
        if record is not None:
            out.records.append(record)
        else:
            out.set_aside.append(rejected)
    return out


def jsonl_files(uris: str | list[str]) -> list[str]:
    found: list[str] = []
    for u in [uris] if isinstance(uris, str) else list(uris):
        found += storage.list_files(u, (".jsonl",)) if not u.lower().endswith(".jsonl") else [storage.parse_uri(u).uri]
    return found


def read_scits(
    jsonl_uris: str | list[str],
    *,
    base_uri: str | None = None,
    rate_hz: float | None = None,
    source: str = "scits",
    domain: str = "unknown",
    split: str | None = None,
    keep_unlabelled: bool = False,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    max_jsonl_bytes: int = DEFAULT_MAX_JSONL_BYTES,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> ScitsResult:
    """Records of one or more SciTS JSONL files (a folder URI means every .jsonl under it). The limits are
    ingest's (0: none); a row over one is set aside with the reason, before anything is allocated."""
    reader = ReaderOptions(max_record_bytes=max_record_bytes, max_file_bytes=max_file_bytes)
    uris = jsonl_files(jsonl_uris)
    if not uris:
        raise ScitsError(f"no .jsonl files in {jsonl_uris}: give SciTS JSONL files or a folder holding them")
    out = ScitsResult()
    seen: set[str] = set()
    for jsonl in uris:
        opts = RowOptions(root_uri=base_uri or jsonl.rsplit("/", 1)[0], rate_hz=rate_hz, source=source,
                          domain=domain, split=split, keep_unlabelled=keep_unlabelled, reader=reader)
        out.extend(read_jsonl(jsonl, opts, seen, max_jsonl_bytes, max_line_bytes))
    return out


def ingest_scits(jsonl_uris: str | list[str], out_uri: str, **kwargs: Any) -> dict[str, Any]:
    """Read SciTS JSONL into one labelled shard set at ``out_uri`` (shards + manifest, set-aside rows listed in
    the manifest's ``quarantined``); returns a summary (records, splits, set aside by reason, shard files).
    A whole release, one shard set per task: ``scits_release.ingest_release``."""
    result = read_scits(jsonl_uris, **kwargs)
    writer = write_shard_set(out_uri, result.records, result.set_aside)
    return {
        "records": len(result.records),
        "splits": dict(Counter(r.split for r in result.records)),
        "set_aside": len(result.set_aside),
        "reasons": dict(result.reasons()),
        "files": [storage.parse_uri(out_uri).join(s["path"]).uri for s in writer.manifest["shards"]],
    }


def write_shard_set(out_uri: str, records: list[SignalRecord], set_aside: list[dict], extra: dict | None = None):
    """One shard set (the project's normal one: ``step-dist evaluate --task`` and pretraining read it)."""
    from step_dist.signals.shards import ShardWriter
    from step_dist.signals.validate import Quarantined

    with ShardWriter(out_uri, extra={"ingested_from": "scits", **(extra or {})}) as writer:
        for record in records:
            writer.add(record)
        for r in set_aside:
            writer.quarantine(Quarantined(uri=r["jsonl"], reason=r["reason"], index=r["line"], id=r["id"]))
    return writer
