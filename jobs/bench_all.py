"""Run every benchmark (`make bench`): each in its own process tree (its own local Ray), one after another,
then print all their tables together and write a summary JSON next to theirs.

    python jobs/bench_all.py --out bench_results [--smoke] [--only pipeline,ingest]

Sizes are chosen so the whole set runs in about 20 minutes on 2 idle cores; on a loaded machine it takes longer
and the load average is recorded with every figure. bench_gpu runs in --smoke mode here unless a CUDA device is
present (then it measures bf16 throughput and MFU); on a GPU machine run it alone: python jobs/bench_gpu.py.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_common as bc  # noqa: E402

# name -> (script, arguments for a full run, seconds allowed)
PLAN = {
    "pipeline": ("bench_pipeline.py", ["--records", "340", "--steps", "40", "--warmup", "8", "--repeats", "2"], 420),
    "ingest": ("bench_ingest.py", ["--files", "16", "--samples", "500000", "--repeats", "2"], 180),
    "student": ("bench_student.py", ["--configs", "tiny,small", "--lengths", "1e2,1e3,1e4,1e5,1e6", "--repeats", "2"], 300),
    "gpu": ("bench_gpu.py", [], 300),
    "teachers": ("bench_teachers.py", ["--records", "120", "--steps", "24", "--warmup", "6", "--repeats", "2",
                                       "--teacher-records", "32"], 360),
    "sweep": ("bench_sweep.py", ["--trials", "3", "--steps", "10", "--records", "48"], 300),
    # peak memory of decompression bombs through the readers and of an hourly record prepared for CREPE
    "memory": ("bench_memory_bounds.py", [], 300),
}


def _gpu_present() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def command(name: str, out: str, smoke: bool) -> list[str]:
    script, full, _ = PLAN[name]
    args = [sys.executable, os.path.join(HERE, script)]
    if name == "student":
        # bench_student has no smoke switch: a smoke run is tiny at three short lengths (its slopes need three)
        sizes = ["--configs", "tiny", "--lengths", "1e2,3e2,1e3", "--repeats", "1"] if smoke else full
        return args + sizes + ["--out", os.path.join(out, "bench_student.json")]
    if name == "gpu":
        return args + ([] if _gpu_present() and not smoke else ["--smoke"]) + ["--out", out]
    return args + (["--smoke"] if smoke else full) + ["--out", out]


def tables_of(stdout: str) -> str:
    """The tables and summary lines of a benchmark's output, without its progress lines."""
    keep = [ln for ln in stdout.splitlines() if not ln.startswith(("[bench_", "wrote "))]
    return "\n".join(keep).strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="bench_results")
    p.add_argument("--smoke", action="store_true", help="every benchmark in its smallest mode (checks, not figures)")
    p.add_argument("--only", default="", help="comma-separated subset of " + ",".join(PLAN))
    args = p.parse_args(argv)
    names = [n for n in (args.only.split(",") if args.only else PLAN) if n]
    unknown = sorted(set(names) - set(PLAN))
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; choose from {list(PLAN)}")
    os.makedirs(args.out, exist_ok=True)
    env = dict(os.environ, **bc.LOOPBACK_ENV)
    env.pop("RAY_ADDRESS", None)  # each benchmark starts its own local Ray on loopback
    env["PYTHONPATH"] = os.pathsep.join([bc.ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    before = bc.machine()
    print(f"[bench_all] machine: {before['cpu_model']}, {before['cpus']} cores, {before['mem_gb']} GB, "
          f"torch {before['torch']}, CUDA {before['cuda']}; load average {before['load_avg']}", flush=True)
    summary: dict = {"machine_at_start": before, "smoke": args.smoke, "benchmarks": {}}
    outputs: dict[str, str] = {}
    t_all = time.perf_counter()
    for name in names:
        cmd = command(name, args.out, args.smoke)
        limit = PLAN[name][2] * (1 if not args.smoke else 2)
        print(f"[bench_all] {name}: {' '.join(os.path.relpath(c) if c.endswith('.py') else c for c in cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        load0 = os.getloadavg()[0]
        log_path = os.path.join(args.out, f"{name}.log")
        with open(log_path, "w") as log:
            try:
                proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True, timeout=limit * 3,
                                      cwd=bc.ROOT, env=env, start_new_session=True)
                rc, out = proc.returncode, proc.stdout
            except subprocess.TimeoutExpired as e:
                rc, out = "timeout", (e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or "")
        wall = time.perf_counter() - t0
        outputs[name] = out
        print(out, end="" if out.endswith("\n") else "\n", flush=True)
        summary["benchmarks"][name] = {"rc": rc, "wall_s": wall, "load_avg_start": load0,
                                       "load_avg_end": os.getloadavg()[0], "stderr_log": log_path,
                                       "budget_s": limit}
        print(f"[bench_all] {name}: rc={rc}, {wall:.0f} s (budget {limit} s), load {load0:.1f} -> "
              f"{os.getloadavg()[0]:.1f}" + ("" if rc == 0 else f"; see {log_path}"), flush=True)
    summary["wall_s"] = time.perf_counter() - t_all
    summary["machine_at_end"] = bc.machine()
    with open(os.path.join(args.out, "bench_all.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    print("\n" + "=" * 100)
    print(f"all tables ({len(names)} benchmarks, {summary['wall_s']:.0f} s; machine: {before['cpu_model']}, "
          f"{before['cpus']} cores; load average at start {before['load_avg']}, at end "
          f"{summary['machine_at_end']['load_avg']})")
    print("=" * 100)
    for name in names:
        print(f"\n## {name} (rc={summary['benchmarks'][name]['rc']}, {summary['benchmarks'][name]['wall_s']:.0f} s)")
        print(tables_of(outputs[name]))
    print(f"\nwrote {os.path.join(args.out, 'bench_all.json')} and one JSON per benchmark in {args.out}/")
    return 0 if all(b["rc"] == 0 for b in summary["benchmarks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
