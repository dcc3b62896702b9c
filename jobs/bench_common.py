"""Shared pieces of the benchmark scripts (jobs/bench_*.py): loopback environment, local Ray, statistics,
tables, JSON results, synthetic shard sets and the tiny recipe.

Benchmarks compare variants measured side by side in one process tree (interleaved, repeated), because absolute
times on a shared machine are noise and ratios are not. Nothing here asserts on a timing.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Iterable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "jobs", "configs", "tiny.yaml")
if ROOT not in sys.path:  # `python jobs/bench_x.py` from anywhere
    sys.path.insert(0, ROOT)

# Keep Ray and botocore on loopback and the hubs offline, before Ray or boto are imported.
LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "AWS_EC2_METADATA_DISABLED": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_TRAIN_V2_ENABLED": "1",
}
for _k, _v in LOOPBACK_ENV.items():
    os.environ.setdefault(_k, _v)


def ensure_ray(num_cpus: int = 8):
    """The Ray already running in this process (tests), else a fresh local one on loopback (never RAY_ADDRESS:
    a benchmark measures this machine). Returns (ray, started_here)."""
    import ray

    if ray.is_initialized():
        return ray, False
    os.environ.pop("RAY_ADDRESS", None)
    for attempt in (1, 2):  # on an overloaded machine the raylet can miss its start-up deadline once
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            return ray, True
        except Exception as e:  # noqa: BLE001 - Ray raises a bare Exception for a start-up timeout
            ray.shutdown()
            if attempt == 2 or "timed out during startup" not in str(e):
                raise
            print(f"[bench] local Ray did not start in time ({e}); trying once more", file=sys.stderr, flush=True)
    raise AssertionError("unreachable")


def spread(xs: Iterable[float]) -> dict[str, Any]:
    """Median and spread of repeated measurements (min, max, relative half-range)."""
    xs = [float(x) for x in xs]
    if not xs:
        return {"median": None, "min": None, "max": None, "rel_spread": None, "n": 0, "values": []}
    med = statistics.median(xs)
    return {"median": med, "min": min(xs), "max": max(xs),
            "rel_spread": (max(xs) - min(xs)) / 2 / med if med else None, "n": len(xs), "values": xs}


def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
            return f"{x:.{digits}g}"
        return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:,.{max(digits - 2, 1)}f}"
    return str(x)


def table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(h) for h in header]] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))) for r in cells[1:]]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    try:
        info["load_avg"] = list(os.getloadavg())
    except OSError:
        info["load_avg"] = None
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        info["cpu_model"] = None
    try:
        with open("/proc/meminfo") as f:
            info["mem_gb"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except OSError:
        info["mem_gb"] = None
    return info


def write_result(out_dir: str, name: str, result: dict[str, Any]) -> str:
    """``<out_dir>/<name>.json`` with the machine description and load average at the end of the run."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"{name}.json")
    body = {"benchmark": name, "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": machine(), **result}
    with open(path, "w") as f:
        json.dump(body, f, indent=2, default=str)
    return path


def synthetic_records(n: int, seed: int = 0, min_len: int = 300, max_len: int = 2048):
    """Sines at a few rates and scales with noise, 1-2 channels: cheap records with structure for teachers."""
    import numpy as np

    from step_dist.signals.record import SignalRecord

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(min_len, max_len + 1))
        channels = int(rng.integers(1, 3))
        rate = float(rng.choice([100.0, 250.0, 16000.0]))
        t = np.arange(length) / rate
        freq = (3.0 if i % 2 == 0 else 11.0) * (1 + rate / 1000.0)
        vals = np.stack([np.sin(2 * np.pi * freq * (c + 1) * t) * 10 ** rng.uniform(-2, 2)
                         + 0.1 * rng.standard_normal(length) for c in range(channels)]).astype(np.float32)
        out.append(SignalRecord(id=f"bench-{seed}-{i}", source="bench", domain="test", sampling_rate_hz=rate,
                                values=vals, uri="generated://bench", index=i))
    return out


def write_shards(uri: str, n: int, seed: int = 0, **kw) -> str:
    from step_dist.signals.shards import write_records

    write_records(uri, synthetic_records(n, seed, **kw))
    return uri


def tiny_config(sets: dict[str, Any]):
    """The tiny recipe (jobs/configs/tiny.yaml) with ``key.sub=value`` overrides."""
    from step_dist.train import load_config

    return load_config(TINY, [f"{k}={v}" for k, v in sets.items()])


def steady_rate(outputs_uri: str, warmup: int, key: str = "samples_per_s") -> dict[str, Any]:
    """Steady-state throughput from a run's metrics.jsonl: steps after ``warmup`` only (startup excluded).

    Each row's rate covers one optimizer step, so the run's rate is work / time = the harmonic mean of the
    per-step rates (all steps move the same number of samples)."""
    from step_dist import storage

    rows = [json.loads(x) for x in storage.read_bytes(outputs_uri.rstrip("/") + "/metrics.jsonl").decode().splitlines()
            if x.strip()]
    rows = sorted((r for r in rows if int(r["step"]) > warmup and key in r), key=lambda r: r["step"])  # not validation rows
    rates = [float(r[key]) for r in rows if float(r.get(key, 0)) > 0]
    out = {"steps": len(rates), "rate": len(rates) / sum(1 / x for x in rates) if rates else None,
           "median_step_rate": statistics.median(rates) if rates else None}
    if rows and "data_wait_frac" in rows[0]:
        out["data_wait_frac"] = statistics.mean(float(r["data_wait_frac"]) for r in rows)
    if rows and "cpu_util" in rows[0]:
        out["cpu_util"] = statistics.mean(float(r["cpu_util"]) for r in rows)
    if rows and "tokens_per_s" in rows[0]:
        toks = [float(r["tokens_per_s"]) for r in rows if float(r["tokens_per_s"]) > 0]
        out["tokens_per_s"] = len(toks) / sum(1 / x for x in toks) if toks else None
    return out
