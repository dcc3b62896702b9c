"""The canonical signal record and its Arrow schema: what every other part of step-dist reads.

Values are stored as the raw little-endian float32 bytes of a C-ordered [n_channels, length] array in a
``large_binary`` column: exact (bit-for-bit), cheap to decode (``np.frombuffer``), and fine for records of
tens of MB, unlike nested lists. Shards are Parquet files of these rows.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 1

RECORD_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # dataset name
        pa.field("domain", pa.string(), nullable=False),  # seismic, eeg, audio, light_curve, ...
        pa.field("sampling_rate_hz", pa.float64(), nullable=False),
        pa.field("channel_names", pa.list_(pa.string()), nullable=False),
        pa.field("n_channels", pa.int32(), nullable=False),
        pa.field("length", pa.int64(), nullable=False),
        pa.field("values", pa.large_binary(), nullable=False),  # float32 LE, C order [n_channels, length]
        pa.field("label", pa.string(), nullable=True),
        pa.field("split", pa.string(), nullable=True),  # train / val / test / None
        pa.field("uri", pa.string(), nullable=False),  # provenance: where the raw file was
        pa.field("index", pa.int64(), nullable=False),  # provenance: record index inside that file
        pa.field("meta", pa.string(), nullable=True),  # JSON: reader details, NaN policy applied, units...
    ],
    metadata={b"step_dist_schema_version": str(SCHEMA_VERSION).encode()},
)

COLUMNS = RECORD_SCHEMA.names


@dataclass
class SignalRecord:
    id: str
    source: str
    domain: str
    sampling_rate_hz: float
    values: np.ndarray  # float32 [n_channels, length]
    channel_names: list[str] = field(default_factory=list)
    label: str | None = None
    split: str | None = None
    uri: str = ""
    index: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = np.asarray(self.values)
        if v.ndim == 1:
            v = v[None, :]
        if v.ndim != 2:
            raise ValueError(f"record {self.id}: values must be [channels, length], got shape {v.shape}")
        self.values = np.ascontiguousarray(v, dtype=np.float32)
        if not self.channel_names:
            self.channel_names = [f"ch{i}" for i in range(self.values.shape[0])]

    @property
    def n_channels(self) -> int:
        return int(self.values.shape[0])

    @property
    def length(self) -> int:
        return int(self.values.shape[1])

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "domain": self.domain,
            "sampling_rate_hz": float(self.sampling_rate_hz),
            "channel_names": list(self.channel_names),
            "n_channels": self.n_channels,
            "length": self.length,
            "values": encode_values(self.values),
            "label": self.label,
            "split": self.split,
            "uri": self.uri,
            "index": int(self.index),
            "meta": json.dumps(self.meta, sort_keys=True) if self.meta else None,
        }

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "SignalRecord":
        meta = row.get("meta")
        return cls(
            id=row["id"],
            source=row["source"],
            domain=row["domain"],
            sampling_rate_hz=float(row["sampling_rate_hz"]),
            values=decode_values(row),
            channel_names=list(row["channel_names"]),
            label=row.get("label"),
            split=row.get("split"),
            uri=row.get("uri", ""),
            index=int(row.get("index", 0)),
            meta=json.loads(meta) if meta else {},
        )


def encode_values(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, dtype="<f4").tobytes()


def decode_values(row: dict[str, Any]) -> np.ndarray:
    """float32 [n_channels, length] from a row (dict from Parquet / Ray Data)."""
    buf = row["values"]
    c, n = int(row["n_channels"]), int(row["length"])
    arr = np.frombuffer(buf, dtype="<f4")
    if arr.size != c * n:
        raise ValueError(
            f"record {row.get('id')}: values hold {arr.size} samples but n_channels x length = {c} x {n}"
        )
    return arr.reshape(c, n)


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)
