"""Signals: the canonical record, format readers, validation, ingest into Parquet shards."""
from step_dist.signals.record import (
    COLUMNS,
    RECORD_SCHEMA,
    SCHEMA_VERSION,
    SignalRecord,
    decode_values,
    encode_values,
    rows_to_table,
)

__all__ = [
    "COLUMNS",
    "RECORD_SCHEMA",
    "SCHEMA_VERSION",
    "SignalRecord",
    "decode_values",
    "encode_values",
    "rows_to_table",
]
