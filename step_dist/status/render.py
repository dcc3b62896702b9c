"""Human-readable `step-dist status`: a few aligned lines per kind."""
from __future__ import annotations

from typing import Any

from step_dist.progress import duration


def _num(v: Any, fmt: str = ".4f") -> str:
    return "-" if v is None else format(v, fmt)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _run_lines(st: dict[str, Any]) -> list[str]:
    ms = st["max_steps"]
    pct = f" ({100 * st['step'] / ms:.0f}%)" if ms else ""
    ck = st["last_checkpoint"]
    acc = st["accounting"]
    lines = [
        f"step        {st['step']}/{ms if ms else '?'}{pct}, epoch {st['epoch'] if st['epoch'] is not None else '-'}",
        f"checkpoint  {ck['uri']} (step {ck['step']})" if ck else "checkpoint  none yet",
        f"loss        train {_num(st['train_loss'])}, distill {_num(st['distill_loss'])}, "
        f"validation {_num(st['val_loss'])}" + (f" (step {st['val_step']})" if st["val_step"] is not None else ""),
        f"throughput  {_num(st['samples_per_s'], '.1f')} samples/s, {_num(st['tokens_per_s'], '.0f')} tokens/s, "
        f"data wait {_pct(st['data_wait_frac'])}"
        f" (mean of the last steps)",
        f"restarts    {st['restarts']} ({st['steps_lost']} step(s) trained again); skipped steps {st['skipped_steps']}",
        f"quarantined {st['quarantined']} record(s)/shard(s)" + (f" (see {st['outputs']}/quarantine)" if st["quarantined"] else ""),
        "records     " + (f"{acc['epochs']} epoch(s), {acc['duplicated']} duplicated, {acc['lost']} unseen: "
                          f"{'ok' if acc['ok'] else 'PROBLEM, see accounting.json'}" if acc else "accounted at the end of the run"),
        f"time        wall {duration(st['wall_s'])}"
        + (f", last step {duration(st['checked_at'] - st['last_update'])} ago"
           if st["state"] != "finished" and st["last_update"] else "")
        + (f", {_num(st['seconds_per_step'], '.2f')} s/step, ETA {duration(st['eta_s'])}" if st["state"] == "running" else ""),
    ]
    if st["state"] == "finished":
        lines.append(f"look        tensorboard --logdir {st['outputs']}/tensorboard ; plot {st['outputs']}/loss_curve.png")
    elif st["state"] == "stalled":
        lines.append("            no new step for a while and no summary.json: the run stopped (killed, failed) or hangs; "
                     "re-running the same recipe resumes from the last checkpoint")
    return lines


def _sweep_lines(st: dict[str, Any]) -> list[str]:
    planned = st["trials_planned"]
    lines = [f"trials      {st['trials_finished']} finished, {st['trials_running']} running, {st['trials_seen']} started"
             + (f" of {planned}" if planned is not None else "")]
    for t in st["trials"]:
        lines.append(f"  {t['name']:<24} {t['state']:<13} step {t['step']}/{t['max_steps'] or '?'}  "
                     f"distill {_num(t['distill_loss'])}  val {_num(t['val_loss'])}")
    if st["best"]:
        lines.append(f"best        {st['best']} ({st['metric']}); recipe {st['best_recipe']}")
    if st["results"]:
        lines.append(f"results     {st['results']}")
    return lines


def _cache_lines(st: dict[str, Any]) -> list[str]:
    lines = [f"targets     {st['rows']} view(s) for {', '.join(st['teachers']) or 'no teacher yet'}"]
    for r in st["runs"]:
        lines.append(f"  {r['run'].rsplit('/', 1)[-1]}  " + (f"complete: {', '.join(r['teachers'])}, {r['rows']} rows, {r['files']} file(s)"
                                                        if r["complete"] else f"unfinished (no _manifest.json): {r['files']} file(s) so far"))
    return lines


def _shards_lines(st: dict[str, Any]) -> list[str]:
    if st["records"] is None:
        return [f"shards      {st['shards']} file(s) so far; no _manifest.json yet (ingest writes it last)"]
    return [f"records     {st['records']} in {st['shards']} shard(s), {st['samples']} samples; "
            f"{st['quarantined']} quarantined, {st['skipped']} skipped",
            "sources     " + ", ".join(f"{k} {v}" for k, v in st["sources"].items()),
            f"look        step-dist inspect {st['uri']}"]


def render(st: dict[str, Any]) -> str:
    head = f"{st['kind'].replace('_', ' ')} {st['uri']}: {st['state']}"
    body = {"run": _run_lines, "sweep": _sweep_lines, "target_cache": _cache_lines, "shard_set": _shards_lines}[st["kind"]](st)
    return "\n".join([head, *("  " + b for b in body)])
