"""Fault handling around a run: Ray Train's failure policy from the recipe, just-in-time checkpoints on
preemption, and errors that say what failed and what is safe when a run cannot go on.

What each fault costs (see jobs/chaos.py for the measured figures):
- a train worker or its node dies: Ray Train restarts the worker group (train.max_failures times) and every
  rank resumes from the last registered checkpoint: at most train.checkpoint_every steps are trained again;
- a spot node announces its preemption: the next step boundary writes a just-in-time checkpoint, so the
  restart loses nothing (preemptions are retried without limit, apart from max_failures);
- a teacher actor dies: Ray Data restarts it and re-runs the batches it held (teachers[*].pool.max_restarts,
  max_task_retries): nothing is lost or duplicated;
- the object store hiccups: every storage call retries with backoff (step_dist.storage); when it stays down
  the run fails with StorageUnavailable naming the last checkpoint, which is intact because Ray Train
  registers a checkpoint only after every rank's upload completed.
"""
from __future__ import annotations

from typing import Any

from step_dist.storage import StorageError

# substrings of the errors object-store clients raise when the endpoint cannot be reached
_UNREACHABLE = ("NETWORK_CONNECTION", "Could not connect", "Connection refused", "EndpointConnectionError",
                "ConnectionError", "ConnectTimeout", "Failed to establish a new connection", "Unable to connect",
                "storage still failing")


class StorageUnavailable(StorageError):
    """The run's object store stayed unreachable after retries; the last registered checkpoint is intact."""


def failure_config(train_cfg):
    """Ray Train's FailureConfig from the recipe: ``train.max_failures`` restarts for real failures (a worker
    process or node lost), preemptions retried separately and without limit (each restarts from the latest
    checkpoint, which the just-in-time save makes current)."""
    from ray.train import FailureConfig

    return FailureConfig(max_failures=int(train_cfg.max_failures), max_preemption_failures=-1)


class PreemptionWatch:
    """Asks Ray Train every ``every`` steps whether a node of this run is about to be reclaimed.

    ray.train.get_preemption_info() is a barrier across ranks: every rank calls ``should_checkpoint`` at the
    same steps (it is called from the step loop, which all ranks run in lock step)."""

    def __init__(self, every: int):
        self.every = int(every)
        self.saved_for: Any = None

    def should_checkpoint(self, step: int) -> bool:
        if self.every <= 0 or step % self.every:
            return False
        import ray.train

        info = ray.train.get_preemption_info()
        if info is None or self.saved_for is not None:
            return False
        self.saved_for = info  # one just-in-time checkpoint per announced preemption
        return True


def _chain(error: BaseException) -> list[BaseException]:
    out, seen = [], set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        out.append(e)
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return out


def is_storage_outage(error: BaseException) -> bool:
    text = " ".join(f"{type(e).__name__}: {e}" for e in _chain(error))
    return any(s in text for s in _UNREACHABLE)


def last_registered_checkpoint(run_uri: str) -> str | None:
    """The newest checkpoint Ray Train registered for a run (from its checkpoint_manager_snapshot.json), or
    None when there is none or the store cannot be read. Only registered checkpoints are ever resumed from."""
    import json

    from step_dist import storage

    try:
        snap = json.loads(storage.with_retries(
            lambda: storage.fsspec_filesystem(run_uri)[0].cat_file(
                storage.parse_uri(run_uri.rstrip("/") + "/checkpoint_manager_snapshot.json").path),
            "reading the checkpoint registry", attempts=1))
    except Exception:  # noqa: BLE001 - best effort: the store may be the thing that is down
        return None
    latest = snap.get("latest_checkpoint_result") or {}
    name = latest.get("checkpoint_dir_name")
    return f"{run_uri.rstrip('/')}/{name}" if name else None


def explain_failure(error: BaseException, run_uri: str, last_checkpoint: str | None, max_failures: int) -> BaseException:
    """The error a user sees when ``trainer.fit()`` failed: a storage outage becomes StorageUnavailable naming
    the store, the last checkpoint and how to resume; anything else is returned unchanged."""
    if not is_storage_outage(error):
        return error
    where = last_checkpoint or last_registered_checkpoint(run_uri) or (
        f"the newest one listed in {run_uri}/checkpoint_manager_snapshot.json (the store could not be read to "
        "name it)")
    first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    return StorageUnavailable(
        f"the run's storage at {run_uri} stayed unreachable after retries (train.max_failures={max_failures} "
        f"restarts used): {first}. The last registered checkpoint is {where}; it is complete (checkpoints are "
        "registered only after every rank finished uploading). When the store is back, run the same recipe "
        "again (same name and storage) to resume from it."
    )
