"""What a sweep leaves behind: the results table (printed, CSV, JSON), the best trial as a ready-to-run
pretraining recipe, and a plot of the objective against each swept parameter."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from typing import Any


from step_dist import storage
from step_dist.tune.space import apply_params, params_of


def rows_of(grid, metric: str, max_steps: int) -> list[dict[str, Any]]:
    """One row per trial: its sampled values, the objective at its last report, steps, stopped early or not."""
    rows = []
    for res in grid:
        m = dict(res.metrics or {})
        steps = int(m.get("step", 0) or 0)
        value = m.get(metric)
        rows.append({
            "trial": m.get("trial_id") or os.path.basename(str(res.path)),
            **params_of(dict(res.config or {})),
            metric: float(value) if value is not None else float("nan"),
            "steps": steps,
            "stopped_early": res.error is None and steps < max_steps,
            "error": "" if res.error is None else f"{type(res.error).__name__}: {str(res.error)[:200]}",
            "_config": dict(res.config or {}),
        })
    return sorted(rows, key=lambda r: r["trial"])


def best_row(rows: list[dict[str, Any]], metric: str, mode: str, max_steps: int) -> dict[str, Any] | None:
    """The best trial among those that ran to the end (a stopped trial's last value is from an earlier step)."""
    done = [r for r in rows if not r["error"] and r["steps"] >= max_steps and not math.isnan(r[metric])]
    if not done:
        return None
    return (min if mode == "min" else max)(done, key=lambda r: r[metric])


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_table(rows: list[dict[str, Any]]) -> str:
    cols = [c for c in (rows[0] if rows else {}) if not c.startswith("_") and c != "error"]
    if any(r["error"] for r in rows):
        cols.append("error")
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(x[i]) for x in cells]) for i, c in enumerate(cols)]
    line = lambda xs: "  ".join(x.ljust(w) for x, w in zip(xs, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *map(line, cells)])


def _csv(rows: list[dict[str, Any]]) -> str:
    cols = [c for c in (rows[0] if rows else {}) if not c.startswith("_")]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def plot(rows: list[dict[str, Any]], metric: str, path: str) -> str | None:
    """One panel per swept parameter: the objective of every trial; stopped trials hollow (an earlier step)."""
    params = [c for c in (rows[0] if rows else {}) if c not in ("trial", metric, "steps", "stopped_early", "error")
              and not c.startswith("_")]
    rows = [r for r in rows if math.isfinite(r[metric])]
    if not params or not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(params), figsize=(3.2 * len(params), 3.0), squeeze=False)
    for ax, p in zip(axes[0], params):
        xs = [r.get(p) for r in rows]
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        cats = sorted({str(x) for x in xs})
        for r, x in zip(rows, xs):
            xv = x if numeric else cats.index(str(x))
            face = "none" if r["stopped_early"] else "C0"
            ax.scatter([xv], [r[metric]], facecolors=face, edgecolors="C0", s=36)
        if not numeric:
            ax.set_xticks(range(len(cats)), cats, rotation=20)
        elif min(xs) > 0 and max(xs) / min(xs) > 20:  # loguniform-like ranges read better on a log axis
            ax.set_xscale("log")
        ax.set_xlabel(p, fontsize=8)
        ax.set_ylabel(metric, fontsize=8)
    fig.suptitle("sweep: filled = ran to the end, hollow = stopped early by ASHA", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def best_recipe(recipe: dict[str, Any], row: dict[str, Any], sweep_name: str, sweep_uri: str) -> dict[str, Any]:
    out = apply_params(recipe, row["_config"])
    out["name"] = f"{sweep_name}-best"
    out["storage"] = storage.parse_uri(sweep_uri).join("best-runs").uri
    return out


def write_plan(cfg, sweep_uri: str, max_steps: int) -> None:
    """What the sweep means to do, written before any trial starts: `step-dist status` reads the trials planned
    from it while the sweep runs (Tune's own files do not say)."""
    import time

    plan = {"num_samples": int(cfg.num_samples), "metric": cfg.metric, "mode": cfg.mode, "max_steps": int(max_steps),
            "started": time.time()}
    storage.write_bytes(storage.parse_uri(sweep_uri).join("sweep_plan.json").uri, json.dumps(plan, indent=1).encode())


def write_outputs(grid, cfg, recipe: dict[str, Any], sweep_uri: str, max_steps: int) -> dict[str, Any]:
    from step_dist.config import from_dict
    from step_dist.train.config import PretrainConfig
    from step_dist.config import dump_yaml

    rows = rows_of(grid, cfg.metric, max_steps)
    best = best_row(rows, cfg.metric, cfg.mode, max_steps)
    loc = storage.parse_uri(sweep_uri)
    table_uri = loc.join("results.csv").uri
    storage.write_bytes(table_uri, _csv(rows).encode())
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    summary = {"metric": cfg.metric, "mode": cfg.mode, "max_steps": max_steps, "trials": public,
               "best": None if best is None else best["trial"]}
    storage.write_bytes(loc.join("results.json").uri, json.dumps(summary, indent=2, default=str).encode())
    best_uri = None
    if best is not None:
        best_cfg = from_dict(PretrainConfig, best_recipe(recipe, best, cfg.name, sweep_uri))  # valid before written
        best_uri = loc.join("best_recipe.yaml").uri
        header = (f"# best trial {best['trial']} of sweep {cfg.name}: {cfg.metric}={best[cfg.metric]:.6g}\n"
                  f"# run it: step-dist pretrain --config {best_uri}\n")
        storage.write_bytes(best_uri, (header + dump_yaml(best_cfg)).encode())
    plot_uri = None
    with tempfile.TemporaryDirectory() as tmp:
        png = plot(rows, cfg.metric, os.path.join(tmp, "sweep.png"))
        if png:
            plot_uri = loc.join("sweep.png").uri
            with open(png, "rb") as f:
                storage.write_bytes(plot_uri, f.read())
    print(f"[step-dist] sweep {cfg.name}: {len(rows)} trial(s), "
          f"{sum(r['stopped_early'] for r in rows)} stopped early by ASHA, objective {cfg.metric} ({cfg.mode})\n"
          + format_table(rows), flush=True)
    if best is not None:
        print(f"[step-dist] best: {best['trial']} {cfg.metric}={best[cfg.metric]:.6g} -> {best_uri}", flush=True)
    print(f"[step-dist] table: {table_uri} (+ results.json); plot: {plot_uri}", flush=True)
    return {"rows": rows, "best": best, "best_recipe_uri": best_uri, "table_uri": table_uri, "plot_uri": plot_uri}
