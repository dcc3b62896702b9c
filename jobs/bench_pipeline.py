"""Benchmark 1, pipeline overhead: step-dist's distillation training against a plain PyTorch loop.

    python jobs/bench_pipeline.py [--records 340] [--steps 40] [--warmup 8] [--repeats 2] [--out bench_results]

Variants, interleaved (the order rotates each repeat so load drifts on a shared machine hit all of them):
  * plain:     one process, no Ray, no DeepSpeed. The same views and cached targets held in memory, the same
               bucketing and collate per step, the same DistillationModule, AdamW, warmup+cosine schedule and
               gradient clipping; torch at the thread count a Ray Train CPU worker gets (1).
  * ray_1w:    `step_dist.train.pretrain` on local Ray: Ray Data reading the shards, validation, views and the
               target cache streaming into 1 Ray Train worker running DeepSpeed (the recipe's ZeRO stage).
  * ray_2w:    the same with 2 workers (samples/s summed over ranks).
Throughput is steady state: samples/s of the steps after ``--warmup`` (per-step figures from the run's
metrics.jsonl; the plain loop times the same span of each step the same way), so process, Ray, DeepSpeed
and pool start-up are excluded. The default data set (340 records, batch 4) keeps every measured step of 1 and 2 workers in the first epoch.
Target: ray_1w / plain >= 0.85.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

# CREPE (tiny, 512-sample context) builds the cache in seconds; the trainer never runs the teacher here.
TEACHER = {"name": "crepe", "model": {"kind": "crepe", "checkpoint": "builtin", "variant": "tiny", "max_context": 512},
           "weight": 1.0, "loss": "cosine", "pool": {"size": 1, "num_cpus": 1, "batch_size": 16}}


def recipe(tmp: str, name: str, workers: int, steps: int, mode: str = "cache", zero: int = 2,
           teacher: dict | None = None, **extra):
    cfg = bc.tiny_config({
        "name": name, "storage": f"{tmp}/runs", "data.train": f"{tmp}/shards", "targets.mode": mode,
        "targets.cache": f"{tmp}/targets", "train.num_workers": workers, "train.zero_stage": zero,
        "train.max_steps": steps, "train.checkpoint_every": steps, "train.log_every": 10**6, "tracker": "none",
        **extra,
    })
    from step_dist.config import from_dict
    from step_dist.train.config import TeacherEntry

    cfg.teachers = [from_dict(TeacherEntry, teacher or TEACHER, where="bench.teacher.")]
    return cfg


def in_memory_rows(cfg) -> list:
    """The training views with their cached targets, in memory, built without Ray (the same functions the
    pipeline runs: validation rules, deterministic views, cache lookup)."""
    import pyarrow as pa

    from step_dist.signals.shards import iter_rows
    from step_dist.signals.record import RECORD_SCHEMA
    from step_dist.teachers.cache import CachedTargetsUDF
    from step_dist.teachers.stage import expand_views

    records = pa.Table.from_pylist(list(iter_rows(cfg.data.train)), schema=RECORD_SCHEMA)
    views = expand_views(records, dataclasses.asdict(cfg.data.view))
    table = CachedTargetsUDF(cfg.targets.cache, [dataclasses.asdict(t) for t in cfg.teacher_configs()])(views)
    return table


def plain_loop(cfg, table, warmup: int, threads: int = 1) -> dict:
    """A single-process PyTorch loop over in-memory data: the baseline a user would write by hand."""
    import numpy as np
    import torch

    from step_dist.data.batches import bucketed_micro_batches, collate
    from step_dist.distill.module import DistillationModule
    from step_dist.model import STEPEncoder
    from step_dist.train.schedule import lr_factor

    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(cfg.train.seed)
        names = [te.name for te in cfg.teachers]
        dims = {n: int(table[f"t_{n}_dim"][0].as_py()) for n in names}
        heads = [te.head_config({"dim": dims[te.name]}) for te in cfg.teachers]
        module = DistillationModule(STEPEncoder(cfg.student_config()), heads, penalty_weight=cfg.train.penalty_weight)
        o, t = cfg.optim, cfg.train
        opt = torch.optim.AdamW(module.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, o.warmup_steps, t.max_steps, o.min_lr_ratio))
        cols = {c: table[c].to_numpy(zero_copy_only=False) for c in table.column_names}
        n = table.num_rows
        chunk = cfg.data.bucket_rows

        def chunks():
            while True:  # epochs over the in-memory views, bucket_rows at a time like the Ray iterator
                for i in range(0, n, chunk):
                    yield {c: v[i:i + chunk] for c, v in cols.items()}

        micro = bucketed_micro_batches(chunks(), cfg.data.batch_size)
        module.train()
        rates, utils, t_start = [], [], time.perf_counter()
        for step in range(1, t.max_steps + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            rows = next(micro)
            batch = collate(rows, names)
            terms = module(batch)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), o.grad_clip)
            opt.step()
            sched.step()
            float(terms["loss"].detach())  # the loop reads its loss every step, as the real one does
            dt = time.perf_counter() - t0
            rates.append(len(rows) / dt)
            utils.append((time.process_time() - c0) / dt)
        steady = rates[warmup:]
        return {"rate": len(steady) / sum(1 / r for r in steady), "steps": len(steady),
                "median_step_rate": float(np.median(steady)), "wall_s": time.perf_counter() - t_start,
                "cpu_util": float(np.mean(utils[warmup:])),
                "threads": threads}
    finally:
        torch.set_num_threads(prev_threads)


def ray_run(cfg, warmup: int) -> dict:
    from step_dist.train import pretrain

    t0 = time.perf_counter()
    res = pretrain(cfg, verbose=False)
    out = bc.steady_rate(res.outputs_uri, warmup)
    out["wall_s"] = time.perf_counter() - t0
    return out


def worker_threads() -> int:
    """torch threads inside a 1-CPU Ray worker (Ray sets OMP_NUM_THREADS from the worker's CPUs)."""
    import ray

    @ray.remote(num_cpus=1)
    def threads() -> int:
        import torch

        return torch.get_num_threads()

    return int(ray.get(threads.remote()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=340)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--zero", type=int, default=2, help="ZeRO stage of the step-dist runs (the tiny recipe's is 2)")
    p.add_argument("--no-2w", action="store_true", help="skip the 2-worker variant")
    p.add_argument("--out", default="bench_results")
    p.add_argument("--smoke", action="store_true", help="a few steps, one repeat: checks the script, not speed")
    args = p.parse_args(argv)
    if args.smoke:
        args.records, args.steps, args.warmup, args.repeats = 24, 4, 1, 1
    ray, started = bc.ensure_ray()
    tmp = tempfile.mkdtemp(prefix="bench-pipeline-")
    try:
        bc.write_shards(f"{tmp}/shards", args.records, seed=0, max_len=2048)
        from step_dist.train.trainer import ensure_target_cache

        t0 = time.perf_counter()
        ensure_target_cache(recipe(tmp, "cache", 1, args.steps), verbose=False)
        cache_s = time.perf_counter() - t0
        table = in_memory_rows(recipe(tmp, "mem", 1, args.steps))
        threads = worker_threads()
        variants = ["plain", "ray_1w"] + ([] if args.no_2w else ["ray_2w"])
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for rep in range(args.repeats):
            order = variants[rep % len(variants):] + variants[:rep % len(variants)]
            for v in order:
                if v == "plain":
                    r = plain_loop(recipe(tmp, "plain", 1, args.steps, zero=args.zero), table, args.warmup, threads)
                else:
                    w = 1 if v == "ray_1w" else 2
                    r = ray_run(recipe(tmp, f"{v}-{rep}", w, args.steps, zero=args.zero), args.warmup)
                r["load_avg"] = os.getloadavg()[0]
                runs[v].append(r)
                print(f"[bench_pipeline] repeat {rep} {v}: {bc.fmt(r['rate'])} samples/s steady "
                      f"(wall {r['wall_s']:.1f} s, load {r['load_avg']:.1f})", flush=True)
        stats = {v: bc.spread(r["rate"] for r in runs[v]) for v in variants}
        # ratios within each repeat (side by side), then their median
        ratio_1w = bc.spread(a["rate"] / b["rate"] for a, b in zip(runs["ray_1w"], runs["plain"]))
        ratio_2w = (bc.spread(a["rate"] / b["rate"] for a, b in zip(runs["ray_2w"], runs["ray_1w"]))
                    if "ray_2w" in runs else None)
        # samples per CPU-second of the training process: the work the loop itself costs, whatever else runs
        cpu_rate = {v: bc.spread(r["rate"] / r["cpu_util"] for r in runs[v] if r.get("cpu_util")) for v in variants}
        ratio_cpu = bc.spread(a["rate"] / a["cpu_util"] / (b["rate"] / b["cpu_util"])
                              for a, b in zip(runs["ray_1w"], runs["plain"]) if a.get("cpu_util") and b.get("cpu_util"))
        rows = [[v, stats[v]["median"], stats[v]["rel_spread"], stats[v]["n"],
                 bc.spread(r.get("data_wait_frac", 0.0) for r in runs[v])["median"],
                 bc.spread(r.get("cpu_util") for r in runs[v] if r.get("cpu_util"))["median"],
                 cpu_rate[v]["median"], bc.spread(r["wall_s"] for r in runs[v])["median"]] for v in variants]
        print(bc.table(f"1. pipeline overhead (tiny student, batch {recipe(tmp, 'x', 1, 1).data.batch_size}, "
                       f"{args.steps} steps, steady after {args.warmup}, {args.repeats} repeats, torch threads {threads})",
                       ["variant", "samples/s (median)", "spread +-", "n", "data wait", "CPU util",
                        "samples/CPU-s", "wall s"], rows))
        print(f"ray_1w / plain = {bc.fmt(ratio_1w['median'])} (per-repeat {[round(x, 3) for x in ratio_1w['values']]}; "
              f"target >= 0.85: {'met' if ratio_1w['median'] >= 0.85 else 'MISSED'})")
        if ratio_cpu["n"]:
            print(f"per CPU-second of the training process: ray_1w / plain = {bc.fmt(ratio_cpu['median'])} "
                  f"(per-repeat {[round(x, 3) for x in ratio_cpu['values']]}); a CPU util under 1 is time the "
                  f"trainer waited for a core that Ray's own processes (or others) held")
        if ratio_2w:
            print(f"ray_2w / ray_1w = {bc.fmt(ratio_2w['median'])} (per-repeat {[round(x, 3) for x in ratio_2w['values']]}; "
                  f"{os.cpu_count()} cores)")
        path = bc.write_result(args.out, "bench_pipeline", {
            "args": vars(args), "teacher": TEACHER, "cache_build_s": cache_s, "worker_torch_threads": threads,
            "variants": stats, "runs": runs, "ratio_1w_over_plain": ratio_1w, "ratio_2w_over_1w": ratio_2w,
            "samples_per_cpu_s": cpu_rate, "ratio_1w_over_plain_per_cpu_s": ratio_cpu,
            "target_ratio": 0.85, "target_met": bool(ratio_1w["median"] >= 0.85),
        })
        print(f"wrote {path}")
        return 0
    finally:
        if started:
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
