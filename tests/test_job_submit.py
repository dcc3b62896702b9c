"""The cluster path on one machine: a real `ray start --head` on loopback, `ray job submit --working-dir .`."""
from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import pytest

from step_dist import storage
from tests.pretrain_runs import ROOT
from tests.ray_head import VENV_BIN, RayHead
from tests.signal_factory import write_synthetic_shards

pytestmark = pytest.mark.slow


def _ray(head: RayHead, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**head.env, "RAY_AUTH_MODE": "token"}  # token auth is on for `ray start` clusters (Ray 2.60)
    return subprocess.run([os.path.join(VENV_BIN, "ray"), *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_when_pretrain_is_submitted_as_a_ray_job_then_it_succeeds_and_leaves_a_checkpoint(tmp_path):
    shards = write_synthetic_shards(str(tmp_path / "shards"), 12, seed=5)
    head = RayHead(num_cpus=8)
    try:
        head.wait_ready()
        job_id = f"step-dist-{uuid.uuid4().hex[:8]}"
        runtime_env = {"excludes": [".venv", ".git", "demo_out", "bench_results", "runs", "*.egg-info"]}
        sub = _ray(head, "job", "submit", "--address", head.dashboard, "--submission-id", job_id, "--no-wait",
                   "--working-dir", ".", "--runtime-env-json", json.dumps(runtime_env), "--",
                   "python", "jobs/pretrain.py", "--config", "jobs/configs/tiny.yaml",
                   "--set", "name=submitted", "--set", f"storage={tmp_path / 'runs'}", "--set", f"data.train={shards}",
                   "--set", "train.max_steps=2", "--set", "train.checkpoint_every=2", "--set", "train.num_workers=2")
        assert sub.returncode == 0, sub.stdout[-2000:] + sub.stderr[-2000:]
        deadline, status = time.time() + 600, ""
        while time.time() < deadline:
            status = _ray(head, "job", "status", "--address", head.dashboard, job_id).stdout.lower()
            if any(s in status for s in ("succeeded", "failed", "stopped")):
                break
            time.sleep(3)
        logs = _ray(head, "job", "logs", "--address", head.dashboard, job_id).stdout
        assert "succeeded" in status, f"job status: {status[-500:]}\nlogs:\n{logs[-4000:]}"
        assert "[step-dist] done" in logs
        ckpt = tmp_path / "runs" / "submitted" / "checkpoint_step_00000002"
        assert (ckpt / "trainer_state.json").exists() and (ckpt / "export" / "model.safetensors").exists()
        assert storage.exists(str(tmp_path / "runs" / "submitted" / "outputs" / "metrics.jsonl"))
    finally:
        head.stop()
