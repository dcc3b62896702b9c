"""The extremes of record size both round-trip: 2,000,000 samples x 3 channels and 30 samples x 1 channel."""
from __future__ import annotations

import numpy as np
import pytest

from step_dist.signals.ingest import ingest
from step_dist.signals.readers import ReaderOptions
from step_dist.signals.record import SignalRecord
from step_dist.signals.shards import read_dataset, read_manifest


@pytest.mark.slow
def test_when_records_of_2m_by_3_and_30_by_1_are_ingested_then_both_round_trip_exactly(tmp_path, ray_local):
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    big = rng.standard_normal((3, 2_000_000)).astype(np.float32)
    small = rng.standard_normal(30).astype(np.float32)
    np.save(raw / "big.npy", big)
    np.save(raw / "small.npy", small)
    out = str(tmp_path / "shards")
    ingest([str(raw)], out, ReaderOptions(source="sz", rate_hz=1e6), shard_mb=8)

    m = read_manifest(out)
    assert m["n_records"] == 2 and m["total_samples"] == 6_000_030
    # one record is never split: the 24 MB record sits whole in one shard above the 8 MB target
    assert max(s["bytes"] for s in m["shards"]) == big.nbytes
    rows = {r["id"]: r for r in read_dataset(out).take_all()}
    b, s = SignalRecord.from_row(rows["sz:big.npy#0"]), SignalRecord.from_row(rows["sz:small.npy#0"])
    assert b.values.shape == (3, 2_000_000) and s.values.shape == (1, 30)
    assert np.array_equal(b.values.view("<u4"), big.view("<u4"))
    assert np.array_equal(s.values[0].view("<u4"), small.view("<u4"))
