"""`step-dist status`: the state of a run, a sweep, a target cache or a shard set, read from storage alone.

The folders are built by the project's own writers (the recipe dump, rank 0's Tracker, the checkpoint's
trainer_state.json, the restart log, the quarantine sink, the summary), the way a real run lays them out,
so these tests need no Ray Train run."""
from __future__ import annotations

import json
import os
import tempfile
import time
from types import SimpleNamespace

import pytest

from step_dist import storage
from step_dist.cli import main
from step_dist.config import dump_yaml
from step_dist.status import SCHEMA_VERSION, status_of
from tests.pretrain_runs import load_tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RUN_KEYS = {
    "schema_version", "uri", "kind", "state", "checked_at", "name", "step", "max_steps", "epoch", "last_checkpoint",
    "train_loss", "distill_loss", "val_loss", "val_step", "samples_per_s", "tokens_per_s", "data_wait_frac",
    "skipped_steps", "restarts", "steps_lost", "quarantined", "accounting", "started", "last_update", "wall_s",
    "seconds_per_step", "eta_s", "outputs",
}


def step_metrics(step: int, max_steps: int) -> dict[str, float]:
    """The keys the training loop logs for a step (step_dist/train/loop.py)."""
    loss = 2.0 - step / max_steps
    return {"loss": loss, "loss/fracast": loss / 2, "penalty": 0.0, "grad_norm": 0.5, "lr": 1e-3,
            "samples_per_s": 40.0, "tokens_per_s": 4000.0, "data_wait_frac": 0.1, "cpu_util": 0.9,
            "skipped_steps": 0.0, "epoch": float(step // 4), "distill_loss": loss / 2}


def write_run(run_uri: str, steps: int, max_steps: int = 8, checkpoints: tuple[int, ...] = (), finished: bool = False,
              restart_from: int | None = None, quarantined: int = 0, step_s: float = 2.0, ended_ago_s: float = 0.0) -> None:
    """A run folder as pretrain() and its rank 0 leave it after ``steps`` steps (metrics every step_s seconds,
    the last one ``ended_ago_s`` ago)."""
    from step_dist.data.pipeline import QuarantineSink
    from step_dist.train.checkpoint import TrainerState, write_worker_files
    from step_dist.train.outputs import record_restart
    from step_dist.train.metrics import Tracker
    from step_dist.train.trainer import write_summary

    outputs = storage.parse_uri(run_uri).join("outputs").uri
    cfg = load_tiny([f"train.max_steps={max_steps}", "data.train=unused", f"storage={run_uri.rsplit('/', 1)[0]}"])
    storage.write_bytes(outputs + "/config.yaml", dump_yaml(cfg).encode())
    if restart_from is not None:  # what rank 0 records on a resume, before the steps after it
        storage.write_bytes(outputs + "/metrics.jsonl", b"".join(
            (json.dumps({"step": s, "time": time.time(), **step_metrics(s, max_steps)}) + "\n").encode()
            for s in range(1, restart_from + 2)))
        record_restart(outputs, restart_from, resumed=True)
    with tempfile.TemporaryDirectory() as local:
        tracker = Tracker(local, kind="none")
        t0 = time.time() - ended_ago_s - steps * step_s
        for s in range(1, steps + 1):
            tracker.log(s, step_metrics(s, max_steps))
        tracker.close()
        rows = [json.loads(x) for x in open(os.path.join(local, "metrics.jsonl"))]
        with open(os.path.join(local, "metrics.jsonl"), "w") as f:  # spread the rows in time, as a real run's are
            f.writelines(json.dumps({**r, "time": t0 + r["step"] * step_s}) + "\n" for r in rows)
        storage.upload_dir(local, outputs)
    for s in checkpoints:
        with tempfile.TemporaryDirectory() as folder:
            write_worker_files(folder, TrainerState(step=s, epoch=s // 4, micro_in_epoch=s % 4), rank=0)
            storage.upload_dir(folder, storage.parse_uri(run_uri).join(f"checkpoint_step_{s:08d}").uri)
    QuarantineSink(outputs + "/quarantine").write([{"id": f"r{i}", "uri": "x", "reason": "non-finite values"}
                                                   for i in range(quarantined)])
    if finished:
        storage.write_bytes(outputs + "/accounting.json", json.dumps({"ok": True, "duplicated": 0, "lost": 0,
                                                                      "epochs": [{"epoch": 0}, {"epoch": 1}]}).encode())
        write_summary(outputs, {"run": run_uri, "wall_s": 42.0, "metrics": {}, "quarantined": quarantined})


def test_when_a_run_was_killed_mid_way_then_status_says_stalled_with_its_last_step_and_checkpoint(tmp_path, capsys):
    run = str(tmp_path / "runs" / "tiny")
    write_run(run, steps=5, max_steps=8, checkpoints=(3,), restart_from=3, quarantined=2, ended_ago_s=3600)
    st = status_of(run)  # its last step an hour ago and no summary: the run died
    assert st["kind"] == "run" and st["state"] == "stalled"
    assert (st["step"], st["max_steps"]) == (5, 8)
    assert st["last_checkpoint"]["step"] == 3 and st["last_checkpoint"]["uri"].endswith("checkpoint_step_00000003")
    assert st["restarts"] == 1 and st["steps_lost"] == 1
    assert st["quarantined"] == 2 and st["accounting"] is None and st["eta_s"] is None
    assert st["train_loss"] == pytest.approx(2.0 - 5 / 8)
    # while it still ran, the same files gave an ETA from the pace of its steps (2 s a step, 3 steps to go)
    live = status_of(run, now=st["last_update"] + 1)
    assert live["state"] == "running" and live["eta_s"] == pytest.approx(6.0, rel=0.05)
    assert main(["status", run]) == 0
    out = capsys.readouterr().out
    assert "stalled" in out and "step        5/8" in out and "checkpoint_step_00000003" in out


def test_when_a_run_finished_then_status_reports_its_summary_accounting_and_where_to_look(tmp_path, capsys):
    run = str(tmp_path / "runs" / "tiny")
    write_run(run, steps=8, max_steps=8, checkpoints=(4, 8), finished=True)
    st = status_of(run)
    assert st["state"] == "finished" and st["step"] == 8 and st["eta_s"] == 0.0 and st["wall_s"] == 42.0
    assert st["last_checkpoint"]["step"] == 8
    assert st["accounting"] == {"ok": True, "duplicated": 0, "lost": 0, "epochs": 2}
    assert st["samples_per_s"] == pytest.approx(40.0) and st["data_wait_frac"] == pytest.approx(0.1)
    assert status_of(run + "/outputs")["uri"] == run  # the outputs folder names the same run
    main(["status", run])
    assert "tensorboard --logdir" in capsys.readouterr().out


def test_status_json_keeps_its_schema(tmp_path, capsys):
    run = str(tmp_path / "runs" / "tiny")
    write_run(run, steps=2, max_steps=8, checkpoints=())
    assert main(["status", run, "--json"]) == 0
    st = json.loads(capsys.readouterr().out)
    assert st["schema_version"] == SCHEMA_VERSION == 1
    assert set(st) == RUN_KEYS  # adding a key: add it here and in README; renaming one: bump SCHEMA_VERSION
    assert st["last_checkpoint"] is None


def test_when_a_run_lives_on_s3_then_status_reads_it_there(s3_bucket):
    run = f"{s3_bucket}/runs/tiny"
    write_run(run, steps=6, max_steps=6, checkpoints=(3, 6), finished=True, quarantined=1)
    st = status_of(run)
    assert st["uri"] == run and st["state"] == "finished" and st["step"] == 6
    assert st["last_checkpoint"]["uri"] == f"{run}/checkpoint_step_00000006" and st["quarantined"] == 1


def test_when_a_sweep_runs_and_ends_then_status_counts_its_trials(tmp_path):
    from step_dist.tune import load_sweep
    from step_dist.tune.driver import base_recipe
    from step_dist.tune.results import write_outputs, write_plan

    sweep_file = os.path.join(ROOT, "jobs", "configs", "sweep-tiny.yaml")
    cfg = load_sweep(sweep_file, [f"storage={tmp_path / 'sweeps'}"])
    sweep = str(tmp_path / "sweeps" / cfg.name)
    write_plan(cfg, sweep, 6)
    write_run(f"{sweep}/trials/t1", steps=6, max_steps=6, checkpoints=(6,), finished=True)
    write_run(f"{sweep}/trials/t2", steps=2, max_steps=6)
    st = status_of(sweep)
    assert st["kind"] == "sweep" and st["state"] == "running"
    assert (st["trials_planned"], st["trials_seen"], st["trials_finished"], st["trials_running"]) == (4, 2, 1, 1)

    grid = [SimpleNamespace(metrics={"step": 6, "distill_loss_avg": 0.5, "trial_id": "t1"}, config={}, path="t1", error=None),
            SimpleNamespace(metrics={"step": 2, "distill_loss_avg": 0.9, "trial_id": "t2"}, config={}, path="t2", error=None)]
    write_outputs(grid, cfg, base_recipe(cfg, sweep_file), sweep, 6)
    st = status_of(sweep)
    assert st["state"] == "finished" and st["best"] == "t1" and st["best_recipe"].endswith("best_recipe.yaml")
    assert {t["name"]: t["state"] for t in st["trials"]} == {"t1": "finished", "t2": "stopped_early"}
    assert (st["trials_finished"], st["trials_running"]) == (2, 0)  # a trial ASHA stopped is over, not running


def test_status_of_a_shard_set_and_a_missing_folder(tmp_path, capsys):
    from tests.signal_factory import write_synthetic_shards

    shards = write_synthetic_shards(str(tmp_path / "shards"), 3, seed=0)
    st = status_of(shards)
    assert st["kind"] == "shard_set" and st["records"] == 3 and st["state"] == "finished"
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert "nothing there" in capsys.readouterr().err
