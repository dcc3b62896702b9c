"""The report files: report.json holds every number; report.md and the plots are drawn from it."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from step_dist.evaluate.config import EvaluateConfig
from step_dist.evaluate.report import build_report, write_report


def _results(rng) -> list[dict]:
    rows = []
    for task in ("alpha", "beta", "gamma"):
        for model in ("step", "step-random", "minirocket"):
            for seed in (0, 1, 2):
                f1 = float(rng.uniform(0.3, 1.0))
                rows.append({"protocol": "probe", "task": task, "model": model, "seed": seed,
                             "macro_f1": f1, "accuracy": float(min(1.0, f1 + 0.05)), "seconds": 0.1})
    rows.append({"protocol": "probe", "task": "beta", "model": "teacher-x", "seed": 0, "error": "RuntimeError: boom"})
    return rows


@pytest.fixture
def report(tmp_path):
    rows = _results(np.random.default_rng(7))
    tasks = [{"name": n, "uri": f"/data/{n}", "classes": ["a", "b"], "records": {"train": 8, "test": 4},
              "set_aside": {"no label": 1}, "repaired": {}, "channels": [1], "length_max": 256} for n in ("alpha", "beta", "gamma")]
    rep = build_report(rows, tasks, EvaluateConfig(), checkpoint={"uri": "/ck"}, timings={"total_s": 1.5})
    files = write_report(rep, str(tmp_path / "out"))
    return rep, tmp_path / "out", files


def _table(md: str, heading: str) -> tuple[list[str], dict[str, list[str]]]:
    block = md.split(heading, 1)[1].strip().splitlines()
    header = [c.strip() for c in block[0].strip("|").split("|")][1:]
    rows = {}
    for line in block[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells[1:]
    return header, rows


def test_when_a_report_is_written_then_json_markdown_and_plots_exist(report):
    rep, out, files = report
    names = {p.name for p in out.iterdir()}
    assert {"report.json", "report.md", "radar_probe.png", "bar_probe_alpha.png", "bar_probe_beta.png", "bar_probe_gamma.png"} <= names
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    data = json.loads((out / "report.json").read_text())
    assert {"config", "versions", "timings", "results", "summary", "tasks"} <= set(data)
    assert {"step-dist", "torch", "ray"} <= set(data["versions"])
    assert len(data["results"]) == len(rep["results"])


def test_when_the_markdown_table_is_read_then_its_numbers_match_the_json(report):
    _, out, _ = report
    data = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    header, rows = _table(md, "best per task in bold")
    summary = data["summary"]["probe"]
    for task, cells in rows.items():
        # recompute mean and std from the raw per-seed results, not from the summary the table was drawn from
        for model, text in zip(header, cells):
            raw = [r["macro_f1"] for r in data["results"] if r["task"] == task and r["model"] == model and "error" not in r]
            if not raw:
                assert text in ("", "error")
                continue
            m = re.fullmatch(r"(\*\*)?([\d.]+) ± ([\d.]+)(\*\*)?", text)
            assert m, text
            assert float(m.group(2)) == pytest.approx(100 * np.mean(raw), abs=0.051)
            assert float(m.group(3)) == pytest.approx(100 * np.std(raw, ddof=1), abs=0.051)
            best = max(v["macro_f1"]["mean"] for v in summary[task].values() if v["macro_f1"]["n"])
            assert bool(m.group(1)) == (summary[task][model]["macro_f1"]["mean"] == best)
    assert set(rows) == {"alpha", "beta", "gamma"}
    assert "teacher-x" in header and "RuntimeError: boom" in md


def test_when_the_output_is_object_storage_then_the_report_lands_there(s3_bucket):
    from step_dist import storage

    rows = _results(np.random.default_rng(1))
    rep = build_report(rows, [], EvaluateConfig(), checkpoint={"uri": "x"}, timings={})
    write_report(rep, f"{s3_bucket}/reports/r1")
    listed = storage.list_files(f"{s3_bucket}/reports/r1")
    assert any(u.endswith("report.json") for u in listed) and any(u.endswith("radar_probe.png") for u in listed)
    assert json.loads(storage.read_bytes(f"{s3_bucket}/reports/r1/report.json"))["summary"] == json.loads(json.dumps(rep["summary"]))
