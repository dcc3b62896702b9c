"""Helpers for end-to-end pretraining tests: recipes, runs in a separate process that can be killed, metrics."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from step_dist import storage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "jobs", "configs", "tiny.yaml")


def overrides(**kv) -> list[str]:
    return [f"{k}={v}" for k, v in kv.items()]


def load_tiny(sets: list[str]):
    from step_dist.train import load_config

    return load_config(TINY, sets)


def losses(outputs_uri: str) -> dict[int, float]:
    rows = [json.loads(x) for x in storage.read_bytes(outputs_uri.rstrip("/") + "/metrics.jsonl").decode().splitlines() if x.strip()]
    return {int(r["step"]): float(r["loss"]) for r in rows if "loss" in r}  # validation rows carry val/ keys only


def validation_rows(outputs_uri: str) -> dict[int, dict]:
    rows = [json.loads(x) for x in storage.read_bytes(outputs_uri.rstrip("/") + "/metrics.jsonl").decode().splitlines() if x.strip()]
    return {int(r["step"]): {k: v for k, v in r.items() if k.startswith("val/")} for r in rows if "val/distill_loss" in r}


def start_pretrain_process(sets: list[str], log_path: str) -> subprocess.Popen:
    """`python jobs/pretrain.py` in its own process group (its own local Ray), so the test can kill all of it."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    log = open(log_path, "w")
    args = [sys.executable, os.path.join(ROOT, "jobs", "pretrain.py"), "--config", TINY]
    for s in sets:
        args += ["--set", s]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill_when(proc: subprocess.Popen, exists_uri: str, timeout_s: float = 600) -> None:
    """SIGKILL the whole process group as soon as ``exists_uri`` appears (a real, unannounced stop)."""
    deadline = time.time() + timeout_s
    try:
        while time.time() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"the run ended (rc={proc.returncode}) before {exists_uri} appeared")
            if storage.exists(exists_uri):
                return
            time.sleep(0.5)
        raise AssertionError(f"{exists_uri} did not appear within {timeout_s} s")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)
