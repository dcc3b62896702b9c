"""Benchmark 6, GPU: the student's training throughput and model FLOPs utilisation (MFU) in bf16 for the small
and base configs, and teacher inference throughput. One prepared script, to run the moment a GPU is lent:

    python jobs/bench_gpu.py --out bench_results               # on a GPU machine (bf16 autocast, CUDA)
    python jobs/bench_gpu.py --smoke --out /tmp/b              # anywhere: tiny config, fp32 on CPU, seconds

Student: DistillationModule (STEP student + one linear head to a 768-wide teacher, cosine loss) trained with
AdamW on random records of ``--length`` samples x ``--channels``, batch ``--batch``, bf16 autocast with fp32
master weights on CUDA; ``--warmup`` steps untimed, then ``--steps`` timed (CUDA-synchronised). FLOPs per step
are counted by torch.utils.flop_counter.FlopCounterMode on one forward+backward (matmuls, convolutions and
attention as the model really runs them, so MFU is counted model FLOPs x steps/s / the device's dense bf16 peak;
peaks for known devices are in PEAK_TFLOPS, --peak-tflops overrides). Teachers: each one's ``prepare`` and
``embed`` on ``--teacher-records`` random records, records/s and target tokens/s (embed only; prepare is CPU
numpy and reported on its own). Every section is caught on its own, so one failure still leaves the others'
figures in the JSON (written after each section).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

# dense bf16 tensor-core peaks (TFLOP/s), from the vendors' data sheets (without sparsity)
PEAK_TFLOPS = {"H200": 989.4, "H100 SXM": 989.4, "H100 80GB HBM3": 989.4, "H100 PCIe": 756.0, "H100": 989.4,
               "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10G": 70.0}

TEACHERS = [
    {"name": "fracast", "kind": "fracast", "checkpoint": "builtin"},
    {"name": "crepe_full", "kind": "crepe", "checkpoint": "builtin", "variant": "full"},
    {"name": "crepe_tiny", "kind": "crepe", "checkpoint": "builtin", "variant": "tiny"},
]


def peak_tflops(name: str) -> float | None:
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):  # most specific first
        if key.lower() in name.lower():
            return PEAK_TFLOPS[key]
    return None


def bench_student(config: str, batch: int, length: int, channels: int, steps: int, warmup: int, device, bf16: bool,
                  peak: float | None) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from step_dist.distill.module import DistillationModule, DistillBatch, HeadConfig
    from step_dist.model import STEPEncoder, StudentConfig

    torch.manual_seed(0)
    student = STEPEncoder(StudentConfig.named(config))
    dim = 768
    module = DistillationModule(student, [HeadConfig(name="teacher", dim=dim, loss="cosine")]).to(device).train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=device.type == "cuda")
    t_teacher = max(8, length // 160)  # e.g. one token per 10 ms at 16 kHz
    batch_data = DistillBatch(
        values=torch.randn(batch, channels, length), lengths=torch.full((batch,), length),
        channel_mask=torch.ones(batch, channels, dtype=torch.bool), sampling_rate_hz=torch.full((batch,), 16000.0),
        targets={"teacher": torch.randn(batch, t_teacher, dim)},
        target_counts={"teacher": torch.full((batch,), t_teacher)},
    ).to(device)

    def step() -> torch.Tensor:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            terms = module(batch_data)
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return terms["loss"].detach()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    with FlopCounterMode(display=False) as fc:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            terms = module(batch_data)
        terms["loss"].backward()
    opt.zero_grad(set_to_none=True)
    flops = float(fc.get_total_flops())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = step()
        sync()
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        n_tokens = int(student(batch_data.values, batch_data.lengths, batch_data.channel_mask,
                               batch_data.sampling_rate_hz).n_tokens[0])
    med = statistics.median(times)
    achieved = flops / med / 1e12
    return {
        "config": config, "params": student.num_parameters(), "batch": batch, "length": length, "channels": channels,
        "bf16": bf16, "student_tokens": n_tokens, "teacher_tokens": t_teacher,
        "step_s": bc.spread(times), "samples_per_s": batch / med, "student_tokens_per_s": batch * n_tokens / med,
        "flops_per_step": flops, "achieved_tflops": achieved, "peak_tflops": peak,
        "mfu": achieved / peak if peak else None, "final_loss": float(loss),
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
    }


def bench_teacher(tcfg: dict, n: int, seconds: float, batch: int) -> dict:
    import numpy as np
    import torch

    from step_dist.config import from_dict
    from step_dist.teachers import TeacherConfig, build_teacher

    teacher = build_teacher(from_dict(TeacherConfig, {**tcfg, "batch_size": batch}, where="bench_gpu.teacher."))
    rate = 16000.0
    rng = np.random.default_rng(0)
    raw = [rng.standard_normal((1, int(seconds * rate))).astype(np.float32) for _ in range(n)]
    t0 = time.perf_counter()
    prepared = [teacher.prepare(v, rate, f"r{i}", None, allow_short=True) for i, v in enumerate(raw)]
    prep_s = time.perf_counter() - t0
    teacher.embed(prepared[:batch], [f"r{i}" for i in range(min(batch, n))])  # warm-up (kernels, allocator)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    tokens = teacher.embed(prepared, [f"r{i}" for i in range(n)])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    n_tok = sum(int(t.shape[0]) for t in tokens)
    return {"teacher": tcfg["name"], "device": str(getattr(teacher, "device", "?")), "records": n,
            "seconds_per_record": seconds, "prepared_len": int(prepared[0].shape[-1]), "dim": int(teacher.dim),
            "records_per_s": n / dt, "tokens_per_s": n_tok / dt, "prepare_records_per_s": n / prep_s}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="small,base")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--length", type=int, default=16000, help="samples per record (1 s at 16 kHz)")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--teacher-records", type=int, default=64)
    p.add_argument("--teacher-seconds", type=float, default=5.0, help="record length for teachers, seconds at 16 kHz")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak (default: looked up)")
    p.add_argument("--out", default="bench_results")
    p.add_argument("--smoke", action="store_true", help="tiny config, fp32 on CPU, a few steps: checks the script")
    args = p.parse_args(argv)
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        args.configs, args.batch, args.length, args.steps, args.warmup = "tiny", 2, 2048, 2, 1
        args.teacher_records, args.teacher_seconds = 2, 0.25
    bf16 = device.type == "cuda"
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or (peak_tflops(name) if device.type == "cuda" else None)
    result: dict = {"args": vars(args), "device": name, "bf16": bf16, "students": [], "teachers": [], "errors": []}

    def save() -> str:
        return bc.write_result(args.out, "bench_gpu", result)

    print(f"[bench_gpu] device {name}, bf16 {bf16}, peak {peak} TFLOP/s", flush=True)
    for config in args.configs.split(","):
        try:
            r = bench_student(config, args.batch, args.length, args.channels, args.steps, args.warmup, device, bf16, peak)
            result["students"].append(r)
            print(f"[bench_gpu] {config}: {r['samples_per_s']:.1f} samples/s, {r['achieved_tflops']:.2f} TFLOP/s, "
                  f"MFU {bc.fmt(r['mfu'])}", flush=True)
        except Exception as e:  # noqa: BLE001 - keep the other sections' figures
            result["errors"].append({"section": f"student {config}", "error": f"{type(e).__name__}: {e}",
                                     "trace": traceback.format_exc()[-2000:]})
            print(f"[bench_gpu] student {config} failed: {e}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        save()
    for tcfg in TEACHERS:
        try:
            r = bench_teacher(tcfg, args.teacher_records, args.teacher_seconds, 16)
            result["teachers"].append(r)
            print(f"[bench_gpu] teacher {tcfg['name']}: {r['records_per_s']:.1f} records/s", flush=True)
        except Exception as e:  # noqa: BLE001
            result["errors"].append({"section": f"teacher {tcfg['name']}", "error": f"{type(e).__name__}: {e}",
                                     "trace": traceback.format_exc()[-2000:]})
            print(f"[bench_gpu] teacher {tcfg['name']} failed: {e}", flush=True)
        save()
    print(bc.table(f"6a. student training on {name} ({'bf16 autocast' if bf16 else 'fp32'}, batch {args.batch}, "
                   f"T={args.length}, {args.channels} channel(s), {args.steps} timed steps)",
                   ["config", "params", "samples/s", "tokens/s", "TFLOP/step", "TFLOP/s", "MFU", "peak GB"],
                   [[r["config"], r["params"], r["samples_per_s"], r["student_tokens_per_s"], r["flops_per_step"] / 1e12,
                     r["achieved_tflops"], r["mfu"], r["peak_mem_gb"]] for r in result["students"]]))
    print(bc.table(f"6b. teacher inference ({args.teacher_records} records of {args.teacher_seconds} s at 16 kHz)",
                   ["teacher", "device", "records/s", "tokens/s", "prepare records/s"],
                   [[r["teacher"], r["device"], r["records_per_s"], r["tokens_per_s"], r["prepare_records_per_s"]]
                    for r in result["teachers"]]))
    path = save()
    print(f"wrote {path}" + (f"; {len(result['errors'])} section(s) failed" if result["errors"] else ""))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
