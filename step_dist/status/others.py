"""The state of a sweep, a target cache and a shard set, from their folders:

    sweep:        <sweep>/trials/<trial>/  one run per trial; results.json (and best_recipe.yaml) at the end;
                  sweep_plan.json (trials planned) at the start
    target cache: <cache>/<run>/_manifest.json once a cache-targets run finished; part-*.parquet before that
    shard set:    <shards>/_manifest.json (written last by ingest / demo-data) and part-*.parquet
"""
from __future__ import annotations

from typing import Any

from step_dist.status.files import children, join, read_json
from step_dist.status.run import run_status


def is_sweep(names: dict[str, str]) -> bool:
    return names.get("trials") == "directory" or "results.json" in names or "sweep_plan.json" in names


def sweep_status(uri: str, names: dict[str, str], now: float | None = None) -> dict[str, Any]:
    trials_uri = join(uri, "trials")
    trials = []
    for name, kind in sorted(children(trials_uri).items()):
        if kind == "directory":
            r = run_status(join(trials_uri, name), now=now)
            trials.append({k: r[k] for k in ("name", "state", "step", "max_steps", "distill_loss", "val_loss", "eta_s")})
    results = read_json(join(uri, "results.json"))
    plan = read_json(join(uri, "sweep_plan.json")) or {}
    planned = plan.get("num_samples")
    if isinstance(results, dict):
        # ASHA stops trials early: their run has no summary, but the sweep is over
        by_trial = {str(r.get("trial")): r for r in results.get("trials") or []}
        for t in trials:
            if t["state"] != "finished" and by_trial.get(t["name"], {}).get("stopped_early"):
                t["state"] = "stopped_early"
    # a trial ASHA stopped is over: it counts as finished, not as running
    counts = {s: sum(t["state"] == s for t in trials) for s in ("finished", "running", "starting", "stalled")}
    counts["finished"] += sum(t["state"] == "stopped_early" for t in trials)
    if isinstance(results, dict):
        state = "finished"
    elif not trials:
        state = "starting"
    elif counts["running"] or counts["starting"]:
        state = "running"
    else:
        state = "stalled"
    return {
        "kind": "sweep", "state": state, "name": uri.rstrip("/").rsplit("/", 1)[-1],
        "trials_planned": int(planned) if planned is not None else None,
        "trials_seen": len(trials), "trials_finished": counts["finished"], "trials_running": counts["running"],
        "best": results.get("best") if isinstance(results, dict) else None,
        "metric": results.get("metric") if isinstance(results, dict) else plan.get("metric"),
        "best_recipe": join(uri, "best_recipe.yaml") if "best_recipe.yaml" in names else None,
        "results": join(uri, "results.csv") if "results.csv" in names else None,
        "trials": trials,
    }


def _is_cache_manifest(m: Any) -> bool:
    return isinstance(m, dict) and "teachers" in m and "files" in m and "format" in m


def cache_run_status(uri: str, names: dict[str, str]) -> dict[str, Any]:
    m = read_json(join(uri, "_manifest.json")) if "_manifest.json" in names else None
    parts = sum(n.endswith(".parquet") for n in names)
    if _is_cache_manifest(m):
        return {"run": uri, "complete": True, "teachers": [t.get("name") for t in m["teachers"]],
                "rows": m.get("rows"), "files": len(m["files"]), "created": m.get("created")}
    return {"run": uri, "complete": False, "teachers": [], "rows": None, "files": parts, "created": None}


def is_target_cache(uri: str, names: dict[str, str]) -> bool:
    if _is_cache_manifest(read_json(join(uri, "_manifest.json")) if "_manifest.json" in names else None):
        return True
    return any(kind == "directory" and n.startswith("run-") for n, kind in names.items())


def target_cache_status(uri: str, names: dict[str, str]) -> dict[str, Any]:
    if "_manifest.json" in names:  # the URI is one cache-targets run's folder
        runs = [cache_run_status(uri, names)]
    else:
        runs = [cache_run_status(join(uri, n), children(join(uri, n)))
                for n, kind in sorted(names.items()) if kind == "directory" and n.startswith("run-")]
    done = [r for r in runs if r["complete"]]
    return {
        "kind": "target_cache", "state": "finished" if runs and len(done) == len(runs) else "running_or_stopped",
        "name": uri.rstrip("/").rsplit("/", 1)[-1], "runs": runs,
        "teachers": sorted({t for r in done for t in r["teachers"]}),
        "rows": sum(int(r["rows"] or 0) for r in done),
    }


def is_shard_set(uri: str, names: dict[str, str]) -> bool:
    m = read_json(join(uri, "_manifest.json")) if "_manifest.json" in names else None
    return isinstance(m, dict) and "n_records" in m or (not m and any(n.endswith(".parquet") for n in names))


def shard_set_status(uri: str, names: dict[str, str]) -> dict[str, Any]:
    m = read_json(join(uri, "_manifest.json")) if "_manifest.json" in names else None
    if not isinstance(m, dict):
        return {"kind": "shard_set", "state": "running_or_stopped", "name": uri.rstrip("/").rsplit("/", 1)[-1],
                "records": None, "samples": None, "shards": sum(n.endswith(".parquet") for n in names),
                "quarantined": None, "skipped": None, "sources": {}}
    return {
        "kind": "shard_set", "state": "finished", "name": uri.rstrip("/").rsplit("/", 1)[-1],
        "records": m.get("n_records"), "samples": m.get("total_samples"), "shards": len(m.get("shards") or []),
        "quarantined": m.get("n_quarantined"), "skipped": m.get("n_skipped"),
        "sources": {k: int(v.get("records", 0)) for k, v in (m.get("sources") or {}).items()},
    }
