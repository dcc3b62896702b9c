"""Parquet shards of SignalRecords, rolled by bytes, on any storage URI, with a ``_manifest.json`` beside them.

Shards are sized by payload bytes, not rows, because one record can be 30 samples or tens of MB. A record is
never split across shards, so a shard holding one huge record may exceed the target. The manifest is written
last: a folder without one is an unfinished write.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from step_dist import storage
from step_dist.signals.record import RECORD_SCHEMA, SCHEMA_VERSION, SignalRecord
from step_dist.signals.validate import Quarantined

MANIFEST = "_manifest.json"
DEFAULT_SHARD_MB = 64.0
ROW_GROUP_BYTES = 8 << 20  # small row groups let Ray Data split a big shard into several read tasks


@dataclass
class _SourceStats:
    records: int = 0
    samples: int = 0
    bytes: int = 0
    domains: set = field(default_factory=set)
    rate_hz: list = field(default_factory=lambda: [float("inf"), 0.0])
    length: list = field(default_factory=lambda: [1 << 62, 0])
    channels: list = field(default_factory=lambda: [1 << 30, 0])
    labels: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)

    def add(self, row: dict[str, Any]) -> None:
        self.records += 1
        self.samples += row["n_channels"] * row["length"]
        self.bytes += len(row["values"])
        self.domains.add(row["domain"])
        for key, v in (("rate_hz", row["sampling_rate_hz"]), ("length", row["length"]), ("channels", row["n_channels"])):
            lo_hi = getattr(self, key)
            lo_hi[0], lo_hi[1] = min(lo_hi[0], v), max(lo_hi[1], v)
        if row["label"] is not None:
            self.labels[row["label"]] = self.labels.get(row["label"], 0) + 1
        s = row["split"] or "none"
        self.splits[s] = self.splits.get(s, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records, "samples": self.samples, "bytes": self.bytes, "domains": sorted(self.domains),
            "rate_hz": self.rate_hz, "length": self.length, "channels": self.channels,
            "labels": dict(sorted(self.labels.items())), "splits": dict(sorted(self.splits.items())),
        }


class ShardWriter:
    """Add records (or rows) and quarantine entries; ``close()`` writes the last shard and the manifest.

    Use as a context manager; on an exception no manifest is written, so readers see the set as unfinished.
    """

    def __init__(self, out_uri: str, shard_mb: float = DEFAULT_SHARD_MB, prefix: str = "part", extra: dict | None = None):
        if shard_mb <= 0:
            raise ValueError(f"shard size must be > 0 MB, got {shard_mb}")
        self.loc = storage.parse_uri(out_uri)
        self.target = int(shard_mb * (1 << 20))
        self.prefix = prefix
        self.extra = dict(extra or {})
        self.fs, self.root = storage.arrow_filesystem(self.loc.uri)
        if self.loc.scheme == "file":
            storage.makedirs(self.loc.uri)
        if storage.exists(self.loc.join(MANIFEST).uri):
            raise storage.StorageError(f"{self.loc.uri} already holds a shard set ({MANIFEST}); choose another --out or delete it")
        self.shards: list[dict[str, Any]] = []
        self.quarantined: list[dict[str, Any]] = []
        self.skipped: list[dict[str, Any]] = []  # files deliberately not read (hidden, '_' names, sidecars), with why
        self.flagged: dict[str, int] = {}  # records kept with a change or finding recorded in meta.flags, per flag
        self.sources: dict[str, _SourceStats] = {}
        self.ids: set[str] = set()
        self._buf: list[dict[str, Any]] = []
        self._buf_bytes = 0
        self._writer: pq.ParquetWriter | None = None
        self._shard_bytes = 0
        self._shard_rows = 0
        self.manifest: dict[str, Any] | None = None

    def add(self, record: SignalRecord | dict[str, Any]) -> None:
        row = record.to_row() if isinstance(record, SignalRecord) else record
        if row["id"] in self.ids:
            self.quarantine(Quarantined(uri=row["uri"], index=row["index"], id=row["id"], reason="duplicate record id; the first one was kept"))
            return
        self.ids.add(row["id"])
        self._count_flags(row.get("meta"))
        self.sources.setdefault(row["source"], _SourceStats()).add(row)
        self._buf.append(row)
        self._buf_bytes += len(row["values"])
        if self._buf_bytes >= min(ROW_GROUP_BYTES, self.target) or self._shard_bytes + self._buf_bytes >= self.target:
            self._flush()

    def add_table(self, table: pa.Table) -> None:
        for row in table.to_pylist():
            self.add(row)

    def quarantine(self, entry: Quarantined | dict[str, Any]) -> None:
        self.quarantined.append(entry.to_dict() if isinstance(entry, Quarantined) else dict(entry))

    def skip(self, entry: dict[str, Any]) -> None:
        self.skipped.append(dict(entry))

    def _count_flags(self, meta: str | None) -> None:
        """Count the record's meta.flags (and a NaN repair) so the manifest says how many records were kept
        with something changed or found wrong, by kind."""
        if not meta or ('"flags"' not in meta and '"nan_policy"' not in meta):
            return
        parsed = json.loads(meta)
        names = list(parsed.get("flags", {}))
        if "nan_policy" in parsed:
            names.append("nan_repaired")
        for name in names:
            self.flagged[name] = self.flagged.get(name, 0) + 1

    def _flush(self) -> None:
        if not self._buf:
            return
        if self._writer is None:
            name = f"{self.prefix}-{len(self.shards):05d}.parquet"
            sink = storage.with_retries(lambda: self.fs.open_output_stream(f"{self.root}/{name}"), f"opening {self.loc.uri}/{name}")
            self._writer = pq.ParquetWriter(sink, RECORD_SCHEMA, compression="zstd", compression_level=1)
            self.shards.append({"path": name, "rows": 0, "bytes": 0})
            self._sink = sink
        self._writer.write_table(pa.Table.from_pylist(self._buf, schema=RECORD_SCHEMA))
        self._shard_bytes += self._buf_bytes
        self._shard_rows += len(self._buf)
        self.shards[-1].update(rows=self._shard_rows, bytes=self._shard_bytes)
        self._buf, self._buf_bytes = [], 0
        if self._shard_bytes >= self.target:
            self._close_shard()

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._sink.close()
            self._writer = None
            self._shard_bytes = self._shard_rows = 0

    def close(self) -> dict[str, Any]:
        self._flush()
        self._close_shard()
        totals = {"records": sum(s.records for s in self.sources.values()), "samples": sum(s.samples for s in self.sources.values())}
        self.manifest = {
            "schema_version": SCHEMA_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "n_records": totals["records"],
            "total_samples": totals["samples"],
            "total_bytes": sum(s["bytes"] for s in self.shards),
            "n_quarantined": len(self.quarantined),
            "sources": {k: v.to_dict() for k, v in sorted(self.sources.items())},
            "shards": self.shards,
            "quarantined": self.quarantined,
            "flagged": dict(sorted(self.flagged.items())),
            "n_skipped": len(self.skipped),
            "skipped": self.skipped,
            **self.extra,
        }
        storage.write_bytes(self.loc.join(MANIFEST).uri, json.dumps(self.manifest, indent=1, default=str).encode())
        return self.manifest

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._writer is not None:
            self._writer.close()
            self._sink.close()


def write_records(out_uri: str, records: Iterable[SignalRecord], shard_mb: float = DEFAULT_SHARD_MB, **kw) -> dict[str, Any]:
    with ShardWriter(out_uri, shard_mb=shard_mb, **kw) as w:
        for r in records:
            w.add(r)
    return w.manifest


def read_manifest(uri: str) -> dict[str, Any]:
    loc = storage.parse_uri(uri)
    m_uri = loc.join(MANIFEST).uri
    try:
        data = json.loads(storage.read_bytes(m_uri))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{m_uri} not found: {loc.uri} is not a finished shard set (run `step-dist ingest ... --out {loc.uri}`)"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{m_uri} is not valid JSON ({e}); the shard set is damaged: re-ingest it") from None
    if not isinstance(data, dict):
        raise ValueError(f"{m_uri} does not hold a manifest (a JSON object); the shard set is damaged: re-ingest it")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{m_uri}: schema version {data.get('schema_version')} but this step-dist reads {SCHEMA_VERSION}; re-ingest")
    problem = _manifest_problem(data)
    if problem:
        raise ValueError(f"{m_uri} is malformed ({problem}); the shard set is damaged: re-ingest it")
    return data


_MANIFEST_FIELDS = {"n_records": int, "total_samples": int, "total_bytes": int, "n_quarantined": int,
                    "sources": dict, "shards": list, "quarantined": list}
_RANGE_KEYS = ("rate_hz", "length", "channels")


def _manifest_problem(data: dict[str, Any]) -> str | None:
    """What is missing or mistyped in a manifest, checked once here so that no reader of it crashes later."""
    for key, kind in _MANIFEST_FIELDS.items():
        if not isinstance(data.get(key), kind):
            return f"'{key}' missing or not a{'n' if kind is int else ''} {kind.__name__}"
    for i, s in enumerate(data["shards"]):
        if not (isinstance(s, dict) and isinstance(s.get("path"), str)) or "/" in s["path"] or s["path"].startswith("."):
            return f"shards[{i}] is not {{'path': '<file in the set>'}}"
    for name, s in data["sources"].items():
        if not isinstance(s, dict) or not all(isinstance(s.get(k), list) and len(s[k]) == 2 for k in _RANGE_KEYS) \
                or not isinstance(s.get("records"), int) or not isinstance(s.get("labels", {}), dict) \
                or not isinstance(s.get("splits", {}), dict) or not isinstance(s.get("domains", []), list):
            return f"sources[{name!r}] lacks records / rate_hz / length / channels"
    for i, q in enumerate(data["quarantined"]):
        if not (isinstance(q, dict) and isinstance(q.get("reason"), str) and isinstance(q.get("uri"), str)):
            return f"quarantined[{i}] is not {{'uri', 'reason'}}"
    return None


def list_shards(uri: str) -> list[str]:
    """Shard URIs in order, from the manifest (never a stray file that happens to sit in the folder)."""
    loc = storage.parse_uri(uri)
    return [loc.join(s["path"]).uri for s in read_manifest(uri)["shards"]]


def read_dataset(uri: str, **read_parquet_kwargs):
    """A Ray Data Dataset of shard rows (columns of RECORD_SCHEMA); decode values with SignalRecord.from_row."""
    import ray.data

    shards = list_shards(uri)
    fs, _ = storage.arrow_filesystem(uri)
    paths = [storage.arrow_filesystem(s)[1] for s in shards]
    if not paths:
        return ray.data.from_items([])
    return ray.data.read_parquet(paths, filesystem=fs, schema=RECORD_SCHEMA, **read_parquet_kwargs)


def iter_records(uri: str) -> Iterator[SignalRecord]:
    """SignalRecords one by one without Ray (small sets, tests, inspection)."""
    for row in iter_rows(uri):
        yield SignalRecord.from_row(row)


# A row group is decoded whole: one declaring more than this (ours are ~8 MiB, or one record of at most
# ingest's record limit) is refused before it is decompressed, so a small zstd file cannot expand to gigabytes.
MAX_ROW_GROUP_BYTES = 1 << 30


def iter_rows(uri: str, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    fs, _ = storage.arrow_filesystem(uri)
    for shard in list_shards(uri):
        path = storage.arrow_filesystem(shard)[1]
        with fs.open_input_file(path) as f:
            pf = pq.ParquetFile(f)
            for i in range(pf.num_row_groups):
                declared = pf.metadata.row_group(i).total_byte_size
                if declared > MAX_ROW_GROUP_BYTES:
                    raise ValueError(f"{shard}: row group {i} declares {declared / 2**20:.0f} MiB uncompressed, more than "
                                     f"any shard step-dist writes ({MAX_ROW_GROUP_BYTES >> 20} MiB); re-ingest the data")
                yield from pf.read_row_group(i, columns=columns).to_pylist()
