"""Distillation ablations in one process, fast enough to compare many settings on 2 CPU cores (issue 16).

    python jobs/distill_lab.py --data demo_out/data --out lab_out --variants jobs/configs/lab/issue16_v2.json \
        [--only random,L-std] [--teachers mean,mean+std,channels]

A variants file maps a name to a spec: steps, batch, lr, weight_decay, shuffle, size/student (StudentConfig),
view (ViewConfig), teacher_set ("gate": CREPE only on records >= 2 kHz), head / heads.<teacher> (HeadConfig
fields), teachers_used, pooling ("all": mean, mean+std and channels). The files behind issue 16's ablation
tables are in jobs/configs/lab/ (v4 ran on a corpus with aeon's other bundled sets added, since reverted).

What it shares with `step-dist pretrain`: the student (STEPEncoder), the distillation module and its losses
(distill/module.py), the teachers (built with build_teacher from the demo recipe's entries, targets of each
view computed once and kept under --out), the optimiser and the schedule. What it leaves out: Ray, DeepSpeed,
the shards' streaming. It trains one student per variant on the demo's unlabelled corpus and scores it on the
*training splits* of the labelled tasks only (stratified k-fold frozen linear probe): the test splits are for
`make demo`'s report and are never looked at here, so nothing is chosen on them.

Prints a table (variant x task, macro-F1 %, validation distillation loss per teacher, effective ranks) and
writes lab_out/distill_lab.json. Per task it also measures what transfers (on the training split only):
- ``task_loss``: the fracast distillation loss of the trained student on the task's records, next to the
  corpus validation loss (a domain gap shows as a task loss far above the corpus one);
- ``pc_r2``: how much of each principal direction of fracast's tokens on the task a ridge map from the
  student's tokens recovers, averaged over directions 1-5, 6-15 and 16+ (a student that learnt only its
  teacher's largest directions shows high, low, ~0);
- ``layers``: the probe on the mean+std of the token projection (``proj``), of the first block (``block1``),
  of the final output (``final``), and of all three side by side (``all``).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import time

import numpy as np


# -- views and targets ----------------------------------------------------------------------------------------
def load_corpus(data_dir: str) -> list[dict]:
    from step_dist.signals.shards import iter_rows

    recs = []
    for row in iter_rows(os.path.join(data_dir, "pretrain")):
        c, n = int(row["n_channels"]), int(row["length"])
        recs.append(dict(id=row["id"], domain=row["domain"], rate=float(row["sampling_rate_hz"]),
                         values=np.frombuffer(row["values"], dtype="<f4").reshape(c, n)))
    return recs


def make_views(recs: list[dict], view_cfg) -> list[dict]:
    from step_dist.data.views import crop, views_of

    out = []
    for r in recs:
        for v in views_of(r["id"], r["values"].shape[1], view_cfg):
            out.append(dict(id=r["id"], view_id=v.view_id, domain=r["domain"], rate=r["rate"],
                            values=np.ascontiguousarray(crop(r["values"], v))))
    return out


def teacher_targets(views: list[dict], entry: dict, cache_dir: str) -> list[np.ndarray]:
    """[T_i, D] per view for one teacher entry (a demo recipe's `model:` mapping), cached by content."""
    from step_dist.teachers import TeacherConfig, TeacherInputError, build_teacher

    key = hashlib.sha256(json.dumps([entry, [(v["id"], v["view_id"]) for v in views]], sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"targets_{entry['name']}_{key}.npz")
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as z:
            return [z[f"t{i}"] for i in range(len(views))]
    entry = dict(entry)
    min_rate = float(entry.pop("min_rate_hz", 0.0))  # views below it get no target (HeadConfig.min_rate_hz)
    teacher = build_teacher(TeacherConfig(**entry))
    out: list[np.ndarray] = []
    t0 = time.time()
    for s in range(0, len(views), 16):
        chunk = views[s : s + 16]
        ok, prepared = [], []
        for i, v in enumerate(chunk):
            if min_rate and v["rate"] < min_rate:
                continue
            try:
                prepared.append(teacher.prepare(v["values"], v["rate"]))
                ok.append(i)
            except TeacherInputError:
                pass
        got = dict(zip(ok, teacher.embed(prepared))) if prepared else {}
        for i in range(len(chunk)):
            out.append(np.asarray(got.get(i, np.zeros((0, teacher.dim))), dtype=np.float32))
        print(f"  {entry['name']}: {len(out)}/{len(views)} views ({time.time() - t0:.0f} s)", flush=True)
    os.makedirs(cache_dir, exist_ok=True)
    np.savez(path, **{f"t{i}": t for i, t in enumerate(out)})
    return out


# -- training ------------------------------------------------------------------------------------------------
def run_variant(name: str, spec: dict, views, targets, heads_base, tasks, seed: int, val_ids: set) -> dict:
    import torch

    from step_dist.data.batches import collate
    from step_dist.distill.module import DistillationModule
    from step_dist.model import STEPEncoder, StudentConfig
    from step_dist.train.schedule import lr_factor

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    used = spec.get("teachers_used") or [h.name for h in heads_base]  # one teacher alone vs all of them
    heads = [dataclasses.replace(h, **{**spec.get("head", {}), **spec.get("heads", {}).get(h.name, {})})
             for h in heads_base if h.name in used]
    student = STEPEncoder(StudentConfig.named(spec.get("size", "tiny"), **spec.get("student", {})))
    module = DistillationModule(student, heads, **spec.get("module", {}))
    steps, bs = int(spec.get("steps", 150)), int(spec.get("batch", 16))
    wd = float(spec.get("weight_decay", 0.05))
    if spec.get("decay_matrices_only"):
        decay = [p for n, p in module.named_parameters() if p.ndim >= 2 and "patching" not in n]
        other = [p for n, p in module.named_parameters() if not (p.ndim >= 2 and "patching" not in n)]
        groups = [{"params": decay, "weight_decay": wd}, {"params": other, "weight_decay": 0.0}]
    else:
        groups = [{"params": list(module.parameters()), "weight_decay": wd}]
    opt = torch.optim.AdamW(groups, lr=float(spec.get("lr", 2e-3)), betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 20, steps, 0.1))
    train_idx = [i for i, v in enumerate(views) if v["id"] not in val_ids]
    val_idx = [i for i, v in enumerate(views) if v["id"] in val_ids]
    names = [h.name for h in heads]

    def rows(idx):
        out = []
        for i in idx:
            v = views[i]
            r = {"id": v["id"], "view_id": v["view_id"], "n_channels": v["values"].shape[0], "length": v["values"].shape[1],
                 "sampling_rate_hz": v["rate"], "values": v["values"].astype("<f4").tobytes()}
            for n in names:
                t = targets[n][i]
                r.update({f"t_{n}": t.astype("<f4").tobytes(), f"t_{n}_tokens": t.shape[0], f"t_{n}_dim": t.shape[1]})
            out.append(r)
        return out

    def batches_for_epoch():
        order = list(train_idx)
        if spec.get("shuffle", True):
            rng.shuffle(order)
        # the trainer's bucketing: chunks of 64 rows sorted by length, cut into batches
        for s in range(0, len(order), 64):
            chunk = sorted(order[s : s + 64], key=lambda i: views[i]["values"].shape[1])
            bl = [chunk[k : k + bs] for k in range(0, len(chunk) - bs + 1, bs)]
            if spec.get("shuffle", True):
                rng.shuffle(bl)
            yield from bl

    hb = {h.name: h for h in heads}
    t0, step, curve = time.time(), 0, []
    module.train()
    while step < steps:
        for b in batches_for_epoch():
            if step >= steps:
                break
            batch = collate(rows(b), names, hb)
            terms = module(batch)
            opt.zero_grad()
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 25 == 0 or step == steps:
                curve.append({"step": step, **{k: float(v) for k, v in terms.items() if k.startswith("loss")}})
    train_s = time.time() - t0
    module.eval()
    from step_dist.train.validation import Spectrum

    spec_tok, spec_pool = Spectrum(student.config.d_model, torch.device("cpu")), Spectrum(student.config.d_model, torch.device("cpu"))
    with torch.no_grad():
        val = {n: [] for n in names}
        for s in range(0, len(val_idx), bs):
            batch = collate(rows(sorted(val_idx[s : s + bs], key=lambda i: views[i]["values"].shape[1])), names, hb)
            terms = module(batch)
            for n in names:
                # weighted by the batch's target tokens: a batch without this teacher's targets (loss 0) must
                # not pull its mean down, as it did before (CREPE's held-out loss read 0.25 instead of ~1.0)
                tokens = float(terms[f"tokens/{n}"])
                val[n].append((float(terms[f"loss/{n}"]) * tokens, tokens))
            out = student(batch.values, batch.lengths, batch.channel_mask, batch.sampling_rate_hz)
            spec_tok.add(out.tokens[out.token_mask])
            spec_pool.add(out.pooled)
    res = {"variant": name, "spec": spec, "train_s": train_s, "curve": curve,
           "val_loss": {n: sum(a for a, _ in v) / max(sum(t for _, t in v), 1.0) for n, v in val.items()},
           "val_erank": {"tokens": spec_tok.erank(), "pooled": spec_pool.erank()}}
    res["tasks"] = {t.name: score_task(student, t, spec.get("pooling", "mean"), seed) for t in tasks}
    if "fracast" in hb and TASK_TARGETS:
        res["transfer"] = {t.name: transfer_measures(module, hb, t) for t in tasks}
    res["layers"] = {t.name: layer_probes(student, t, seed) for t in tasks}
    return res


# -- what transfers to the tasks' records (training splits only) -----------------------------------------
TASK_TARGETS: dict = {}  # task name -> fracast's tokens [T_i, 64] on each training record


def transfer_measures(module, heads: dict, task) -> dict:
    import torch
    from sklearn.linear_model import Ridge

    from step_dist.data.batches import collate
    from step_dist.distill.align import count_mask, pool_tokens_to, resample_tokens

    names = list(heads)
    split, targets = task.train, TASK_TARGETS[task.name]
    losses, student_tok, teacher_tok = [], [], []
    with torch.no_grad():
        for s in range(0, len(split), 16):
            rows = []
            for i in range(s, min(s + 16, len(split))):
                v = np.asarray(split.values[i], dtype="<f4")
                rate = float(split.rates[i]) if split.rates[i] else float("nan")
                r = {"id": str(i), "view_id": 0, "n_channels": v.shape[0], "length": v.shape[1],
                     "sampling_rate_hz": rate, "values": v.tobytes()}
                for n in names:  # only fracast is measured here: the others carry no target
                    t = targets[i] if n == "fracast" else np.zeros((0, 1), np.float32)
                    r.update({f"t_{n}": t.astype("<f4").tobytes(), f"t_{n}_tokens": t.shape[0], f"t_{n}_dim": t.shape[1]})
                rows.append(r)
            batch = collate(rows, names, heads)
            losses.append(float(module(batch)["loss/fracast"]))
            out = module.student(batch.values, batch.lengths, batch.channel_mask, batch.sampling_rate_hz)
            counts = batch.target_counts["fracast"]
            align = pool_tokens_to if heads["fracast"].align == "pool" else resample_tokens
            tok = align(out.tokens, out.token_mask, counts)
            mask = count_mask(counts, tok.shape[1])
            student_tok.append(tok[mask].numpy())
            teacher_tok.append(batch.targets["fracast"][:, : tok.shape[1]][mask].numpy())
    x, y = np.concatenate(student_tok), np.concatenate(teacher_tok).astype(np.float64)
    y = (y - y.mean(0)) / (y.std(0) + 1e-6)
    _, vec = np.linalg.eigh(np.cov(y.T))
    pcs = y @ vec[:, ::-1]
    order = np.random.default_rng(0).permutation(len(x))
    halves = (order[: len(x) // 2], order[len(x) // 2 :])
    r2 = []
    for fit, test in (halves, halves[::-1]):
        pred = Ridge(alpha=1.0).fit(x[fit], pcs[fit]).predict(x[test])
        r2.append(1 - ((pred - pcs[test]) ** 2).sum(0) / ((pcs[test] - pcs[test].mean(0)) ** 2).sum(0))
    r2 = np.mean(r2, axis=0)
    return {"task_loss": float(np.mean(losses)),
            "pc_r2": {"1-5": float(r2[:5].mean()), "6-15": float(r2[5:15].mean()), "16+": float(r2[15:].mean())}}


def layer_features(student, split) -> dict[str, np.ndarray]:
    """mean+std pooled features of the token projection, the first block and the final output."""
    import torch

    from step_dist.model.batching import collate
    from step_dist.model.pooling import pool_tokens

    seen: dict = {}
    hooks = [student.token_proj.register_forward_hook(lambda m, i, o: seen.__setitem__("proj", o)),
             student.blocks[0].register_forward_hook(lambda m, i, o: seen.__setitem__("block1", o))]
    parts: dict[str, list] = {"proj": [None] * len(split), "block1": [None] * len(split), "final": [None] * len(split)}
    order = sorted(range(len(split)), key=lambda i: split.values[i].shape[1])
    student.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(order), 16):
                idx = order[s : s + 16]
                vals, lens, cmask = collate([np.array(split.values[i], dtype=np.float32) for i in idx])
                rate = torch.tensor([float(split.rates[i]) if split.rates[i] else float("nan") for i in idx])
                out = student(vals, lens, cmask, rate)
                feats = {"final": pool_tokens(out.tokens, out.token_mask, "mean+std")}
                for k in ("proj", "block1"):  # [B, C, N, D]: mean over real channels, as the output is
                    x = seen[k] * cmask[:, :, None, None]
                    tokens = x.sum(1) / cmask.sum(1).clamp_min(1)[:, None, None]
                    feats[k] = pool_tokens(tokens, out.token_mask, "mean+std")
                for k, f in feats.items():
                    for j, i in enumerate(idx):
                        parts[k][i] = f[j].numpy()
    finally:
        for h in hooks:
            h.remove()
    return {k: np.stack(v) for k, v in parts.items()}


def layer_probes(student, task, seed: int) -> dict:
    feats = layer_features(student, task.train)
    y = task.train.y(task.classes)
    out = {k: cv_f1(f, y, seed) for k, f in feats.items()}
    out["all"] = cv_f1(np.concatenate([feats["proj"], feats["block1"], feats["final"]], axis=1), y, seed)
    return out


# -- scoring on training splits only -------------------------------------------------------------------------
def student_feats(student, split, pooling: str) -> np.ndarray:
    import torch

    from step_dist.evaluate.features import student_features

    with torch.no_grad():
        return student_features(student, split, 16, pooling=pooling)


def teacher_scores(entries: list[dict], tasks, poolings: list[str], seed: int) -> dict:
    """The eval recipe's teachers' frozen features on the same folds (the bar the student is held to)."""
    from step_dist.evaluate.features import effective_pooling, teacher_features
    from step_dist.teachers import TeacherConfig, build_teacher

    out = {}
    for e in entries:
        teacher = build_teacher(TeacherConfig(**e))
        for pooling in poolings:
            res = {}
            for t in tasks:
                x, _ = teacher_features(teacher, t.train, 8, effective_pooling(pooling, t.train))
                res[t.name] = cv_f1(x, t.train.y(t.classes), seed)
            out[f"teacher-{e['name']}:{pooling}"] = res
            print(f"teacher-{e['name']}:{pooling} {res}", flush=True)
    return out


def cv_f1(x: np.ndarray, y: np.ndarray, seed: int, folds: int = 5) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = min(folds, int(np.bincount(y).min()))
    f1 = []
    for tr, va in StratifiedKFold(max(2, k), shuffle=True, random_state=seed).split(x, y):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
        clf.fit(x[tr], y[tr])
        f1.append(f1_score(y[va], clf.predict(x[va]), average="macro", labels=np.unique(y), zero_division=0))
    return 100 * float(np.mean(f1))


TEACHER_FEATS: dict = {}


def cv_r2(x: np.ndarray, y: np.ndarray, seed: int, folds: int = 5) -> float:
    """Teacher recovery on the training split: ridge R^2 (evaluate/recovery.py) averaged over k folds."""
    from sklearn.model_selection import KFold

    from step_dist.evaluate.recovery import ridge_r2

    return float(np.mean([ridge_r2(x[tr], y[tr], x[va], y[va])
                          for tr, va in KFold(folds, shuffle=True, random_state=seed).split(x)]))


def score_task(student, task, pooling: str, seed: int) -> dict:
    from step_dist.evaluate.features import effective_pooling

    poolings = [pooling] if pooling != "all" else ["mean", "mean+std", "channels"]
    out = {}
    for p in poolings:
        x = student_feats(student, task.train, effective_pooling(p, task.train))
        out[p] = cv_f1(x, task.train.y(task.classes), seed)
        if task.name in TEACHER_FEATS:
            out[f"r2:{p}"] = cv_r2(x, TEACHER_FEATS[task.name], seed)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="demo_out/data")
    ap.add_argument("--out", default="lab_out")
    ap.add_argument("--variants", required=True, help="a JSON file: {name: spec} (see VARIANTS in the note)")
    ap.add_argument("--only", default="", help="comma list of variant names to run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--teachers", default="", help="also score the eval recipe's teachers with these poolings (comma list)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    from step_dist.data.views import ViewConfig
    from step_dist.distill.module import HeadConfig
    from step_dist.evaluate.tasks import load_task

    with open(a.variants) as f:
        variants = json.load(f)
    if a.only:
        variants = {k: v for k, v in variants.items() if k in a.only.split(",")}
    recs = load_corpus(a.data)
    tasks = [load_task(os.path.join(a.data, "tasks", n)) for n in sorted(os.listdir(os.path.join(a.data, "tasks")))]
    # a held-out slice of the corpus by record id hash (10%): validation distillation loss
    val_ids = {r["id"] for r in recs if int(hashlib.sha256(r["id"].encode()).hexdigest()[:8], 16) % 10 == 0}
    results = []
    baselines = {}
    if a.teachers:
        from step_dist.config import load
        from step_dist.evaluate.config import EvaluateConfig

        ecfg = load(EvaluateConfig, os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "eval-demo.yaml"))
        baselines = teacher_scores(ecfg.teachers, tasks, a.teachers.split(","), a.seed)
    from step_dist.evaluate.features import teacher_features
    from step_dist.teachers import TeacherConfig, build_teacher

    fracast = build_teacher(TeacherConfig(name="fracast", kind="fracast", checkpoint="builtin", max_context=1024, channel_mode="mean"))
    for t in tasks:  # the teacher's pooled features each student is scored against (recovery R^2)
        TEACHER_FEATS[t.name] = teacher_features(fracast, t.train, 16, "mean")[0]
        task_views = [dict(id=f"{t.name}:{i}", view_id=0, rate=float(t.train.rates[i]) if t.train.rates[i] else math.nan,
                           values=np.asarray(t.train.values[i], dtype=np.float32)) for i in range(len(t.train))]
        TASK_TARGETS[t.name] = teacher_targets(task_views, {"name": "fracast", "kind": "fracast", "checkpoint": "builtin",
                                                            "max_context": 1024}, a.out)
    prepared: dict[str, tuple] = {}
    for name, spec in variants.items():
        vkey = json.dumps([spec.get("view", {}), spec.get("teacher_set", "demo")], sort_keys=True)
        if vkey not in prepared:
            vcfg = ViewConfig(**{"max_length": 4096, "min_length": 32, **spec.get("view", {})})
            views = make_views(recs, vcfg)
            entries = spec.get("teacher_entries") or [
                {"name": "fracast", "kind": "fracast", "checkpoint": "builtin", "max_context": 1024},
                {"name": "crepe", "kind": "crepe", "checkpoint": "builtin", "variant": "tiny", "max_context": 16000,
                 **({"min_rate_hz": 2000.0} if spec.get("teacher_set") == "gate" else {})}]
            tg = {e["name"]: teacher_targets(views, e, a.out) for e in entries}
            heads = []
            for e in entries:
                dim = next(t.shape[1] for t in tg[e["name"]] if t.ndim == 2)
                rate = 16000.0 if e["kind"] == "crepe" else 0.0
                heads.append(HeadConfig(name=e["name"], dim=dim, min_rate_hz=float(e.get("min_rate_hz", 0.0)), teacher_rate_hz=rate, teacher_context=e["max_context"], teacher_crops=True))
            prepared[vkey] = (views, tg, heads)
        views, tg, heads = prepared[vkey]
        print(f"== {name}: {len(views)} views", flush=True)
        res = run_variant(name, spec, views, tg, heads, tasks, a.seed, val_ids)
        print(json.dumps({k: res.get(k) for k in ("variant", "train_s", "val_loss", "val_erank", "tasks", "transfer", "layers")}), flush=True)
        results.append(res)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, f"distill_lab_{int(time.time())}.json"), "w") as f:
        json.dump({"results": results, "teachers": baselines}, f, indent=1)
    task_names = [t.name for t in tasks]
    print("\n| variant | pooling | " + " | ".join(task_names) + " | mean | val loss |")
    print("|---" * (len(task_names) + 4) + "|")
    for name, res in baselines.items():
        f1 = [res[t] for t in task_names]
        print(f"| {name} | | " + " | ".join(f"{x:.1f}" for x in f1) + f" | {np.mean(f1):.1f} | |")
    for r in results:
        vl = " ".join(f"{k}={v:.3f}" for k, v in r["val_loss"].items())
        vl += " erank tok={tokens:.1f} pool={pooled:.1f}".format(**r["val_erank"])
        for p in [k for k in r["tasks"][task_names[0]] if not k.startswith("r2:")]:
            f1 = [r["tasks"][t][p] for t in task_names]
            r2 = [r["tasks"][t].get(f"r2:{p}", float("nan")) for t in task_names]
            print(f"| {r['variant']} | {p} | " + " | ".join(f"{x:.1f} (R2 {y:.2f})" for x, y in zip(f1, r2))
                  + f" | {np.mean(f1):.1f} | {vl} |")

    print("\n| variant | layer | " + " | ".join(task_names) + " | mean |")
    print("|---" * (len(task_names) + 3) + "|")
    for r in results:
        for layer in ("proj", "block1", "final", "all"):
            f1 = [r["layers"][t][layer] for t in task_names]
            print(f"| {r['variant']} | {layer} | " + " | ".join(f"{x:.1f}" for x in f1) + f" | {np.mean(f1):.1f} |")


if __name__ == "__main__":
    main()
