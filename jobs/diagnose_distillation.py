"""Why distillation plateaus, measured from the demo's shards and target cache (no training): issue 16, item 2.

    python jobs/diagnose_distillation.py --out demo_out [--export demo_out/runs/demo/.../export] [--max-views 400]

A first version, written from a reading of the code; run once on a real `make demo` output (about 10 s), where
its constant-prediction baselines matched the logged per-teacher losses (figures in the stop-13 closing note).

Per teacher (targets LN'd exactly as module.py:168-169 does):
  mean_frac        ||mu||^2 / E||t||^2 of the global mean token (what a constant prediction can explain)
  const_loss       1 - cos(t, mu), token-weighted like masked_mean: the 'predict one vector' baseline
  record_loss      1 - cos(t, mean of its own record): perfect record-level, no temporal detail
  interp_loss      best loss reachable when the prediction is a linear interpolation of the K covered student
                   tokens (align.py), K = ceil(coverage * N): projection of the targets onto that span (+ bias)
  *_std            the same after per-dimension standardisation with corpus statistics instead of per-token LN
  erank            effective rank of centred tokens / of per-record mean targets
and per domain; with --export: student token/pooled effective rank (distilled vs random init) and the ridge
R^2 from student pooled features to each teacher's pooled targets (train/test split of views by hash).
Compare const_loss(fracast) + const_loss(crepe) with the 'loss' column of metrics.jsonl (~0.6).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os

import numpy as np

from step_dist.signals.shards import iter_rows


def erank(x: np.ndarray) -> float:
    if len(x) < 2:
        return float("nan")
    s = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    p = s / max(s.sum(), 1e-30)
    return float(np.exp(-(p * np.log(p + 1e-30)).sum()))


def cos_loss(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    return 1 - (t * p).sum(-1) / (np.linalg.norm(t, axis=-1) * np.linalg.norm(p, axis=-1) + 1e-6)


def layer_norm(t: np.ndarray) -> np.ndarray:
    t = t.astype(np.float64)
    return (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-5)


def interp_basis(k: int, t: int) -> np.ndarray:
    """[t, k]: the weights resample_tokens (align.py:15-44) gives k real student tokens for t targets."""
    import torch

    from step_dist.distill.align import resample_tokens

    eye = torch.eye(k, dtype=torch.float64)[None]
    return resample_tokens(eye, torch.ones(1, k, dtype=torch.bool), torch.tensor([t]))[0].numpy()


def load_views(out: str, max_length: int):
    from step_dist.data.views import ViewConfig, view_window

    vcfg = ViewConfig(max_length=max_length, min_length=32)
    meta = {}
    for row in iter_rows(os.path.join(out, "data", "pretrain"), columns=["id", "domain", "sampling_rate_hz", "length", "n_channels"]):
        v = view_window(row["id"], int(row["length"]), vcfg, 0)
        meta[(row["id"], v.view_id)] = dict(domain=row["domain"], rate=float(row["sampling_rate_hz"]), length=v.length,
                                            channels=int(row["n_channels"]), start=v.start)
    return meta


def load_cache(out: str):
    from step_dist.teachers.cache import complete_runs, decode_target, load_targets

    got = {}
    for run_uri, man in complete_runs(os.path.join(out, "targets")):  # newest first
        for t in man["teachers"]:
            if t["name"] not in got:
                raw = load_targets(run_uri, man, t["fingerprint"])
                got[t["name"]] = {k: decode_target(*v) for k, v in raw.items()}
    return got


def student_tokens_n(lengths: np.ndarray, export: str | None) -> np.ndarray:
    import torch

    from step_dist.model import STEPEncoder, StudentConfig

    enc = STEPEncoder.from_pretrained(export) if export else STEPEncoder(StudentConfig.named("tiny"))
    with torch.no_grad():
        return enc.patching.plan(torch.as_tensor(lengths)).n_tokens.numpy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="demo_out")
    ap.add_argument("--export", default="")
    ap.add_argument("--max-length", type=int, default=4096)
    ap.add_argument("--max-views", type=int, default=400, help="views run through the student (--export)")
    ap.add_argument("--metrics", default="", help="metrics.jsonl (default: found under --out)")
    ap.add_argument("--json-dir", default="bench_results", help="where diagnose_distillation.json goes")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    from step_dist.distill.module import HeadConfig

    meta = load_views(a.out, a.max_length)
    cache = load_cache(a.out)
    ctx = {"fracast": (0.0, 1024), "crepe": (16000.0, 16000)}  # demo.yaml; rate 0 = rate-free
    keys_all = sorted(set.intersection(*[set(v) for v in cache.values()]) & set(meta))
    lengths = np.array([meta[k]["length"] for k in keys_all])
    n_student = dict(zip(keys_all, student_tokens_n(lengths, a.export or None)))
    print(f"{len(keys_all)} views in cache and shards; view length p5/50/95 = "
          f"{np.percentile(lengths, [5, 50, 95]).round().tolist()}; rates: "
          f"{sorted({round(meta[k]['rate'], 3) for k in keys_all})[:20]}")
    report = {}
    for name, tg in cache.items():
        rate, context = ctx.get(name, (0.0, 0))
        head = HeadConfig(name=name, dim=1, teacher_rate_hz=rate, teacher_context=context, teacher_crops=True)
        keys = [k for k in keys_all if tg[k].shape[0] > 0]
        raw = np.concatenate([tg[k] for k in keys])
        mu_d, sd_d = raw.mean(0), raw.std(0) + 1e-6
        rows = []
        for k in keys:
            z_ln = layer_norm(tg[k])
            z_sd = (tg[k] - mu_d) / sd_d
            cov = head.coverage(meta[k]["length"], meta[k]["rate"])
            kk = max(1, math.ceil(cov * n_student[k] - 1e-6))
            kk = min(kk, int(n_student[k]))
            b = np.concatenate([interp_basis(kk, len(z_ln)), np.ones((len(z_ln), 1))], 1)
            rows.append(dict(key=k, dom=meta[k]["domain"], T=len(z_ln), K=kk, ln=z_ln, sd=z_sd, basis=b))
        out = {}
        for tag in ("ln", "sd"):
            z = np.concatenate([r[tag] for r in rows])
            mu = z.mean(0)
            const = cos_loss(z, mu[None])
            rec = np.concatenate([cos_loss(r[tag], r[tag].mean(0, keepdims=True)) for r in rows])
            interp = np.concatenate([cos_loss(r[tag], r["basis"] @ np.linalg.lstsq(r["basis"], r[tag], rcond=None)[0])
                                     for r in rows])
            out[tag] = dict(mean_frac=float((mu ** 2).sum() / (z ** 2).sum(1).mean()), const_loss=float(const.mean()),
                            record_loss=float(rec.mean()), interp_loss=float(interp.mean()),
                            erank_tokens=erank(z), erank_pooled=erank(np.stack([r[tag].mean(0) for r in rows])))
            dom = {}
            off = 0
            for r in rows:
                d = dom.setdefault(r["dom"], {"tokens": 0, "const": 0.0, "interp_K": []})
                d["tokens"] += r["T"]
                d["const"] += float(const[off: off + r["T"]].sum())
                d["interp_K"].append(r["K"])
                off += r["T"]
            out[tag]["by_domain"] = {k: dict(token_share=round(v["tokens"] / len(z), 3),
                                             const_loss=round(v["const"] / v["tokens"], 3),
                                             student_tokens_covered_median=float(np.median(v["interp_K"])),
                                             views=len(v["interp_K"]))
                                     for k, v in dom.items()}
        out["T_over_K_median"] = float(np.median([r["T"] / r["K"] for r in rows]))
        report[name] = out
        print(f"\n== {name}: dim {raw.shape[1]}, {len(rows)} views, {len(raw)} tokens, T/K median {out['T_over_K_median']:.1f}")
        for tag in ("ln", "sd"):
            o = out[tag]
            print(f"  [{tag}] mean_frac {o['mean_frac']:.3f} const_loss {o['const_loss']:.3f} record_loss "
                  f"{o['record_loss']:.3f} interp_loss {o['interp_loss']:.3f} erank tokens {o['erank_tokens']:.1f} "
                  f"pooled {o['erank_pooled']:.1f}")
        for d, v in sorted(report[name]["ln"]["by_domain"].items()):
            print(f"    {d:28s} {v}")
    mpath = a.metrics or next((os.path.join(d, "metrics.jsonl") for d, _, files in sorted(os.walk(os.path.join(a.out, "runs")))
                               if "metrics.jsonl" in files), "")
    if mpath:
        m = [json.loads(x) for x in open(mpath) if x.strip()]
        cols = sorted(k for k in m[0] if k.startswith("loss"))
        print(f"\nmetrics {mpath}: " + "; ".join(f"{c} step20-150 mean {np.mean([r[c] for r in m if r['step'] >= 20]):.3f}"
                                               for c in cols))
        gn = np.array([r.get("grad_norm", np.nan) for r in m])
        print(f"grad_norm median {np.nanmedian(gn):.2f}, clipped (>1) {np.mean(gn > 1):.0%} of steps")
    if a.export:
        student_report(a, meta, cache, keys_all)
    os.makedirs(a.json_dir, exist_ok=True)
    with open(os.path.join(a.json_dir, "diagnose_distillation.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    print(f"wrote {os.path.join(a.json_dir, 'diagnose_distillation.json')}")


def student_report(a, meta, cache, keys_all) -> None:
    """Effective rank of student tokens/pooled and ridge R^2 to teacher pooled targets: distilled vs random."""
    import torch
    from sklearn.linear_model import RidgeCV

    from step_dist.model import STEPEncoder, StudentConfig

    rng = np.random.default_rng(0)
    keys = [keys_all[i] for i in sorted(rng.choice(len(keys_all), min(a.max_views, len(keys_all)), replace=False))]
    values = []
    want = {k[0]: k for k in keys}
    for row in iter_rows(os.path.join(a.out, "data", "pretrain"), columns=["id", "values", "n_channels", "length", "sampling_rate_hz"]):
        if row["id"] in want:
            m = meta[want[row["id"]]]
            x = np.frombuffer(row["values"], "<f4").reshape(row["n_channels"], row["length"])[:, m["start"]: m["start"] + m["length"]]
            values.append((want[row["id"]], x, row["sampling_rate_hz"]))
    values.sort(key=lambda t: keys.index(t[0]))
    split = np.array([int(hashlib.sha256(k[0].encode()).hexdigest(), 16) % 4 != 0 for k, _, _ in values])
    for label, enc in (("distilled", STEPEncoder.from_pretrained(a.export)),
                       ("random", (torch.manual_seed(0), STEPEncoder(StudentConfig.named("tiny")))[1])):
        pooled, toks = enc.encode([x for _, x, _ in values], [r for _, _, r in values], return_tokens=True)
        print(f"\n[{label}] erank pooled {erank(pooled):.1f}, tokens {erank(np.concatenate(toks)):.1f}")
        for name, tg in cache.items():
            y = np.stack([layer_norm(tg[k]).mean(0) if len(tg[k]) else np.zeros(tg[k].shape[1]) for k, _, _ in values])
            r = RidgeCV(alphas=np.logspace(-3, 3, 13)).fit(pooled[split], y[split])
            print(f"  ridge R^2 pooled student -> pooled LN'd {name}: {r.score(pooled[~split], y[~split]):.3f}")


if __name__ == "__main__":
    main()
