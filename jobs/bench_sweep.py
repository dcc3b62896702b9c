"""Benchmark 3, sweeps: wall time of an N-trial sweep with one shared target cache against teachers per trial.

    python jobs/bench_sweep.py [--trials 3] [--steps 12] [--records 64] [--repeats 1] [--out bench_results]

The Ray Tune driver (step_dist/tune/) is not used here: the sweep is emulated as N sequential tiny pretraining
runs on one local Ray, each with its own learning rate (what a grid over lr would run), in two variants:
  * shared_cache: a fresh target cache is built once (its time included), then every trial reads it
                  (targets.mode=cache);
  * online:       every trial runs its own teacher pool (targets.mode=online).
Trials run one after another in both variants (max_concurrent_trials=1 on a 2-core machine), so the difference
is the teacher work a cache saves: (N - 1) x the teacher pass, plus pool start-up per trial.

The teacher is CREPE full (22M parameters, 2,048-sample context) by default: like the real teachers on GPU it
costs more per record than the student's step, which is when a cache pays (``--teacher crepe_tiny`` shows the
opposite case: a teacher cheaper than the trainer streams alongside it at no cost, and the cache's build is
pure overhead on 2 cores).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402
import bench_pipeline as bp  # noqa: E402


TEACHERS = {
    "crepe_full": {"name": "crepe", "model": {"kind": "crepe", "checkpoint": "builtin", "variant": "full",
                                              "max_context": 2048},
                   "weight": 1.0, "loss": "cosine", "pool": {"size": 1, "num_cpus": 1, "batch_size": 16}},
    "crepe_tiny": bp.TEACHER,
}


def sweep(tmp: str, variant: str, trials: int, steps: int, rep: int, teacher: dict) -> dict:
    from step_dist.train import pretrain

    cache = f"{tmp}/targets-{variant}-{rep}"  # fresh per sweep: the shared cache's build is part of its cost
    t0 = time.perf_counter()
    trial_s = []
    for i in range(trials):
        lr = 1e-3 * (0.5 ** i)
        cfg = bp.recipe(tmp, f"{variant}-{rep}-t{i}", 1, steps, mode="cache" if variant == "shared_cache" else "online",
                        teacher=teacher, **{"optim.lr": lr, "targets.cache": cache})
        t1 = time.perf_counter()
        pretrain(cfg, verbose=False)
        trial_s.append(time.perf_counter() - t1)
    return {"wall_s": time.perf_counter() - t0, "trial_s": trial_s}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--records", type=int, default=64)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--teacher", choices=sorted(TEACHERS), default="crepe_full")
    p.add_argument("--out", default="bench_results")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.trials, args.steps, args.records, args.repeats, args.teacher = 1, 2, 16, 1, "crepe_tiny"
    teacher = TEACHERS[args.teacher]
    ray, started = bc.ensure_ray()
    tmp = tempfile.mkdtemp(prefix="bench-sweep-")
    try:
        bc.write_shards(f"{tmp}/shards", args.records, seed=2, max_len=2048)
        runs: dict[str, list[dict]] = {"shared_cache": [], "online": []}
        for rep in range(args.repeats):
            for v in (("shared_cache", "online") if rep % 2 == 0 else ("online", "shared_cache")):
                r = sweep(tmp, v, args.trials, args.steps, rep, teacher)
                r["load_avg"] = os.getloadavg()[0]
                runs[v].append(r)
                print(f"[bench_sweep] repeat {rep} {v}: {r['wall_s']:.1f} s for {args.trials} trials "
                      f"(per trial {[round(x, 1) for x in r['trial_s']]}; load {r['load_avg']:.1f})", flush=True)
        walls = {v: bc.spread(r["wall_s"] for r in rs) for v, rs in runs.items()}
        ratio = bc.spread(o["wall_s"] / c["wall_s"] for o, c in zip(runs["online"], runs["shared_cache"]))
        print(bc.table(f"3. {args.trials}-trial sweep, {args.steps} steps per trial, 1 worker, teacher {args.teacher} "
                       "(emulated: sequential pretrain() runs)",
                       ["variant", "sweep wall s (median)", "spread +-", "first trial s", "later trials s (mean)"],
                       [[v, walls[v]["median"], walls[v]["rel_spread"], rs[0]["trial_s"][0],
                         (sum(rs[0]["trial_s"][1:]) / max(len(rs[0]["trial_s"]) - 1, 1)) if len(rs[0]["trial_s"]) > 1 else None]
                        for v, rs in runs.items()]))
        print(f"online / shared_cache wall time = {bc.fmt(ratio['median'])}")
        path = bc.write_result(args.out, "bench_sweep", {
            "args": vars(args), "teacher": teacher,
            "method": "N sequential step_dist.train.pretrain runs (Ray Tune driver not used)",
            "variants": walls, "runs": runs, "ratio_online_over_cache": ratio,
        })
        print(f"wrote {path}")
        return 0
    finally:
        if started:
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
