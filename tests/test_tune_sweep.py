"""A real Ray Tune sweep of real Ray Train + DeepSpeed pretraining runs on CPU (the tiny recipe)."""
from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from step_dist import storage
from step_dist.signals.shards import write_records
from tests.signal_factory import synthetic_records, write_synthetic_shards

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP_TINY = os.path.join(ROOT, "jobs", "configs", "sweep-tiny.yaml")


def test_when_four_trials_sweep_the_tiny_recipe_then_asha_stops_some_teachers_run_once_and_the_best_recipe_trains(
        tmp_path, ray_local, capsys):
    from step_dist.teachers.cache import complete_runs
    from step_dist.train import load_config, pretrain
    from step_dist.tune import load_sweep, run_sweep

    shards = write_synthetic_shards(str(tmp_path / "shards"), 8, seed=7)
    cfg = load_sweep(SWEEP_TINY, [f"storage={tmp_path / 'sweeps'}"])
    cfg.set += [f"data.train={shards}", "train.max_steps=4"]
    res = run_sweep(cfg, SWEEP_TINY)

    rows = res.rows
    assert len(rows) == 4 and not any(r["error"] for r in rows), [r["error"] for r in rows]
    assert any(r["stopped_early"] for r in rows), "ASHA stopped no trial"
    assert all(r["steps"] < 4 for r in rows if r["stopped_early"])
    finished = [r for r in rows if not r["stopped_early"]]
    assert finished and all(r["steps"] == 4 for r in finished)
    # ASHA stops a trial at its last step (max_t): the trials' runs still got to write their outputs
    assert all(storage.exists(f"{res.sweep_uri}/trials/{r['trial']}/outputs/summary.json") for r in finished)
    assert res.best["distill_loss_avg"] == min(r["distill_loss_avg"] for r in finished)
    assert all(sum(r[f"teachers.{t}.weight"] for t in ("fracast", "crepe")) == pytest.approx(1.0) for r in rows)

    # the teachers ran once: one finished cache run (no unfinished ones either), and every trial read it
    assert len(complete_runs(res.cache_uri)) == 1
    assert len(os.listdir(res.cache_uri)) == 1
    for r in rows:
        trial_cfg = yaml.safe_load(storage.read_bytes(f"{res.sweep_uri}/trials/{r['trial']}/outputs/config.yaml"))
        assert trial_cfg["targets"] == {"mode": "cache", "cache": res.cache_uri, "build_if_missing": True}

    # the table, its JSON twin and the plot
    with open(res.table_uri) as f:
        table = list(csv.DictReader(f))
    assert sorted(t["trial"] for t in table) == sorted(r["trial"] for r in rows)
    summary = json.loads(storage.read_bytes(f"{res.sweep_uri}/results.json"))
    assert summary["best"] == res.best["trial"] and len(summary["trials"]) == 4
    assert storage.read_bytes(res.plot_uri)[:8] == b"\x89PNG\r\n\x1a\n"

    # the same sweep again restores the finished experiment (random search, its space passed back): no new trial
    again = run_sweep(cfg, SWEEP_TINY)
    out = capsys.readouterr().out
    with capsys.disabled():
        print("\n" + _table_in(out, "sweep-tiny"))
    assert f"resuming the sweep at {res.sweep_uri}" in out
    seen = lambda rs: [(r["trial"], r["steps"], r["stopped_early"]) for r in rs]  # noqa: E731
    assert seen(again.rows) == seen(rows)
    assert again.best["trial"] == res.best["trial"]

    # the best recipe is a pretraining recipe that runs as is (a short run), still without running teachers
    best = load_config(res.best_recipe_uri, ["train.max_steps=1", "train.checkpoint_every=1"])
    assert best.student["n_max"] == res.best["student.n_max"]
    assert best.teachers[0].weight == pytest.approx(res.best["teachers.fracast.weight"])
    out = pretrain(best)
    assert out.metrics["step"] == 1 and out.export_uri
    assert len(os.listdir(res.cache_uri)) == 1


def _trial_statuses(sweep_dir: str) -> dict[str, str]:
    """Trial id -> status in the newest experiment state Tune saved there (what Tuner.restore reads)."""
    names = sorted(n for n in os.listdir(sweep_dir) if n.startswith("experiment_state-") and n.endswith(".json"))
    if not names:
        return {}
    try:
        with open(os.path.join(sweep_dir, names[-1])) as f:
            state = json.load(f)
    except ValueError:  # caught while Tune replaces it
        return {}
    trials = [json.loads(trial_json) for trial_json, _ in state["trial_data"]]
    return {t["trial_id"]: t["status"] for t in trials}


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a Ray of its own, as a user's run


def _sweep_command(config: str, log: str) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, os.path.join(ROOT, "jobs", "sweep.py"), "--config", config],
                                cwd=os.path.dirname(config), env=_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group: the kill takes its Ray too


def test_when_an_optuna_probe_f1_sweep_is_killed_then_rerunning_it_resumes_keeps_finished_trials_and_ranks_by_f1(
        tmp_path):
    shards = write_synthetic_shards(str(tmp_path / "shards"), 8, seed=7)
    task = str(tmp_path / "task")
    write_records(task, synthetic_records(12, seed=1, label=True, split="train")
                  + synthetic_records(8, seed=2, label=True, split="val")
                  + synthetic_records(4, seed=3, label=True, split="test"))
    with open(SWEEP_TINY) as f:
        sweep = yaml.safe_load(f)
    sweep.update(name="resume", storage=str(tmp_path / "sweeps"), data_train=shards,
                 recipe=os.path.join(ROOT, "jobs", "configs", "tiny.yaml"), num_samples=2, max_concurrent_trials=1,
                 search="optuna",
                 objective={"kind": "probe_f1", "task": task, "split": "val"},
                 # ASHA on, with its only rung at the last step: it sees every trial end, stops none early
                 asha={"enabled": True, "grace_period": 2, "reduction_factor": 2})
    sweep["set"] = [s for s in sweep["set"] if not s.startswith(("train.max_steps", "train.checkpoint_every"))]
    sweep["set"] += ["train.max_steps=2", "train.checkpoint_every=2"]
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(sweep))
    sweep_dir = str(tmp_path / "sweeps" / "resume")

    # 0. what a kill in a sweep's first seconds leaves: the Tuner made (tuner.pkl), no experiment state yet.
    #    Tune's restore of it restarts the experiment with the pickled searcher (no space unless given one).
    made = ("import ray, sys; ray.init(address='local', num_cpus=1, include_dashboard=False)\n"
            "from step_dist.tune.driver import base_recipe, build_tuner, load_sweep\n"
            "cfg = load_sweep(sys.argv[1]); build_tuner(cfg, base_recipe(cfg, sys.argv[1]), restore=False)")
    subprocess.run([sys.executable, "-c", made, str(config)], env=_env(), check=True, timeout=300)
    assert "tuner.pkl" in os.listdir(sweep_dir) and not _trial_statuses(sweep_dir)

    # 1. the sweep runs until Tune has saved its first trial as finished, then the whole process group dies
    t0 = time.time()
    first = _sweep_command(str(config), str(tmp_path / "first.log"))
    finished: list[str] = []
    try:
        while not finished:
            assert first.poll() is None, "the sweep ended before its interruption:\n" + _tail(tmp_path / "first.log")
            assert time.time() - t0 < 900, "no trial finished in 15 min:\n" + _tail(tmp_path / "first.log")
            time.sleep(1.0)
            finished = [t for t, s in _trial_statuses(sweep_dir).items() if s == "TERMINATED"]
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    killed_s = time.time() - t0
    assert "stopped before Tune saved any trial: starting it afresh" in (tmp_path / "first.log").read_text()
    assert len(finished) == 1
    done_id = finished[0]
    done_summary = storage.read_bytes(f"{sweep_dir}/trials/{done_id}/outputs/summary.json")
    assert not os.path.exists(f"{sweep_dir}/results.json")  # it really did not get to the end

    # 2. the same command again: Tune's state is restored, the finished trial kept, the sweep completes
    t1 = time.time()
    second = _sweep_command(str(config), str(tmp_path / "second.log"))
    rc = second.wait(timeout=900)
    log = (tmp_path / "second.log").read_text()
    print(f"\n[test] killed after {killed_s:.0f} s ({done_id} finished); the re-run took {time.time() - t1:.0f} s\n"
          + _table_in(log, "resume"))
    assert rc == 0, _tail(tmp_path / "second.log")
    assert f"resuming the sweep at {sweep_dir}" in log
    assert "Failed to restore" not in log and "no search space" not in log

    summary = json.loads(storage.read_bytes(f"{sweep_dir}/results.json"))
    rows = summary["trials"]
    assert len(rows) == 2 and not any(r["error"] for r in rows), rows
    assert done_id in {r["trial"] for r in rows}  # the same experiment, not a restarted one
    assert all(r["steps"] == 2 and 0.0 <= r["probe_f1"] <= 1.0 for r in rows), rows
    # the finished trial was not run again: its pretraining run's summary is the one the first process wrote
    assert storage.read_bytes(f"{sweep_dir}/trials/{done_id}/outputs/summary.json") == done_summary
    # ranked by the probe: the best is the trial with the highest F1, and its recipe was written
    assert summary["metric"] == "probe_f1" and summary["mode"] == "max"
    assert summary["best"] == max(rows, key=lambda r: r["probe_f1"])["trial"]
    assert f"best trial {summary['best']}" in storage.read_bytes(f"{sweep_dir}/best_recipe.yaml").decode()


def _table_in(log: str, name: str) -> str:
    """The results table a sweep printed (the first one, when the log holds several runs)."""
    head = rf"^\[step-dist\] sweep {re.escape(name)}: \d+ trial\(s\), \d+ stopped early"
    m = re.search(head + r".*?^\[step-dist\] table: .*?$", log, re.M | re.S)
    return m.group(0) if m else f"(no table for sweep {name} in the output)"


def _tail(path, n: int = 60) -> str:
    try:
        return "\n".join(open(path, errors="replace").read().splitlines()[-n:])
    except FileNotFoundError:
        return "(no output)"
