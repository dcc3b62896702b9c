"""Signals: the canonical record, format readers, validation, ingest into Parquet shards."""
from step_dist.signals.readers import EXTENSIONS, ReaderError, ReaderOptions, read_records
from step_dist.signals.record import (
    COLUMNS,
    RECORD_SCHEMA,
    SCHEMA_VERSION,
    SignalRecord,
    decode_values,
    encode_values,
    rows_to_table,
)
from step_dist.signals.shards import ShardWriter, iter_records, iter_rows, list_shards, read_dataset, read_manifest, write_records
from step_dist.signals.validate import Quarantined, ValidationConfig, apply_nan_policy, check, validate_record

__all__ = [
    "COLUMNS",
    "EXTENSIONS",
    "RECORD_SCHEMA",
    "SCHEMA_VERSION",
    "Quarantined",
    "ReaderError",
    "ReaderOptions",
    "ShardWriter",
    "SignalRecord",
    "ValidationConfig",
    "apply_nan_policy",
    "check",
    "decode_values",
    "encode_values",
    "iter_records",
    "iter_rows",
    "list_shards",
    "read_dataset",
    "read_manifest",
    "read_records",
    "rows_to_table",
    "validate_record",
    "write_records",
]
