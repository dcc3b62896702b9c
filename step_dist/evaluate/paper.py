"""STEP's published SciTS table (notes/step-paper.md), set beside our numbers wherever a task name matches.

The paper reports F1 (%) after full fine-tuning on 20k train / 4k val records per task with a ~120M-parameter
student (17 blocks x 768). The numbers were read through secondary notes quoting the submission: close, not
certain. Ours are printed with the scale they ran at (student size, protocol, records, seeds), because a probe of
a tiny student on a few hundred records is not the paper's experiment and must not read as one.
"""
from __future__ import annotations

from typing import Any

PAPER_TASKS = ("GWOSC", "LEAVES", "STEAD", "MarmAudio", "SleepEDF", "WBCIC", "RadSeg")
# model (trained from scratch on each task, or STEP) -> F1 (%) per task, in PAPER_TASKS order
PUBLISHED: dict[str, tuple[float, ...]] = {
    "PatchTST": (74.8, 86.1, 83.7, 67.2, 79.5, 47.3, 87.6),
    "Informer": (58.7, 75.0, 74.5, 51.8, 74.0, 54.6, 92.5),
    "Time-MoE arch.": (78.7, 82.0, 92.8, 50.7, 69.3, 33.9, 86.5),
    "Moirai arch.": (80.0, 79.3, 99.6, 85.1, 73.7, 33.3, 87.6),
    "STEP": (97.3, 92.2, 99.0, 94.7, 78.2, 48.7, 95.2),
}
PAPER_SCALE = "full fine-tune, ~120M-parameter student (17 x 768), 20k train / 4k val per task"


def paper_task(name: str) -> str | None:
    """The paper's task a task name refers to: the name itself, or one of its '-' / '_' separated tokens
    (a SciTS folder such as ``Earth-STEAD-Seismic-Detection``), case-insensitive; None when none matches."""
    tokens = {name.lower()} | {t.lower() for t in name.replace("_", "-").split("-") if t}
    hits = [p for p in PAPER_TASKS if p.lower() in tokens]
    return hits[0] if len(hits) == 1 else None


def _params(student_config: dict) -> int | None:
    d, n, r = student_config.get("d_model"), student_config.get("n_layers"), student_config.get("mlp_ratio", 4.0)
    if not d or not n:
        return None
    return int(n * (4 * d * d + 2 * r * d * d))  # the Transformer blocks: attention + MLP weights


def side_by_side(summary: dict, tasks: list[dict], student_config: dict, seeds: list[int]) -> list[dict[str, Any]]:
    """One row per (protocol, task that matches the paper): the paper's numbers, ours per model, our scale."""
    by_name = {t["name"]: t for t in tasks}
    params = _params(student_config)
    scale_student = f"{student_config.get('name', '?')} student ({student_config.get('n_layers')} x " \
                    f"{student_config.get('d_model')}" + (f", ~{params / 1e6:.1f}M block parameters)" if params else ")")
    rows = []
    for protocol, table in summary.items():
        for task, cells in table.items():
            key = paper_task(task)
            if key is None:
                continue
            i = PAPER_TASKS.index(key)
            records = by_name.get(task, {}).get("records", {})
            rows.append({
                "protocol": protocol,
                "task": task,
                "paper_task": key,
                "paper": {model: f1[i] for model, f1 in PUBLISHED.items()},
                "ours": {m: round(100 * c["macro_f1"]["mean"], 1) for m, c in cells.items() if c["macro_f1"]["n"]},
                "scale": f"{protocol}, {scale_student}, {records.get('train', 0)} train / {records.get('test', 0)} "
                         f"test records, {len(seeds)} seed(s)",
            })
    return rows


def markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    ours = sorted({m for r in rows for m in r["ours"]})
    lines = ["## beside the paper (STEP, arXiv 2603.18688: SciTS F1 %)", "",
             f"Paper: {PAPER_SCALE}; its numbers come from notes quoting the submission. Ours: macro-F1 % at the "
             "scale in the last column, not the paper's experiment unless that column says so (SciTS's own scorer "
             "gives detection tasks a binary F1; ours averages both classes).", "",
             "| task | paper task | " + " | ".join(f"paper {m}" for m in PUBLISHED) + " | "
             + " | ".join(f"ours {m}" for m in ours) + " | our scale |",
             "|---|---|" + "---|" * (len(PUBLISHED) + len(ours)) + "---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['paper_task']} | " + " | ".join(f"{v:.1f}" for v in r["paper"].values())
                     + " | " + " | ".join(f"{r['ours'][m]:.1f}" if m in r["ours"] else "" for m in ours)
                     + f" | {r['scale']} |")
    return lines + [""]
