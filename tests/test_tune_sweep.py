"""A real Ray Tune sweep of real Ray Train + DeepSpeed pretraining runs on CPU (the tiny recipe)."""
from __future__ import annotations

import csv
import json
import os

import pytest
import yaml

from step_dist import storage
from tests.signal_factory import write_synthetic_shards

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP_TINY = os.path.join(ROOT, "jobs", "configs", "sweep-tiny.yaml")


def test_when_four_trials_sweep_the_tiny_recipe_then_asha_stops_some_teachers_run_once_and_the_best_recipe_trains(
        tmp_path, ray_local):
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

    # the best recipe is a pretraining recipe that runs as is (a short run), still without running teachers
    best = load_config(res.best_recipe_uri, ["train.max_steps=1", "train.checkpoint_every=1"])
    assert best.student["n_max"] == res.best["student.n_max"]
    assert best.teachers[0].weight == pytest.approx(res.best["teachers.fracast.weight"])
    out = pretrain(best)
    assert out.metrics["step"] == 1 and out.export_uri
    assert len(os.listdir(res.cache_uri)) == 1
