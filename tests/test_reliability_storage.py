"""The object store goes away during a real run on moto S3: briefly (the run survives on retries) or for good
(the run fails with a clear message and its last checkpoint intact). Also: a corrupt shard is set aside."""
from __future__ import annotations

import json
import os
import time

import pytest

from step_dist import storage
from tests.fault_injection import start_moto, stop_moto, when
from tests.pretrain_runs import load_tiny, losses, overrides
from tests.signal_factory import synthetic_records, write_synthetic_shards

pytestmark = pytest.mark.slow


def _s3_sets(bucket: str, name: str, **kv) -> list[str]:
    shards = write_synthetic_shards(f"{bucket}/shards", 8, seed=21, min_len=300, max_len=1200)
    return overrides(**{"name": name, "storage": f"{bucket}/runs", "data.train": shards, "data.batch_size": 4,
                        "train.num_workers": 1, "train.zero_stage": 0, "train.checkpoint_every": 1, **kv})


def test_when_the_store_is_down_for_a_few_seconds_then_the_run_rides_it_out_without_a_restart(s3_server, s3_bucket, ray_local):
    from step_dist.train import pretrain

    cfg = load_tiny(_s3_sets(s3_bucket, "blip", **{"train.max_steps": 5, "train.max_failures": 0}))
    marker = f"{s3_bucket}/runs/blip/checkpoint_step_00000002/trainer_state.json"

    def outage() -> float:
        stop_moto(s3_server)
        t0 = time.time()
        time.sleep(6)  # several checkpoint uploads fall into the outage (one per step)
        start_moto(s3_server)
        return time.time() - t0

    blip = when(lambda: storage.exists(marker), outage)
    try:
        result = pretrain(cfg)
    finally:
        blip.join(timeout=120)
        if blip.error is not None or blip.result is None:
            start_moto(s3_server)  # never leave the session's store down
    assert blip.error is None and blip.result >= 6
    assert result.metrics["step"] == 5
    assert not result.restarts, "a short outage is absorbed by retries, not by restarting the workers"
    assert sorted(losses(result.outputs_uri)) == [1, 2, 3, 4, 5]
    assert result.checkpoint_uri.endswith("checkpoint_step_00000005")


def test_when_the_store_stays_down_then_the_run_fails_clearly_and_its_last_checkpoint_is_intact(s3_server, s3_bucket, ray_local, tmp_path):
    from step_dist.model import STEPEncoder
    from step_dist.train import pretrain
    from step_dist.train.faults import StorageUnavailable
    from step_dist.train.safety import check_checkpoint_files

    cfg = load_tiny(_s3_sets(s3_bucket, "down", **{"train.max_steps": 40, "train.max_failures": 0}))
    marker = f"{s3_bucket}/runs/down/checkpoint_step_00000002/trainer_state.json"
    down = when(lambda: storage.exists(marker), lambda: stop_moto(s3_server))
    try:
        with pytest.raises(StorageUnavailable) as err:
            pretrain(cfg)
    finally:
        down.join(timeout=60)
        start_moto(s3_server)
    msg = str(err.value)
    assert f"{s3_bucket}/runs/down" in msg and "unreachable" in msg and "run the same recipe again" in msg
    assert "last registered checkpoint is" in msg and "checkpoint_" in msg, msg

    # the store is back: the checkpoint Ray Train registered last is whole and loads
    from step_dist.train.faults import last_registered_checkpoint

    last = last_registered_checkpoint(f"{s3_bucket}/runs/down")
    assert last is not None and last.startswith(f"{s3_bucket}/runs/down/checkpoint_step_")

    state = json.loads(storage.read_bytes(last + "/trainer_state.json"))
    # the outage may cut the registration of the step-2 checkpoint short: then step 1 is the one to resume
    assert last.endswith(f"checkpoint_step_{state['step']:08d}") and state["step"] >= 1
    local = storage.local_copy(last, cache_dir=str(tmp_path / "dl"))
    assert os.path.exists(os.path.join(local, "deepspeed", f"step_{state['step']:08d}", "mp_rank_00_model_states.pt"))
    assert check_checkpoint_files(local) >= 1
    enc = STEPEncoder.from_pretrained(last + "/export")
    assert enc.config is not None


def test_when_a_shard_in_the_middle_is_corrupt_then_it_is_quarantined_with_its_reason_and_the_run_completes(tmp_path, ray_local):
    from step_dist.signals.shards import list_shards, write_records
    from step_dist.train import pretrain

    shards_uri = str(tmp_path / "shards")
    records = synthetic_records(12, seed=31, min_len=300, max_len=1200)
    write_records(shards_uri, records, shard_mb=0.004)  # ~4 kB shards: several files
    files = list_shards(shards_uri)
    assert len(files) >= 3, files
    bad = files[len(files) // 2]
    import pyarrow.parquet as pq

    bad_ids = set(pq.read_table(bad, columns=["id"]).column("id").to_pylist())
    with open(bad, "r+b") as f:  # garbage over the middle of the file: header and footer kept, pages broken
        size = os.path.getsize(bad)
        f.seek(8)
        f.write(os.urandom(size - 16))

    cfg = load_tiny(overrides(name="corrupt", storage=str(tmp_path / "runs"), **{
        "data.train": shards_uri, "data.batch_size": 2, "train.num_workers": 1, "train.zero_stage": 0,
        "train.max_steps": 3, "train.checkpoint_every": 3}))
    result = pretrain(cfg)
    assert result.metrics["step"] == 3
    from step_dist.data.pipeline import read_quarantine

    q = read_quarantine(result.outputs_uri + "/quarantine")
    shard_entries = [e for e in q if e.get("stage") == "shard"]
    assert [e["uri"] for e in shard_entries] == [bad], q
    assert "unreadable shard" in shard_entries[0]["reason"]
    assert result.quarantined >= 1
    # good data is never lost: the pipeline still yields every record of the other shards
    from step_dist.train.ledger import expected_views, read_ledger

    views = expected_views(cfg.data)
    assert sorted(rid for rid, _ in views) == sorted(r.id for r in records if r.id not in bad_ids)
    trained = {rid for _, rid, _ in read_ledger(result.outputs_uri)}
    assert trained and not trained & bad_ids
