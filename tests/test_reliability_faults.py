"""Real faults during real runs (Ray Train + DeepSpeed on CPU): a train worker SIGKILLed, a teacher actor
SIGKILLed. The run must finish, lose at most one checkpoint interval and train every view once per epoch."""
from __future__ import annotations

import pytest

from tests.fault_injection import max_logged_step, sigkill_one, when
from tests.pretrain_runs import load_tiny, losses, overrides
from tests.signal_factory import write_synthetic_shards

pytestmark = pytest.mark.slow

# 16 records, 1 view each, micro-batch 4, one worker: 4 steps per epoch with no tail to drop, so exactly-once
# is exact (every view, every epoch)
N_RECORDS, BATCH = 16, 4


def _common(tmp_path, **kv) -> dict:
    shards = write_synthetic_shards(str(tmp_path / "shards"), N_RECORDS, seed=11, min_len=300, max_len=1200)
    return {"storage": str(tmp_path / "runs"), "data.train": shards, "data.batch_size": BATCH,
            "train.num_workers": 1, "train.zero_stage": 0, **kv}


def _assert_every_view_once_per_epoch(result, epochs: int) -> None:
    acc = result.accounting
    assert acc is not None and acc["ok"], acc
    assert [e["epoch"] for e in acc["epochs"]] == list(range(epochs))
    for e in acc["epochs"]:
        assert e["complete"] and e["expected"] == N_RECORDS
        assert e["trained"] == e["distinct"] == N_RECORDS, e
        assert e["duplicated"] == 0 and e["unseen"] == 0 and e["unexpected"] == 0


def test_when_a_train_worker_is_killed_mid_run_then_it_resumes_from_its_last_checkpoint_losing_at_most_one_interval(
        tmp_path, ray_local):
    from step_dist.train import pretrain

    every = 2
    cfg = load_tiny(overrides(name="killw", **_common(tmp_path, **{
        "train.max_steps": 8, "train.checkpoint_every": every, "train.max_failures": 1})))
    outputs = str(tmp_path / "runs" / "killw" / "outputs")
    # kill once a checkpoint exists and the run has gone past it: mid-interval, with work to lose
    killer = when(lambda: max_logged_step(outputs) >= 3, lambda: (max_logged_step(outputs), sigkill_one("RayTrainWorker")))
    result = pretrain(cfg)
    killer.join(timeout=60)
    assert killer.error is None, killer.error
    step_at_kill, _pid = killer.result

    assert result.metrics["step"] == 8
    assert sorted(losses(result.outputs_uri)) == list(range(1, 9)), "every step logged once across the restart"
    assert len(result.restarts) == 1, result.restarts
    r = result.restarts[0]
    assert r["resumed_from_step"] % every == 0 and r["resumed_from_step"] >= 2
    assert r["last_logged_step"] >= step_at_kill
    assert 0 < r["steps_lost"] <= every, f"lost more than one checkpoint interval: {r}"
    _assert_every_view_once_per_epoch(result, epochs=2)


def test_when_a_teacher_actor_is_killed_mid_epoch_then_every_record_is_trained_exactly_once(tmp_path, ray_local):
    from step_dist.train import pretrain

    # small teacher batches: the epoch is many actor calls, so the kill lands with batches in flight
    cfg = load_tiny(overrides(name="killt", **_common(tmp_path, **{"train.max_steps": 8, "train.checkpoint_every": 8})))
    cfg.teachers[0].pool.batch_size = 2
    outputs = str(tmp_path / "runs" / "killt" / "outputs")
    killer = when(lambda: max_logged_step(outputs) >= 1, lambda: sigkill_one("TeacherTargetsUDF"))
    result = pretrain(cfg)
    killer.join(timeout=60)
    assert killer.error is None, killer.error
    assert isinstance(killer.result, int)

    assert result.metrics["step"] == 8
    assert not result.restarts, "a teacher fault must not cost the trainer a restart"
    _assert_every_view_once_per_epoch(result, epochs=2)


def test_when_a_half_uploaded_checkpoint_folder_is_left_behind_then_the_rerun_resumes_from_the_last_registered_one(
        tmp_path, ray_local):
    """A crash during an upload leaves a checkpoint folder in storage that Ray Train never registered; a rerun
    must resume from the last registered checkpoint, never from the partial folder."""
    import os
    import shutil

    from step_dist.train import pretrain

    # the subject is the checkpoint, not the teachers: the first run builds a target cache the rerun reads
    common = _common(tmp_path, **{"train.checkpoint_every": 2, "targets.mode": "cache",
                                  "targets.cache": str(tmp_path / "targets")})
    first = pretrain(load_tiny(overrides(name="half", **{**common, "train.max_steps": 2})))
    assert first.checkpoint_uri.endswith("checkpoint_step_00000002")
    run = tmp_path / "runs" / "half"
    partial = run / "checkpoint_step_00000004"  # what a killed upload of step 4 leaves: some files, cut short
    shutil.copytree(run / "checkpoint_step_00000002", partial)
    os.remove(partial / "trainer_state.json")
    model = partial / "deepspeed" / "step_00000002" / "mp_rank_00_model_states.pt"
    model.write_bytes(model.read_bytes()[:100])

    second = pretrain(load_tiny(overrides(name="half", **{**common, "train.max_steps": 4})))
    assert [r["resumed_from_step"] for r in second.restarts] == [2]
    assert second.metrics["step"] == 4 and sorted(losses(second.outputs_uri)) == [1, 2, 3, 4]
    assert (partial / "trainer_state.json").exists(), "the step-4 folder is now the real, complete checkpoint"
