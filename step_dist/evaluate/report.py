"""The evaluation report: report.json (every number, the config, versions, timings), report.md (tasks x
models, macro-F1 mean ± std over seeds, best per task in bold) and PNG plots (a bar chart per task and a
radar over tasks, as in the paper). The markdown and plots are drawn from the JSON's summary only."""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from typing import Any

from step_dist import storage
from step_dist.config import to_dict
from step_dist.evaluate.probe import summarise


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("step-dist", "torch", "ray", "numpy", "scikit-learn", "aeon", "deepspeed"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def summary(results: list[dict]) -> dict[str, dict[str, dict[str, dict]]]:
    """protocol -> task -> model -> {macro_f1: {mean, std, n}, accuracy: {...}, errors}."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[(r["protocol"], r["task"], r["model"])].append(r)
    out: dict = {}
    for (protocol, task, model), rows in groups.items():
        ok = [r for r in rows if "error" not in r]
        cell = {m: summarise([r[m] for r in ok]) for m in ("macro_f1", "accuracy")}
        cell["errors"] = [r["error"] for r in rows if "error" in r][:1]
        out.setdefault(protocol, {}).setdefault(task, {})[model] = cell
    return out


def build_report(results: list[dict], tasks: list[dict], cfg, checkpoint: dict, timings: dict) -> dict:
    from step_dist.evaluate.paper import side_by_side

    table = summary(results)
    return {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "checkpoint": checkpoint,
        "config": to_dict(cfg),
        "versions": versions(),
        "timings": timings,
        "tasks": tasks,
        "results": results,
        "summary": table,
        # the paper's published numbers beside ours, for tasks whose name matches one of its seven
        "paper": side_by_side(table, tasks, checkpoint.get("student_config") or {}, list(cfg.seeds)),
    }


def _models(table: dict) -> list[str]:
    seen: list[str] = []
    for cells in table.values():
        seen += [m for m in cells if m not in seen]
    return seen


def _cell(c: dict) -> str:
    f1 = c["macro_f1"]
    if not f1["n"]:
        return "error"
    return f"{100 * f1['mean']:.1f} ± {100 * f1['std']:.1f}"


def markdown(report: dict) -> str:
    lines = ["# step-dist evaluation", ""]
    ck = report["checkpoint"]
    lines += [f"checkpoint: `{ck.get('export') or ck.get('uri')}`  ", f"seeds: {report['config']['seeds']}  ",
              f"wall time: {report['timings'].get('total_s', 0):.1f} s", ""]
    for protocol, table in report["summary"].items():
        models = _models(table)
        lines += [f"## {protocol}: macro-F1 (%), mean ± std over seeds; best per task in bold", ""]
        lines += ["| task | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
        for task, cells in table.items():
            means = {m: c["macro_f1"]["mean"] for m, c in cells.items() if c["macro_f1"]["n"]}
            best = max(means.values()) if means else None
            row = []
            for m in models:
                if m not in cells:
                    row.append("")
                    continue
                text = _cell(cells[m])
                row.append(f"**{text}**" if best is not None and m in means and means[m] == best else text)
            lines.append(f"| {task} | " + " | ".join(row) + " |")
        lines.append("")
        acc = ["| task | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
        for task, cells in table.items():
            acc.append(f"| {task} | " + " | ".join(
                f"{100 * cells[m]['accuracy']['mean']:.1f}" if m in cells and cells[m]["accuracy"]["n"] else "" for m in models) + " |")
        lines += [f"accuracy (%), mean over seeds ({protocol})", ""] + acc + [""]
    from step_dist.evaluate.paper import markdown as paper_markdown

    lines += paper_markdown(report.get("paper") or [])
    if report.get("recovery"):
        lines += ["## teacher recovery (probe features, seed 0)", "",
                  "R^2 of a ridge map from the student's features to the teacher's (fit on train, scored on test), "
                  "and the student's probe macro-F1 over the teacher's.", "",
                  "| task | teacher | student | R^2 | F1 ratio |", "|---|---|---|---|---|"]
        for r in report["recovery"]:
            lines.append(f"| {r['task']} | {r['teacher']} | {r['student']} | {r['r2']:.3f} | {r['f1_ratio']:.2f} |")
        lines.append("")
    errors = [r for r in report["results"] if "error" in r]
    if errors:
        lines += ["## failed runs", ""] + [f"- {r['protocol']} / {r['task']} / {r['model']} / seed {r['seed']}: {r['error']}" for r in errors] + [""]
    lines += ["## tasks", ""]
    for t in report["tasks"]:
        aside = ", ".join(f"{k}: {v}" for k, v in t["set_aside"].items()) or "none"
        lines.append(f"- {t['name']} ({t['uri']}): records {t['records']}, classes {len(t['classes'])}, set aside: {aside}")
    return "\n".join(lines) + "\n"


def plots(report: dict, folder: str) -> list[str]:
    """bar_<protocol>_<task>.png per task, radar_<protocol>.png over tasks; returns the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    for protocol, table in report["summary"].items():
        models = _models(table)
        colors = {m: plt.cm.tab10(i % 10) for i, m in enumerate(models)}
        for task, cells in table.items():
            ms = [m for m in models if m in cells and cells[m]["macro_f1"]["n"]]
            fig, ax = plt.subplots(figsize=(1.2 + 0.9 * max(1, len(ms)), 3.2))
            means = [100 * cells[m]["macro_f1"]["mean"] for m in ms]
            stds = [100 * cells[m]["macro_f1"]["std"] for m in ms]
            ax.bar(range(len(ms)), means, yerr=stds, color=[colors[m] for m in ms], capsize=3)
            ax.set_xticks(range(len(ms)), ms, rotation=30, ha="right", fontsize=8)
            ax.set_ylim(0, 100)
            ax.set_ylabel("macro-F1 (%)")
            ax.set_title(f"{task} ({protocol})", fontsize=9)
            fig.tight_layout()
            name = f"bar_{protocol}_{_safe(task)}.png"
            fig.savefig(os.path.join(folder, name), dpi=100)
            plt.close(fig)
            written.append(name)
        tasks = list(table)
        angles = np.linspace(0, 2 * np.pi, len(tasks), endpoint=False).tolist()
        fig = plt.figure(figsize=(5, 5))
        ax = fig.add_subplot(polar=True)
        for m in models:
            vals = [100 * table[t][m]["macro_f1"]["mean"] if m in table[t] and table[t][m]["macro_f1"]["n"] else 0.0 for t in tasks]
            ax.plot(angles + angles[:1], vals + vals[:1], color=colors[m], label=m)
            ax.fill(angles + angles[:1], vals + vals[:1], color=colors[m], alpha=0.08)
        ax.set_xticks(angles, tasks, fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_title(f"macro-F1 over tasks ({protocol})", fontsize=9)
        ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), fontsize=7)
        fig.tight_layout()
        name = f"radar_{protocol}.png"
        fig.savefig(os.path.join(folder, name), dpi=100)
        plt.close(fig)
        written.append(name)
    return written


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def write_report(report: dict, out: str) -> list[str]:
    """Write report.json, report.md and the plots to ``out`` (a local folder or an s3:// / gs:// prefix)."""
    loc = storage.parse_uri(out)
    with tempfile.TemporaryDirectory() as tmp:
        folder = loc.path if loc.scheme == "file" else tmp
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "report.json"), "w") as f:
            json.dump(report, f, indent=1, default=_jsonable)
        with open(os.path.join(folder, "report.md"), "w") as f:
            f.write(markdown(report))
        names = ["report.json", "report.md"] + plots(report, folder)
        if loc.scheme != "file":
            storage.upload_dir(folder, loc.uri)
    return [loc.join(n).uri for n in names]


def _jsonable(o: Any):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)
