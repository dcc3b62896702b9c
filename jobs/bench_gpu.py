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

Student throughput is measured at each of ``--batches`` (MFU grows with the work per step: STEP caps tokens per
record at n_max, so a batch of 16 one-second records is a small matrix problem for a 120M model). A length sweep
(``--lengths``, batch 1) gives forward+backward time and peak memory against T on the device, with the log-log
slope, as part 2 measures on CPU. ``--hf-teacher-sizes`` adds wav2vec2 at the published base size built from its
config with random weights (no download: throughput depends on the architecture, not on the weights) and loaded
through the hf_audio adapter, to size teacher GPUs against trainer GPUs for a real audio teacher.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
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


def training_step(config: str, batch: int, length: int, channels: int, device, bf16: bool, max_teacher_tokens=None):
    """(student, module, batch, step): the STEP student with one linear head to a 768-wide teacher (cosine loss),
    AdamW, random records; step() runs one optimizer step under bf16 autocast (when asked) and returns the loss."""
    import torch

    from step_dist.distill.module import DistillationModule, DistillBatch, HeadConfig
    from step_dist.model import STEPEncoder, StudentConfig

    torch.manual_seed(0)
    student = STEPEncoder(StudentConfig.named(config))
    dim = 768
    module = DistillationModule(student, [HeadConfig(name="teacher", dim=dim, loss="cosine")]).to(device).train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=device.type == "cuda")
    t_teacher = max(8, min(length // 160, max_teacher_tokens or length))  # e.g. one token per 10 ms at 16 kHz
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

    return student, module, batch_data, step


def bench_student(config: str, batch: int, length: int, channels: int, steps: int, warmup: int, device, bf16: bool,
                  peak: float | None) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    student, module, batch_data, step = training_step(config, batch, length, channels, device, bf16)
    t_teacher = int(batch_data.target_counts["teacher"][0])

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
    module.zero_grad(set_to_none=True)
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


def profile_step(config: str, batch: int, length: int, device, bf16: bool, out_dir: str, top: int = 15) -> dict:
    """torch.profiler over 5 training steps: the operators that take the device's time, how many kernels a step
    launches and how busy the device is (kernel time / wall time). Writes a Chrome trace beside the JSON."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    _, _, _, step = training_step(config, batch, length, 1, device, bf16)

    for _ in range(3):
        step()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    n_steps = 5
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        for _ in range(n_steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / n_steps
    trace = os.path.join(out_dir, f"profile_{config}_b{batch}.json")
    prof.export_chrome_trace(trace)
    events = prof.key_averages()
    dev_attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    rows = sorted(events, key=lambda e: getattr(e, dev_attr, 0.0), reverse=True)[:top]
    total_dev = sum(getattr(e, dev_attr, 0.0) for e in events) / n_steps / 1e6  # seconds per step
    kernels = sum(e.count for e in events if getattr(e, "device_type", None) is not None
                  and "cuda" in str(e.device_type).lower()) / n_steps
    return {"config": config, "batch": batch, "length": length, "wall_s_per_step": wall,
            "device_busy_s_per_step": total_dev, "device_busy_frac": total_dev / wall if wall else None,
            "kernels_per_step": kernels, "trace": trace,
            "top": [{"op": e.key, "calls_per_step": e.count / n_steps,
                     "ms_per_step": getattr(e, dev_attr, 0.0) / n_steps / 1e3} for e in rows]}


def bench_length(config: str, lengths: list[int], device, bf16: bool, repeats: int = 3) -> list[dict]:
    """Time and peak memory of one training step on one record of each length (batch 1, one channel)."""
    import torch

    rows = []
    for length in lengths:
        _, _, _, step = training_step(config, 1, length, 1, device, bf16, max_teacher_tokens=1500)
        step()  # warm-up: kernels for this shape
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        rows.append({"config": config, "length": length, "step_s": bc.spread(times),
                     "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None})
    xs = [math.log(r["length"]) for r in rows]
    ys = [math.log(r["step_s"]["median"]) for r in rows]
    if len(rows) >= 2:
        mx, my = statistics.mean(xs), statistics.mean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        for r in rows:
            r["slope_all"] = slope
    return rows


def wav2vec2_base_folder(root: str) -> dict:
    """A teacher entry for wav2vec2 at the published base size (95M parameters), random weights, saved the way
    the hub publishes it, so the hf_audio adapter loads it like a downloaded checkpoint."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    folder = os.path.join(root, "wav2vec2-base-random")
    if not os.path.exists(os.path.join(folder, "config.json")):
        Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(folder)
    return {"name": "wav2vec2_base", "kind": "hf_audio", "checkpoint": folder}


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
    p.add_argument("--batches", default="16,64", help="batch sizes measured for every student config")
    p.add_argument("--lengths", default="1e3,1e4,1e5,1e6", help="length sweep (batch 1) of the first config; '' = skip")
    p.add_argument("--hf-teacher-sizes", action="store_true", default=None,
                   help="also wav2vec2 at base size, random weights (default: on with CUDA, off in --smoke)")
    p.add_argument("--length", type=int, default=16000, help="samples per record (1 s at 16 kHz)")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--teachers", default=",".join(t["name"] for t in TEACHERS),
                   help="which shipped teachers to measure (comma-separated)")
    p.add_argument("--teacher-records", type=int, default=64)
    p.add_argument("--teacher-seconds", type=float, default=5.0, help="record length for teachers, seconds at 16 kHz")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak (default: looked up)")
    p.add_argument("--profile", default="", help="CONFIG:BATCH to profile with torch.profiler (e.g. base:64)")
    p.add_argument("--out", default="bench_results")
    p.add_argument("--smoke", action="store_true", help="tiny config, fp32 on CPU, a few steps: checks the script")
    args = p.parse_args(argv)
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        args.configs, args.batches, args.length, args.steps, args.warmup = "tiny", "2", 2048, 2, 1
        args.teacher_records, args.teacher_seconds, args.lengths = 2, 0.25, "1e3,4e3"
    bf16 = device.type == "cuda"
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = args.peak_tflops or (peak_tflops(name) if device.type == "cuda" else None)
    result: dict = {"args": vars(args), "device": name, "bf16": bf16, "students": [], "teachers": [], "errors": []}

    def save() -> str:
        return bc.write_result(args.out, "bench_gpu", result)

    print(f"[bench_gpu] device {name}, bf16 {bf16}, peak {peak} TFLOP/s", flush=True)
    result["lengths"] = []
    batches = [int(b) for b in args.batches.split(",") if b]
    for config in args.configs.split(","):
        for batch in batches:
            try:
                r = bench_student(config, batch, args.length, args.channels, args.steps, args.warmup, device, bf16,
                                  peak)
                result["students"].append(r)
                print(f"[bench_gpu] {config} batch {batch}: {r['samples_per_s']:.1f} samples/s, "
                      f"{r['achieved_tflops']:.2f} TFLOP/s, MFU {bc.fmt(r['mfu'])}", flush=True)
            except Exception as e:  # noqa: BLE001 - keep the other sections' figures
                result["errors"].append({"section": f"student {config} batch {batch}",
                                         "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]})
                print(f"[bench_gpu] student {config} batch {batch} failed: {e}", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            save()
    lengths = [int(float(x)) for x in args.lengths.split(",") if x]
    if lengths:
        config = args.configs.split(",")[0]
        try:
            result["lengths"] = bench_length(config, lengths, device, bf16)
            print(f"[bench_gpu] length sweep {config}: slope {bc.fmt(result['lengths'][0].get('slope_all'))}",
                  flush=True)
        except Exception as e:  # noqa: BLE001
            result["errors"].append({"section": "length sweep", "error": f"{type(e).__name__}: {e}",
                                     "trace": traceback.format_exc()[-2000:]})
            print(f"[bench_gpu] length sweep failed: {e}", flush=True)
        save()
    result["profile"] = None
    if args.profile:
        pc, pb = args.profile.split(":")
        try:
            prof = profile_step(pc, int(pb), args.length, device, bf16, args.out)
            result["profile"] = prof
            print(bc.table(f"6d. profile of {pc} at batch {pb}: {bc.fmt(prof['wall_s_per_step'] * 1e3)} ms a step, "
                           f"device busy {bc.fmt(prof['device_busy_frac'])} of it, "
                           f"{bc.fmt(prof['kernels_per_step'])} kernels a step",
                           ["op", "calls/step", "ms/step"],
                           [[r["op"][:60], r["calls_per_step"], r["ms_per_step"]] for r in prof["top"]]), flush=True)
        except Exception as e:  # noqa: BLE001
            result["errors"].append({"section": "profile", "error": f"{type(e).__name__}: {e}",
                                     "trace": traceback.format_exc()[-2000:]})
            print(f"[bench_gpu] profile failed: {e}", flush=True)
        save()
    wanted = {t for t in args.teachers.split(",") if t}
    teachers = [t for t in TEACHERS if t["name"] in wanted]
    tmp = tempfile.TemporaryDirectory(prefix="bench-gpu-")
    if args.hf_teacher_sizes or (args.hf_teacher_sizes is None and device.type == "cuda" and not args.smoke):
        try:
            teachers.append(wav2vec2_base_folder(tmp.name))
        except Exception as e:  # noqa: BLE001 - transformers missing: the shipped teachers still run
            result["errors"].append({"section": "teacher wav2vec2_base", "error": f"{type(e).__name__}: {e}",
                                     "trace": traceback.format_exc()[-2000:]})
    for tcfg in teachers:
        try:
            r = bench_teacher(tcfg, args.teacher_records, args.teacher_seconds, 16)
            result["teachers"].append(r)
            print(f"[bench_gpu] teacher {tcfg['name']}: {r['records_per_s']:.1f} records/s", flush=True)
        except Exception as e:  # noqa: BLE001
            result["errors"].append({"section": f"teacher {tcfg['name']}", "error": f"{type(e).__name__}: {e}",
                                     "trace": traceback.format_exc()[-2000:]})
            print(f"[bench_gpu] teacher {tcfg['name']} failed: {e}", flush=True)
        save()
    print(bc.table(f"6a. student training on {name} ({'bf16 autocast' if bf16 else 'fp32'}, "
                   f"T={args.length}, {args.channels} channel(s), {args.steps} timed steps)",
                   ["config", "params", "batch", "samples/s", "tokens/s", "TFLOP/step", "TFLOP/s", "MFU", "peak GB"],
                   [[r["config"], r["params"], r["batch"], r["samples_per_s"], r["student_tokens_per_s"],
                     r["flops_per_step"] / 1e12, r["achieved_tflops"], r["mfu"], r["peak_mem_gb"]]
                    for r in result["students"]]))
    if result["lengths"]:
        print(bc.table(f"6c. student training step against length on {name} (batch 1, median of 3; log-log "
                       f"slope {bc.fmt(result['lengths'][0].get('slope_all'))})",
                       ["config", "T", "step ms", "spread", "peak GB"],
                       [[r["config"], r["length"], r["step_s"]["median"] * 1e3, r["step_s"]["rel_spread"],
                         r["peak_mem_gb"]] for r in result["lengths"]]))
    print(bc.table(f"6b. teacher inference ({args.teacher_records} records of {args.teacher_seconds} s at 16 kHz)",
                   ["teacher", "device", "records/s", "tokens/s", "prepare records/s"],
                   [[r["teacher"], r["device"], r["records_per_s"], r["tokens_per_s"], r["prepare_records_per_s"]]
                    for r in result["teachers"]]))
    path = save()
    print(f"wrote {path}" + (f"; {len(result['errors'])} section(s) failed" if result["errors"] else ""))
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
