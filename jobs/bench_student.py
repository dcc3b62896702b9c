"""Benchmark the STEP student: forward+backward time and peak memory per sample against record length T.

    python jobs/bench_student.py [--configs tiny,small] [--lengths 1e2,1e3,1e4,1e5,1e6] [--out bench.json]

Each (config, T) runs in a fresh subprocess so its peak memory is its own: one warm-up step, then
``--repeats`` timed forward+backward steps (median reported), batch ``--batch`` records of ``--channels``
channels, random data, adaptive patching at its initial stride.

Memory, stated per device:
  * CPU: ``peak_rss_delta_mb`` = the process's peak resident set (getrusage ru_maxrss) minus its resident set
    just before the first step (model, optimizer-free, and input already allocated). It covers everything a
    step allocates: stem, windows, attention, autograd buffers.
  * CUDA: ``peak_rss_delta_mb`` is torch.cuda.max_memory_allocated minus the memory allocated before the step.
  * ``attention_mb`` is computed from shapes (not measured): per layer, the score and probability tensors of
    the time attention [B·C, H, N, N] and the channel attention [B·N, H, C, C] in float32 (what the math
    SDPA path keeps for backward). N is capped by the config, so this is flat in T by construction; the
    table shows it.
Time: wall clock and process CPU time (all threads) per step; CPU time is the steadier figure on a shared
machine where other jobs steal cores. Slope: least squares of log(time) on log(T), over all lengths and over
the last three (the asymptote). CPU time is split into user and system time: on Linux, glibc hands blocks
above 32 MB straight back to the kernel, so at T >= ~3e5 every step re-faults its big tensors and system
time (page zeroing) grows faster than T; user time is the model's own arithmetic. A CUDA caching allocator
does not pay this. The script never asserts on timings.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time


def child(config: str, length: int, batch: int, channels: int, repeats: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from step_dist.model import STEPEncoder, StudentConfig

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    cfg = StudentConfig.named(config)
    enc = STEPEncoder(cfg).to(device).train()
    values = torch.randn(batch, channels, length, device=device)
    lengths = torch.full((batch,), length, device=device)
    rate = torch.full((batch,), 100.0, device=device)

    def step():
        out = enc(values, lengths, sampling_rate_hz=rate)
        (out.tokens.square().mean() + out.penalty).backward()
        enc.zero_grad(set_to_none=True)
        return out

    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_bytes()
    out = step()  # warm-up, and the memory peak
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    times, cpu_times = [], []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    n = int(out.n_tokens[0])
    h, c = cfg.n_heads, channels
    attn_floats = cfg.n_layers * 2 * (batch * c * h * n * n + batch * n * h * c * c)
    return {
        "config": config,
        "T": length,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "params": enc.num_parameters(),
        "batch": batch,
        "channels": channels,
        "tokens": n,
        "stride": float(out.stride[0]),
        "time_s_per_sample": statistics.median(times) / batch,
        "cpu_s_per_sample": statistics.median(cpu_times) / batch,
        "user_s_per_sample": (r1.ru_utime - r0.ru_utime) / repeats / batch,
        "sys_s_per_sample": (r1.ru_stime - r0.ru_stime) / repeats / batch,
        "page_faults_per_step": (r1.ru_minflt - r0.ru_minflt) / repeats,
        "times_s": times,
        "cpu_times_s": cpu_times,
        "peak_rss_delta_mb": max(peak, 0) / batch / 2**20,
        "attention_mb": attn_floats * 4 / batch / 2**20,
    }


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def slope(rows: list[dict], key: str) -> float:
    xs = [math.log(r["T"]) for r in rows]
    ys = [math.log(r[key]) for r in rows]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="tiny,small")
    p.add_argument("--lengths", default="1e2,1e3,1e4,1e5,1e6")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    # one thread by default: per-sample cost without OpenMP spin-waits, which a shared machine inflates
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="bench_results/bench_student.json")
    p.add_argument("--child", nargs=2, metavar=("CONFIG", "T"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.batch, args.channels, args.repeats, args.threads)))
        return 0
    lengths = [int(float(x)) for x in args.lengths.split(",")]
    rows = []
    print(f"{'config':<7}{'T':>9}{'N':>5}{'stride':>9}{'wall ms':>10}{'cpu ms':>10}{'user ms':>10}{'sys ms':>9}{'peak MB':>10}{'attn MB':>9}")
    for config in args.configs.split(","):
        for length in lengths:
            cmd = [sys.executable, __file__, "--child", config, str(length), "--batch", str(args.batch),
                   "--channels", str(args.channels), "--repeats", str(args.repeats),
                   "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{config} T={length} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                return 1
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"{config:<7}{length:>9}{r['tokens']:>5}{r['stride']:>9.1f}{r['time_s_per_sample']*1e3:>10.1f}"
                  f"{r['cpu_s_per_sample']*1e3:>10.1f}{r['user_s_per_sample']*1e3:>10.1f}"
                  f"{r['sys_s_per_sample']*1e3:>9.1f}"
                  f"{r['peak_rss_delta_mb']:>10.1f}{r['attention_mb']:>9.3f}", flush=True)
    summary = {}
    for config in args.configs.split(","):
        sub = [r for r in rows if r["config"] == config]
        summary[config] = {
            "params": sub[0]["params"],
            "time_slope_all": slope(sub, "time_s_per_sample") if len(sub) > 1 else None,
            "time_slope_last3": slope(sub[-3:], "time_s_per_sample") if len(sub) > 2 else None,
            "cpu_slope_all": slope(sub, "cpu_s_per_sample") if len(sub) > 1 else None,
            "cpu_slope_last3": slope(sub[-3:], "cpu_s_per_sample") if len(sub) > 2 else None,
            "user_slope_all": slope(sub, "user_s_per_sample") if len(sub) > 1 else None,
            "user_slope_last3": slope(sub[-3:], "user_s_per_sample") if len(sub) > 2 else None,
            "attention_mb_range": [min(r["attention_mb"] for r in sub), max(r["attention_mb"] for r in sub)],
        }
        s = summary[config]
        print(f"{config}: params {s['params']:,}; log-log slope of wall time {s['time_slope_all']:.3f} (all T), "
              f"{s['time_slope_last3']:.3f} (last 3 T); of CPU time {s['cpu_slope_all']:.3f} (all T), "
              f"{s['cpu_slope_last3']:.3f} (last 3 T); of user CPU time {s['user_slope_all']:.3f} (all T), "
              f"{s['user_slope_last3']:.3f} (last 3 T); target <= 1.1; attention MB "
              f"{s['attention_mb_range'][0]:.3f}..{s['attention_mb_range'][1]:.3f}")
    from step_dist.model import STEPEncoder, StudentConfig

    summary["base_params"] = STEPEncoder(StudentConfig.named("base")).num_parameters()
    print(f"base: params {summary['base_params']:,}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"rows": rows, "summary": summary, "args": vars(args)}, f, indent=2)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
