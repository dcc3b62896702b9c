"""How much a command prints. Quiet by default: our own lines only (one per stage, step_dist/progress.py);
Ray's and Ray Data's progress bars, worker output and notices go to the Ray session's log folder, said once
where. ``step-dist <verb> --verbose`` brings them back to the console.

The CLI sets the mode once per process (set_verbose); library code asks ``verbose()``. Nothing here is read
from the environment.
"""
from __future__ import annotations

import logging

_verbose = False
_announced = False


def set_verbose(on: bool) -> None:
    global _verbose
    _verbose = bool(on)


def verbose() -> bool:
    return _verbose


def ray_init_kwargs() -> dict:
    """ray.init arguments for the mode: quiet keeps worker, actor and raylet output (Ray Train's worker group
    notices, Ray Data's progress from the split coordinator, "N PYTHON worker processes have been started")
    in the session's log files instead of streaming it into ours."""
    if _verbose:
        return {"log_to_driver": True}
    return {"log_to_driver": False, "logging_level": logging.WARNING}


class _DropTokenAuthNotice(logging.Filter):
    """Ray 2.60 warns on every local start that token authentication is on. For the local instance a command
    starts on loopback, that is the right default and nothing for the user to do; clusters are unaffected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Token authentication is enabled" not in record.getMessage()


def quiet_ray_here() -> None:
    """Before ray.init in a command's process: Ray Data's progress bars off (Ray Data copies the driver's
    DataContext into every dataset it runs, the split coordinator's included), Ray Data's console notices off
    (they stay in ray-data.log in the session's log folder), the token notice dropped."""
    if _verbose:
        return
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False  # "Starting execution of Dataset ... Execution plan ..." per epoch
    for h in logging.getLogger("ray.data").handlers:
        if not type(h).__name__.endswith("FileHandler"):
            h.setLevel(logging.ERROR)
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_DropTokenAuthNotice())
    _drop_worker_count_notice()


WORKER_COUNT_NOTICE = "worker processes have been started on node"


def _drop_worker_count_notice() -> None:
    """The raylet warns "N PYTHON worker processes have been started ... 4x the maximum expected startup
    concurrency" whenever more workers run than the machine has cores. A local run gives Ray more logical CPUs
    than cores on purpose (train workers, teacher actors and data tasks must all fit: train/trainer.py,
    local_ray_cpus), so the notice is expected and says nothing to act on. Ray prints it from the driver's
    error-listener thread through ray._private.worker.print_to_stdstream (not through logging, not affected
    by log_to_driver), with colour codes; no setting turns it off, so in quiet mode that function drops this
    one notice and passes every other raylet message on. It stays in the raylet's log."""
    import ray._private.worker as ray_worker

    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "_step_dist_filter", False):
        return  # a Ray without this private function: the notice comes through, nothing breaks

    def print_to_stdstream(data, ignore_prefix: bool):
        lines = [x for x in data.get("lines", []) if WORKER_COUNT_NOTICE not in str(x)]
        if lines:
            original({**data, "lines": lines}, ignore_prefix)

    print_to_stdstream._step_dist_filter = True
    ray_worker.print_to_stdstream = print_to_stdstream


def announce_logs() -> None:
    """Say once per process where Ray's own logs went (quiet mode only)."""
    global _announced
    if _verbose or _announced:
        return
    _announced = True
    path = logs_dir()
    if path:
        print(f"[step-dist] Ray's own logs and progress: {path} (--verbose shows them here)", flush=True)


def logs_dir() -> str | None:
    try:
        import ray

        return ray._private.worker._global_node.get_logs_dir_path()  # no public API names the folder in Ray 2.60
    except Exception:  # noqa: BLE001 - joined a cluster (no local node) or Ray changed: say nothing
        return None
