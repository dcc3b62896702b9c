"""Shard writer: rolls Parquet files by bytes, writes a manifest that adds up, refuses to overwrite a set."""
from __future__ import annotations

import numpy as np
import pytest

from step_dist import storage
from step_dist.signals.record import SignalRecord
from step_dist.signals.shards import ShardWriter, iter_records, list_shards, read_manifest, write_records
from step_dist.signals.validate import Quarantined


def _records(n: int, length: int = 1000):
    rng = np.random.default_rng(5)
    for i in range(n):
        yield SignalRecord(id=f"s:{i}", source="a" if i % 2 else "b", domain="test", sampling_rate_hz=10.0 * (i + 1),
                           values=rng.standard_normal((1 + i % 3, length + i)).astype(np.float32),
                           label=str(i % 2), split="train", uri=f"/raw/{i}", index=0)


def test_when_records_exceed_the_shard_target_then_new_shards_roll_and_the_manifest_adds_up(tmp_path):
    recs = list(_records(40))
    m = write_records(str(tmp_path / "s"), recs, shard_mb=0.05)  # ~50 KB shards, records 4-12 KB
    assert len(m["shards"]) > 3
    assert sum(s["rows"] for s in m["shards"]) == m["n_records"] == 40
    assert m["total_samples"] == sum(r.values.size for r in recs)
    assert all(s["bytes"] < 0.05 * 2**20 + 12_500 for s in m["shards"])
    a = m["sources"]["a"]
    assert a["records"] == 20 and a["labels"] == {"1": 20} and a["rate_hz"] == [20.0, 400.0] and a["channels"] == [1, 3]
    got = list(iter_records(str(tmp_path / "s")))
    assert [r.id for r in got] == [r.id for r in recs]
    assert all(np.array_equal(g.values, r.values) and g.label == r.label for g, r in zip(got, recs))
    assert len(list_shards(str(tmp_path / "s"))) == len(m["shards"])


def test_when_a_shard_set_exists_then_writing_there_again_is_refused(tmp_path):
    write_records(str(tmp_path / "s"), _records(2))
    with pytest.raises(storage.StorageError, match="already holds a shard set"):
        ShardWriter(str(tmp_path / "s"))


def test_when_ids_repeat_or_records_are_quarantined_then_the_manifest_lists_them_with_reasons(tmp_path):
    with ShardWriter(str(tmp_path / "s")) as w:
        r = next(_records(1))
        w.add(r)
        w.add(r)
        w.quarantine(Quarantined(uri="/raw/x.edf", reason="unreadable"))
    m = read_manifest(str(tmp_path / "s"))
    assert m["n_records"] == 1 and m["n_quarantined"] == 2
    assert {q["reason"] for q in m["quarantined"]} == {"duplicate record id; the first one was kept", "unreadable"}


def test_when_a_folder_has_no_manifest_then_reading_says_it_is_unfinished(tmp_path):
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="not a finished shard set"):
        read_manifest(str(tmp_path / "half"))


def test_when_shards_go_to_s3_then_they_read_back_from_s3(s3_bucket):
    recs = list(_records(5))
    write_records(f"{s3_bucket}/set", recs, shard_mb=0.01)
    got = list(iter_records(f"{s3_bucket}/set"))
    assert [g.id for g in got] == [r.id for r in recs]
    assert all(np.array_equal(g.values, r.values) for g, r in zip(got, recs))
