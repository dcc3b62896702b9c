"""Rank 0's record of a run next to its checkpoints: metrics.jsonl (carried over on resume) and the tracker,
restarts.jsonl, and how their copies reach a remote run's storage."""
from __future__ import annotations

import json
import os
import tempfile
import time

from step_dist import storage
from step_dist.train.metrics import Tracker

METRICS_SYNC_S = 30.0  # how stale a remote run's metrics.jsonl in storage may get (one small PUT each time)


class RunOutputs:
    """Metrics of one worker (written by rank 0 only) in ``run_dir``: directly for a local run, through a local
    folder copied to storage for a remote one."""

    def __init__(self, run_dir: str, lead: bool, resumed_step: int, tracker: str = "none", run_name: str = ""):
        self.run_dir = run_dir.rstrip("/")
        self.lead = lead
        loc = storage.parse_uri(run_dir)
        self.remote = loc.is_remote
        self.local = tempfile.mkdtemp(prefix="step-dist-metrics-") if self.remote else loc.path
        if lead:
            carry_metrics_over(run_dir, self.local, resumed_step)
        self.tracker = Tracker(self.local, kind=tracker, run_name=run_name, enabled=lead)
        self._last_sync = time.time()

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.tracker.log(step, metrics)

    def publish(self) -> None:
        """A remote run's metrics.jsonl otherwise reaches storage only with each checkpoint: every
        METRICS_SYNC_S, put it there, so `step-dist status` (and the driver's progress line) see recent steps."""
        if self.lead and self.remote and time.time() - self._last_sync >= METRICS_SYNC_S:
            with open(os.path.join(self.local, "metrics.jsonl"), "rb") as f:
                storage.write_bytes(self.run_dir + "/metrics.jsonl", f.read())
            self._last_sync = time.time()

    def sync(self) -> None:
        """Everything written so far to the run's storage (remote runs; local ones write there directly)."""
        if self.lead and self.remote:
            self.tracker.flush()
            storage.upload_dir(self.local, self.run_dir)
        self._last_sync = time.time()

    def close(self) -> None:
        self.tracker.close()
        self.sync()


def quarantine_count(run_dir: str) -> int:
    """The running count of bad records and shards the pipeline has set aside in this run so far."""
    from step_dist.data.pipeline import read_quarantine

    return len(read_quarantine(run_dir.rstrip("/") + "/quarantine"))


def record_restart(run_dir: str, resumed_step: int, resumed: bool) -> None:
    """Append to outputs/restarts.jsonl what a restart cost: the steps logged before the failure that the
    resumed run trains again (read from metrics.jsonl before it is cut back to the checkpoint). A first start
    (no checkpoint, nothing logged) records nothing."""
    try:
        data = storage.read_bytes(run_dir.rstrip("/") + "/metrics.jsonl")
        last = max((int(json.loads(x).get("step", 0)) for x in data.decode().splitlines() if x.strip()), default=0)
    except FileNotFoundError:
        last = 0
    if not resumed and last == 0:
        return
    uri = run_dir.rstrip("/") + "/restarts.jsonl"
    try:
        before = storage.read_bytes(uri)
    except FileNotFoundError:
        before = b""
    entry = {"time": time.time(), "resumed_from_step": resumed_step, "last_logged_step": last,
             "steps_lost": max(last - resumed_step, 0)}
    storage.write_bytes(uri, before + (json.dumps(entry) + "\n").encode())


def carry_metrics_over(run_dir: str, local_out: str, resumed_step: int) -> None:
    """Keep the metrics of the steps the checkpoint covers (and only those: steps logged after it and before a
    crash are trained again), so a resumed run's metrics.jsonl reads as one run."""
    try:
        data = storage.read_bytes(run_dir.rstrip("/") + "/metrics.jsonl")
    except FileNotFoundError:
        data = b""
    rows = [json.loads(x) for x in data.decode().splitlines() if x.strip()]
    keep = [r for r in rows if r.get("step", 0) <= resumed_step]
    os.makedirs(local_out, exist_ok=True)
    with open(os.path.join(local_out, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in keep)
