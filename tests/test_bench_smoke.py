"""The benchmark scripts (jobs/bench_*.py) run end to end in their smoke sizes and write the JSON they promise.

No timing is asserted (figures on a shared machine are noise); what is checked is that every variant ran,
that its figures are finite positive numbers, and that the results folder holds one JSON per benchmark.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "jobs"))


def _load(out, name: str) -> dict:
    with open(os.path.join(out, f"{name}.json")) as f:
        body = json.load(f)
    assert body["benchmark"] == name
    assert body["machine"]["cpus"] >= 1 and "load_avg" in body["machine"]
    return body


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _stat_ok(s: dict, n: int) -> None:
    assert s["n"] == n and len(s["values"]) == n
    assert all(_positive(v) for v in s["values"])
    assert s["min"] <= s["median"] <= s["max"]


def test_when_repeats_spread_then_median_and_half_range_describe_them():
    import bench_common as bc

    s = bc.spread([1.0, 3.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 3.0, 3)
    assert s["rel_spread"] == pytest.approx(0.5)
    assert bc.spread([])["median"] is None


def test_when_metrics_have_warmup_steps_then_steady_rate_leaves_them_out(tmp_path):
    import bench_common as bc

    rows = [{"step": 1, "samples_per_s": 1.0, "data_wait_frac": 0.9},
            {"step": 2, "samples_per_s": 10.0, "data_wait_frac": 0.1},
            {"step": 3, "samples_per_s": 30.0, "data_wait_frac": 0.3}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = bc.steady_rate(str(tmp_path), warmup=1)
    assert r["steps"] == 2
    assert r["rate"] == pytest.approx(2 / (1 / 10 + 1 / 30))  # work over time, not the mean of rates
    assert r["data_wait_frac"] == pytest.approx(0.2)


def test_when_a_table_is_printed_then_every_row_lines_up_under_its_header():
    import bench_common as bc

    text = bc.table("t", ["variant", "samples/s"], [["plain", 12.5], ["ray_1w", 1234.5]])
    lines = text.splitlines()
    assert lines[0] == "t" and len({len(ln) for ln in lines[1:]}) == 1
    assert "1,234.5" in text


def test_when_the_gpu_bench_runs_in_smoke_mode_then_it_reports_student_flops_and_teachers(tmp_path):
    import bench_gpu

    assert bench_gpu.main(["--smoke", "--out", str(tmp_path)]) == 0
    body = _load(str(tmp_path), "bench_gpu")
    assert body["errors"] == []
    (s,) = body["students"]
    assert s["config"] == "tiny" and s["bf16"] is False
    assert _positive(s["samples_per_s"]) and _positive(s["flops_per_step"]) and _positive(s["achieved_tflops"])
    assert s["mfu"] is None  # no peak is known for a CPU
    assert {t["teacher"] for t in body["teachers"]} == {"fracast", "crepe_full", "crepe_tiny"}
    assert all(_positive(t["records_per_s"]) and _positive(t["tokens_per_s"]) for t in body["teachers"])


def test_when_a_device_name_is_known_then_its_bf16_peak_is_found():
    import bench_gpu

    assert bench_gpu.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench_gpu.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert bench_gpu.peak_tflops("NVIDIA H200") == 989.4
    assert bench_gpu.peak_tflops("some other card") is None


def test_when_the_ingest_bench_runs_on_moto_then_all_three_paths_move_the_same_bytes(tmp_path, s3_server, ray_local):
    import bench_ingest

    assert bench_ingest.main(["--smoke", "--s3-endpoint", s3_server.endpoint, "--out", str(tmp_path)]) == 0
    body = _load(str(tmp_path), "bench_ingest")
    assert set(body["runs"]) == {"ingest", "train_read", "bare_read"}
    nbytes = {v: rs[0]["bytes"] for v, rs in body["runs"].items()}
    assert len(set(nbytes.values())) == 1 and nbytes["bare_read"] == body["raw_bytes"]
    for v in body["variants"].values():
        _stat_ok(v, 1)
    assert body["ratios_vs_bare"]["bare_read"] == pytest.approx(1.0)


def test_when_the_student_bench_runs_through_bench_all_then_its_table_and_json_are_collected(tmp_path):
    out = tmp_path / "res"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "jobs", "bench_all.py"), "--smoke", "--only", "student",
                           "--out", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "all tables" in proc.stdout and "log-log slope" in proc.stdout
    summary = json.loads((out / "bench_all.json").read_text())
    assert summary["benchmarks"]["student"]["rc"] == 0 and summary["smoke"] is True
    student = json.loads((out / "bench_student.json").read_text())
    assert [r["T"] for r in student["rows"]] == [100, 300, 1000]


@pytest.mark.slow
def test_when_the_pipeline_bench_runs_then_plain_and_ray_variants_and_their_ratios_are_written(tmp_path, ray_local):
    import bench_pipeline

    assert bench_pipeline.main(["--smoke", "--out", str(tmp_path)]) == 0
    body = _load(str(tmp_path), "bench_pipeline")
    assert set(body["variants"]) == {"plain", "ray_1w", "ray_2w"}
    for v in body["variants"].values():
        _stat_ok(v, 1)
    assert _positive(body["ratio_1w_over_plain"]["median"]) and _positive(body["ratio_2w_over_1w"]["median"])
    assert body["target_ratio"] == 0.85 and isinstance(body["target_met"], bool)
    assert all(r["steps"] >= 1 for rs in body["runs"].values() for r in rs)


@pytest.mark.slow
def test_when_the_teacher_bench_runs_then_online_and_cached_trainers_and_each_teacher_are_measured(tmp_path, ray_local):
    import bench_teachers

    assert bench_teachers.main(["--smoke", "--out", str(tmp_path)]) == 0
    body = _load(str(tmp_path), "bench_teachers")
    assert set(body["trainer"]) == {"online", "cache"}
    for t in body["trainer"].values():
        _stat_ok(t["samples_per_s"], 1)
        assert 0.0 <= t["data_wait_frac"]["median"] <= 1.0
    assert set(body["teachers"]) == {"crepe", "fracast"}
    for t in body["teachers"].values():
        _stat_ok(t["direct_records_per_s"], 1)
        # every view came back from the short pass (1 copy) and the long pass (3 copies)
        assert t["runs"]["pool"][0]["records"] == 4 * body["args"]["teacher_records"]
        assert t["runs"]["pool"][0]["long_pass_s"] > 0 and t["runs"]["pool"][0]["short_pass_s"] > 0


@pytest.mark.slow
def test_when_the_sweep_bench_runs_then_both_sweeps_time_every_trial(tmp_path, ray_local):
    import bench_sweep

    assert bench_sweep.main(["--smoke", "--out", str(tmp_path)]) == 0
    body = _load(str(tmp_path), "bench_sweep")
    assert set(body["runs"]) == {"shared_cache", "online"}
    for rs in body["runs"].values():
        assert len(rs[0]["trial_s"]) == body["args"]["trials"] and all(_positive(x) for x in rs[0]["trial_s"])
    assert _positive(body["ratio_online_over_cache"]["median"])


def test_when_the_memory_bench_runs_small_then_each_case_reports_its_outcome_and_peak(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "jobs", "bench_memory_bounds.py"), "--smoke", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cases = json.loads((tmp_path / "bench_memory_bounds.json").read_text())["cases"]
    assert set(cases) == {"prepare_crepe_hourly", "npz_bomb", "h5_unallocated"}
    assert cases["h5_unallocated"]["after"]["outcome"] == "refused"
    assert all(c["after"]["peak_rss"] > 0 for c in cases.values())
