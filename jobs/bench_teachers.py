"""Benchmark 2, teachers: online streaming pools against cached targets, and teacher throughput per actor.

    python jobs/bench_teachers.py [--records 160] [--steps 30] [--warmup 6] [--repeats 2] [--out bench_results]

Part A, trainer side (variants interleaved, repeated): the same 1-worker step-dist run with targets.mode
online (one fixed-size CPU actor pool per teacher streaming targets) and targets.mode cache (the targets read
from a cache built once before). Reported: steady-state trainer samples/s and the fraction of trainer time
spent waiting for the next batch (data_wait_frac, from the run's per-step metrics).

Part B, teacher side, per actor: records/s and target tokens/s of each teacher,
  * direct: TeacherTargetsUDF called in this process on prepared view batches (the actor's own work), and
  * pool:   the same UDF as a Ray Data stage on a pool of one actor over the same views (what a pool delivers,
            Ray Data scheduling and serialization included), start-up separated out by timing fresh pools over
            the views and over three copies of them (see teacher_pool).
The ratio teacher records/s / trainer samples/s says how many teacher actors keep one trainer fed.
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
import bench_pipeline as bp  # noqa: E402

# the tiny recipe's teachers, with fracast's context capped like its recipe so each call stays short
TEACHERS = [
    {"name": "crepe", "kind": "crepe", "checkpoint": "builtin", "variant": "tiny", "max_context": 512},
    {"name": "fracast", "kind": "fracast", "checkpoint": "builtin", "max_context": 512},
]


def views_table(shards_uri: str, view: dict):
    import pyarrow as pa

    from step_dist.signals.record import RECORD_SCHEMA
    from step_dist.signals.shards import iter_rows
    from step_dist.teachers.stage import expand_views

    return expand_views(pa.Table.from_pylist(list(iter_rows(shards_uri)), schema=RECORD_SCHEMA), view)


def teacher_direct(tcfg: dict, views, batch: int) -> dict:
    """The UDF in this process, one warm-up batch, then every batch timed."""
    from step_dist.teachers.stage import TeacherTargetsUDF

    udf = TeacherTargetsUDF([tcfg])
    udf(views.slice(0, min(batch, views.num_rows)))  # weights loaded, first-call costs paid
    t0 = time.perf_counter()
    tokens = 0
    for i in range(0, views.num_rows, batch):
        out = udf(views.slice(i, batch))
        tokens += sum(out[f"t_{tcfg['name']}_tokens"].to_pylist())
    dt = time.perf_counter() - t0
    return {"records_per_s": views.num_rows / dt, "tokens_per_s": tokens / dt, "seconds": dt, "records": views.num_rows}


def _pool_pass(tcfg: dict, views, batch: int) -> tuple[float, int, int]:
    """One fresh pool of one actor over ``views``: (seconds from the dataset's start to its last row, rows, tokens)."""
    import ray

    from step_dist.teachers.stage import PoolConfig, teacher_stage

    ds = ray.data.from_arrow(views).repartition(max(1, views.num_rows // batch))
    ds = teacher_stage(ds, tcfg, PoolConfig(size=1, num_cpus=1, batch_size=batch))
    name = tcfg["name"]
    t0 = time.perf_counter()
    n = tokens = 0
    for b in ds.iter_batches(batch_size=batch, batch_format="pyarrow"):
        n += b.num_rows
        tokens += sum(b[f"t_{name}_tokens"].to_pylist())
    return time.perf_counter() - t0, n, tokens


def teacher_pool(tcfg: dict, views, batch: int, scale: int = 3) -> dict:
    """What a Ray Data pool of one actor delivers, Ray Data scheduling and serialization included.

    Two passes through fresh pools, over the views and over ``scale`` copies of them: both pay the same actor
    start-up (process, imports, weights), so the extra records over the extra seconds is the streaming rate with
    start-up removed, and the start-up is what is left of the short pass. (Timing from the first output batch
    instead overstates the rate: Ray Data has processed and buffered several batches by then.)"""
    import pyarrow as pa

    t1, n1, tok1 = _pool_pass(tcfg, views, batch)
    t3, n3, tok3 = _pool_pass(tcfg, pa.concat_tables([views] * scale), batch)
    rate = (n3 - n1) / (t3 - t1) if t3 > t1 else None
    return {"records_per_s": rate, "tokens_per_s": (tok3 - tok1) / (t3 - t1) if t3 > t1 else None,
            "startup_s": max(t1 - n1 / rate, 0.0) if rate else None, "short_pass_s": t1, "long_pass_s": t3,
            "records_per_s_incl_startup": n1 / t1, "records": n1 + n3}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=160)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=6)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--teacher-records", type=int, default=48, help="views per teacher throughput measurement")
    p.add_argument("--out", default="bench_results")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.records, args.steps, args.warmup, args.repeats, args.teacher_records = 24, 4, 1, 1, 8
    ray, started = bc.ensure_ray()
    tmp = tempfile.mkdtemp(prefix="bench-teachers-")
    try:
        bc.write_shards(f"{tmp}/shards", args.records, seed=1, max_len=2048)
        from step_dist.train.trainer import ensure_target_cache

        base = bp.recipe(tmp, "cache", 1, args.steps)
        t0 = time.perf_counter()
        ensure_target_cache(base, verbose=False)
        cache_s = time.perf_counter() - t0

        # A: trainer fed online vs from the cache
        runs: dict[str, list[dict]] = {"online": [], "cache": []}
        for rep in range(args.repeats):
            for mode in (("online", "cache") if rep % 2 == 0 else ("cache", "online")):
                r = bp.ray_run(bp.recipe(tmp, f"{mode}-{rep}", 1, args.steps, mode=mode), args.warmup)
                r["load_avg"] = os.getloadavg()[0]
                runs[mode].append(r)
                print(f"[bench_teachers] repeat {rep} {mode}: {bc.fmt(r['rate'])} samples/s, "
                      f"data wait {bc.fmt(r.get('data_wait_frac'))} (load {r['load_avg']:.1f})", flush=True)
        trainer = {m: {"samples_per_s": bc.spread(r["rate"] for r in rs),
                       "data_wait_frac": bc.spread(r.get("data_wait_frac", 0.0) for r in rs)} for m, rs in runs.items()}
        print(bc.table(f"2a. trainer fed by online pools vs the target cache (1 worker, teacher {bp.TEACHER['name']}, "
                       f"{args.steps} steps, steady after {args.warmup}, {args.repeats} repeats)",
                       ["targets", "samples/s (median)", "spread +-", "data wait frac (median)"],
                       [[m, t["samples_per_s"]["median"], t["samples_per_s"]["rel_spread"], t["data_wait_frac"]["median"]]
                        for m, t in trainer.items()]))

        # B: each teacher's throughput per actor, direct and through a pool, interleaved
        view = dataclasses.asdict(base.data.view)
        views = views_table(f"{tmp}/shards", view).slice(0, args.teacher_records)
        per: dict[str, dict[str, list[dict]]] = {t["name"]: {"direct": [], "pool": []} for t in TEACHERS}
        for rep in range(args.repeats):
            for t in TEACHERS:
                per[t["name"]]["direct"].append(teacher_direct(t, views, 16))
                per[t["name"]]["pool"].append(teacher_pool(t, views, 16))
        teachers = {}
        rows = []
        cache_rate = trainer["cache"]["samples_per_s"]["median"] or 0.0
        for name, d in per.items():
            direct = bc.spread(r["records_per_s"] for r in d["direct"])
            toks = bc.spread(r["tokens_per_s"] for r in d["direct"])
            pool = bc.spread(r["records_per_s"] for r in d["pool"] if r["records_per_s"])
            startup = bc.spread(r["startup_s"] for r in d["pool"] if r["startup_s"] is not None)
            teachers[name] = {"direct_records_per_s": direct, "direct_tokens_per_s": toks, "pool_records_per_s": pool,
                              "pool_startup_s": startup, "runs": d,
                              "actors_per_trainer": cache_rate / direct["median"] if direct["median"] else None}
            rows.append([name, direct["median"], direct["rel_spread"], toks["median"], pool["median"],
                         startup["median"], teachers[name]["actors_per_trainer"]])
        print(bc.table(f"2b. teacher throughput per actor ({views.num_rows} views of <= {view['max_length']} samples, "
                       f"batch 16, {args.repeats} repeats)",
                       ["teacher", "records/s direct", "spread +-", "tokens/s direct", "records/s pool",
                        "pool start s", "actors per trainer"], rows))
        path = bc.write_result(args.out, "bench_teachers", {
            "args": vars(args), "trainer_teacher": bp.TEACHER, "cache_build_s": cache_s, "trainer": trainer,
            "trainer_runs": runs, "teachers": teachers,
        })
        print(f"wrote {path}")
        return 0
    finally:
        if started:
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
