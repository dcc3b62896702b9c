"""The state of one pretraining run, read from what the run writes to its storage (nothing else):

    <run>/outputs/config.yaml        the resolved recipe (max_steps), written before any worker starts
    <run>/outputs/metrics.jsonl      one row per step from rank 0 (loss, samples/s, data wait; val/ rows)
    <run>/outputs/restarts.jsonl     one row per restart from a checkpoint
    <run>/outputs/quarantine/        bad records set aside so far
    <run>/checkpoint_step_*/trainer_state.json    each checkpoint's step
    <run>/outputs/summary.json, accounting.json   written at the end: their presence means "finished"
"""
from __future__ import annotations

import statistics
import time
from typing import Any

from step_dist.status.files import children, join, mtime, read_json, read_jsonl, read_text

RECENT = 20  # steps whose mean gives throughput and data wait (one step alone is noisy: a data stall, a checkpoint)
STALLED_AFTER_S = 300.0  # no new row for this long (or 20 steps' time) and no summary: the run stopped or hangs;
# long enough for a checkpoint upload between two rows, short enough that a killed run shows within minutes


def is_run(names: dict[str, str]) -> bool:
    return names.get("outputs") == "directory" or any(n.startswith("checkpoint_step_") for n in names)


def _max_steps(outputs: str) -> int | None:
    import yaml

    text = read_text(join(outputs, "config.yaml"))
    try:
        cfg = yaml.safe_load(text) if text else None
        return int(cfg["train"]["max_steps"])
    except (yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def _last_checkpoint(run_uri: str, names: dict[str, str]) -> dict[str, Any] | None:
    """The newest checkpoint folder that holds its trainer_state.json (rank 0 writes it; a folder without one
    was cut off mid-upload and is never resumed from)."""
    for name in sorted((n for n in names if n.startswith("checkpoint_step_")), reverse=True):
        uri = join(run_uri, name)
        state = read_json(join(uri, "trainer_state.json"))
        if isinstance(state, dict) and "step" in state:
            return {"uri": uri, "step": int(state["step"]), "epoch": int(state.get("epoch", 0)),
                    "export": join(uri, "export")}
    return None


def _quarantined(outputs: str) -> int:
    from step_dist.data.pipeline import read_quarantine

    return len(read_quarantine(join(outputs, "quarantine")))


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))]
    return statistics.fmean(vals) if vals else None


def seconds_per_step(rows: list[dict[str, Any]]) -> float | None:
    """Wall seconds per step over the last RECENT logged steps, pauses included (epoch starts, checkpoints,
    validation): an ETA from the fast steps alone would promise too early an end."""
    pts = sorted((int(r["step"]), float(r["time"])) for r in rows if "time" in r)[-(RECENT + 1):]
    if len(pts) < 2 or pts[-1][0] <= pts[0][0]:
        return None
    return max(pts[-1][1] - pts[0][1], 0.0) / (pts[-1][0] - pts[0][0])


def run_status(run_uri: str, names: dict[str, str] | None = None, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    names = children(run_uri) if names is None else names
    outputs = join(run_uri, "outputs")
    rows = read_jsonl(join(outputs, "metrics.jsonl"))
    train = [r for r in rows if "loss" in r and "step" in r]
    val = [r for r in rows if "val/distill_loss" in r]
    last = train[-1] if train else {}
    recent = train[-RECENT:]
    summary = read_json(join(outputs, "summary.json"))
    restarts = read_jsonl(join(outputs, "restarts.jsonl"))
    accounting = read_json(join(outputs, "accounting.json"))
    ckpt = _last_checkpoint(run_uri, names)
    max_steps = _max_steps(outputs)
    step = int(last.get("step", 0))
    if ckpt and ckpt["step"] > step:  # metrics of a remote run are uploaded with checkpoints: trust the larger
        step = ckpt["step"]
    times = [float(r["time"]) for r in rows if "time" in r]
    started = min([t for t in [mtime(join(outputs, "config.yaml")), *times[:1]] if t is not None], default=None)
    last_update = max(times or [started or 0.0]) or None
    sps = seconds_per_step(train)

    if isinstance(summary, dict):
        state = "finished"
    elif not names:
        state = "absent"
    elif not train:
        state = "starting"  # recipe written; teachers, data or workers still getting ready
    elif last_update is not None and now - last_update > max(STALLED_AFTER_S, 20 * (sps or 0.0)):
        state = "stalled"
    else:
        state = "running"
    if state == "finished":
        wall = float(summary.get("wall_s", 0.0)) or None
        eta = 0.0
    else:
        end = last_update if (state == "stalled" and last_update) else now  # a stopped run's clock stopped too
        wall = (end - started) if started else None
        eta = (max_steps - step) * sps if (state == "running" and sps is not None and max_steps) else None
    return {
        "kind": "run",
        "state": state,
        "name": run_uri.rstrip("/").rsplit("/", 1)[-1],
        "step": step,
        "max_steps": max_steps,
        "epoch": int(last["epoch"]) if "epoch" in last else None,
        "last_checkpoint": ckpt,
        "train_loss": last.get("loss"),
        "distill_loss": last.get("distill_loss"),
        "val_loss": val[-1]["val/distill_loss"] if val else None,
        "val_step": int(val[-1]["step"]) if val else None,
        "samples_per_s": _mean(recent, "samples_per_s"),
        "tokens_per_s": _mean(recent, "tokens_per_s"),
        "data_wait_frac": _mean(recent, "data_wait_frac"),
        "skipped_steps": int(last.get("skipped_steps", 0)),
        "restarts": len(restarts),
        "steps_lost": sum(int(r.get("steps_lost", 0)) for r in restarts),
        "quarantined": _quarantined(outputs),
        "accounting": ({k: accounting.get(k) for k in ("ok", "duplicated", "lost")}
                       | {"epochs": len(accounting.get("epochs") or [])}) if isinstance(accounting, dict) else None,
        "started": started,
        "last_update": last_update,
        "wall_s": wall,
        "seconds_per_step": sps,
        "eta_s": eta,
        "outputs": outputs,
    }
