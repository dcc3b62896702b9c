"""`step-dist status URI`: where a run, a sweep, a target cache or a shard set stands, from storage alone.

The kind is told from the files present (status/run.py and status/others.py list them). ``status_of``
returns one dict whose keys are the documented --json schema (README, "Watching a run"): top-level keys
``schema_version``, ``uri``, ``kind``, ``state`` are always there; the rest depend on the kind and are
always present for that kind (None when not known yet). Adding a key is compatible; renaming or removing
one bumps SCHEMA_VERSION.
"""
from __future__ import annotations

import time
from typing import Any

from step_dist import storage
from step_dist.status.files import children, join
from step_dist.status.others import (
    is_shard_set, is_sweep, is_target_cache, shard_set_status, sweep_status, target_cache_status,
)
from step_dist.status.run import is_run, run_status

SCHEMA_VERSION = 1
KINDS = ("run", "sweep", "target_cache", "shard_set")


def status_of(uri: str, now: float | None = None) -> dict[str, Any]:
    uri = storage.parse_uri(uri).uri
    now = time.time() if now is None else now
    names = children(uri)
    if uri.rstrip("/").endswith("/outputs") and "config.yaml" in names:  # the run's outputs folder was given
        uri = uri.rstrip("/").rsplit("/", 1)[0]
        names = children(uri)
    if not names:
        raise FileNotFoundError(f"{uri}: nothing there (or it cannot be listed): give a run folder "
                                "(<storage>/<name>), a sweep, a target cache or a shard set")
    if is_sweep(names):
        body = sweep_status(uri, names, now=now)
    elif is_run(names):
        body = run_status(uri, names, now=now)
    elif is_target_cache(uri, names):
        body = target_cache_status(uri, names)
    elif is_shard_set(uri, names):
        body = shard_set_status(uri, names)
    else:
        raise FileNotFoundError(
            f"{uri} holds {', '.join(sorted(names)[:8])}: not a run (outputs/, checkpoint_step_*), a sweep "
            "(trials/, results.json), a target cache (run-*/_manifest.json) or a shard set (_manifest.json)")
    return {"schema_version": SCHEMA_VERSION, "uri": uri, **body, "checked_at": now}


__all__ = ["KINDS", "SCHEMA_VERSION", "status_of"]
