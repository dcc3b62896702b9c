"""evaluate(): every (protocol, task, model[, seed]) run as a Ray task, then one report.

Runs: the probe is one Ray task per (task, model): features are computed once and probed per seed, except for
models whose features depend on the seed (a student at random init, MiniRocket's kernels), which are rebuilt
per seed. The fine-tune is one Ray task per (task, model, seed). A failed run is recorded with its error and
the rest of the report is still written.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from step_dist.config import from_dict, to_dict
from step_dist.evaluate.config import EvaluateConfig, TaskConfig
from step_dist.evaluate.tasks import Task, load_task

log = logging.getLogger(__name__)


@dataclass
class ModelSpec:
    name: str  # the report's column: step, step-random, step-fixed, teacher-NAME, minirocket
    kind: str  # student | teacher | minirocket
    student_config: dict[str, Any] | None = None
    pretrained: bool = False  # the student's weights come with the run (else: random init from the seed)
    teacher: dict[str, Any] = field(default_factory=dict)

    @property
    def seed_dependent(self) -> bool:
        return self.kind == "minirocket" or (self.kind == "student" and not self.pretrained)


FEATURES_KEY = "_features"


def _device(cfg: EvaluateConfig) -> str:
    import torch

    return cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")


def _build_student(spec: ModelSpec, state, seed: int, device: str):
    import torch

    from step_dist.model import STEPEncoder, StudentConfig

    torch.manual_seed(seed)  # random init (and heads) reproducible per seed
    enc = STEPEncoder(from_dict(StudentConfig, spec.student_config))
    if spec.pretrained:
        enc.load_state_dict(state)
    return enc.to(device)


def _features(task: Task, spec: ModelSpec, state, seed: int, cfg: EvaluateConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    from step_dist.evaluate import features

    pooling = features.effective_pooling(cfg.probe.pooling, task.train, task.test)
    if spec.kind == "student":
        enc = _build_student(spec, state, seed, _device(cfg)).eval()
        b = cfg.probe.batch_size
        return (features.student_features(enc, task.train, b, pooling), features.student_features(enc, task.test, b, pooling),
                {"pooling": pooling})
    if spec.kind == "teacher":
        from step_dist.teachers import TeacherConfig, build_teacher

        teacher = build_teacher(from_dict(TeacherConfig, spec.teacher, where="teachers."))
        xtr, e1 = features.teacher_features(teacher, task.train, cfg.probe.batch_size, pooling)
        xte, e2 = features.teacher_features(teacher, task.test, cfg.probe.batch_size, pooling)
        return xtr, xte, {"records_without_tokens": e1 + e2, "teacher_fingerprint": getattr(teacher, "fingerprint", ""),
                          "pooling": pooling}
    xtr, xte = features.minirocket_features(task.train, task.test, cfg.minirocket, seed)
    return xtr, xte, {}


def run_probe(task: Task, spec: ModelSpec, state, seeds: list[int], cfg: EvaluateConfig) -> list[dict]:
    """One (task, model): a result per seed."""
    from step_dist.evaluate.probe import linear_probe, ridge_probe

    y_tr, y_te, k = task.train.y(task.classes), task.test.y(task.classes), len(task.classes)
    out, cached = [], None
    for seed in seeds:
        t0 = time.perf_counter()
        if cached is None or spec.seed_dependent:
            cached = _features(task, spec, state, seed, cfg)
        xtr, xte, extra = cached
        if spec.kind == "minirocket":
            metrics = ridge_probe(xtr, y_tr, xte, y_te, k)
        else:
            metrics = linear_probe(xtr, y_tr, xte, y_te, k, seed=seed, cfg=cfg.probe)
        row = {**metrics, **extra, "seed": seed, "feature_dim": int(xtr.shape[1]), "seconds": time.perf_counter() - t0}
        if seed == seeds[0] and (spec.kind == "teacher" or spec.name in ("step", "step-random")):
            row[FEATURES_KEY] = (xtr, xte)  # for teacher recovery (evaluate/recovery.py); not kept in the report
        out.append(row)
    return out


def run_finetune(task: Task, spec: ModelSpec, state, seed: int, cfg: EvaluateConfig) -> list[dict]:
    from step_dist.evaluate.finetune import finetune

    t0 = time.perf_counter()
    enc = _build_student(spec, state, seed, _device(cfg))
    res = finetune(enc, task.train, task.test, task.classes, cfg.finetune, seed, _device(cfg))
    return [{**res, "seed": seed, "seconds": time.perf_counter() - t0}]


def model_specs(cfg: EvaluateConfig, student_config: dict, has_checkpoint: bool, fixed_config: dict | None) -> dict[str, list[ModelSpec]]:
    """Which models each protocol compares. Frozen-feature baselines (teachers, MiniRocket) exist only for the
    probe; in the fine-tune the baselines are students trained from scratch (random init, fixed patching)."""
    fixed = ModelSpec("step-fixed", "student", fixed_config, pretrained=bool(cfg.fixed_checkpoint))
    specs: dict[str, list[ModelSpec]] = {}
    for protocol in cfg.protocols:
        s = [ModelSpec("step", "student", student_config, pretrained=True)] if has_checkpoint else []
        if "random" in cfg.baselines:
            s.append(ModelSpec("step-random", "student", student_config, pretrained=False))
        if "fixed" in cfg.baselines:
            s.append(fixed)
        if protocol == "probe" and "teachers" in cfg.baselines:
            s += [ModelSpec(f"teacher-{t.get('name', t.get('kind', 'teacher'))}", "teacher", teacher=dict(t)) for t in cfg.teachers]
        if protocol == "probe" and "minirocket" in cfg.baselines:
            s.append(ModelSpec("minirocket", "minirocket"))
        specs[protocol] = s
    return specs


def evaluate(
    checkpoint: str | None,
    tasks: list[str | TaskConfig] | None = None,
    out: str | None = None,
    config: EvaluateConfig | None = None,
    student=None,
) -> dict:
    """Evaluate a student checkpoint (an export or run folder, local or s3://) on labelled tasks against the
    configured baselines; writes report.json / report.md / plots to ``out`` when given; returns the report.

    ``student`` may be an STEPEncoder already in memory instead of a checkpoint URI. Ray is started locally
    when it is not running yet (under `ray job submit` it attaches to the cluster).
    """
    import ray

    from step_dist.evaluate.report import build_report, write_report

    cfg = config or EvaluateConfig()
    if tasks:
        cfg = dataclasses.replace(cfg, tasks=[t if isinstance(t, TaskConfig) else _task_from(t, cfg) for t in tasks])
    if not cfg.tasks:
        raise ValueError("no tasks: pass --task URI (a labelled shard set) or list tasks in the config")
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    export_uri = None
    if student is None and checkpoint:
        from step_dist.evaluate.checkpoint import load_student

        student, export_uri = load_student(checkpoint)
    if student is None:
        raise ValueError("give a checkpoint (export or run folder) or a student to evaluate")
    student_config = to_dict(student.config)
    fixed_config, fixed_state = _fixed_student(cfg, student_config)
    timings["load_checkpoint_s"] = time.perf_counter() - t_start

    t0 = time.perf_counter()
    loaded = [load_task(t) for t in cfg.tasks]
    names = [t.name for t in loaded]
    if len(set(names)) != len(names):
        raise ValueError(f"task names repeat ({names}): give each task a distinct name in the config")
    timings["load_tasks_s"] = time.perf_counter() - t0

    from step_dist.ray_session import init_ray

    init_ray()
    t0 = time.perf_counter()
    state_ref = ray.put({k: v.detach().cpu() for k, v in student.state_dict().items()})
    fixed_ref = ray.put(fixed_state) if fixed_state is not None else None
    task_refs = [ray.put(t) for t in loaded]
    opts = {"num_cpus": cfg.num_cpus_per_run, "num_gpus": cfg.num_gpus_per_run}
    pending = []  # (protocol, task name, model name, ref)
    for protocol, specs in model_specs(cfg, student_config, True, fixed_config).items():
        for task, ref in zip(loaded, task_refs):
            for spec in specs:
                state = fixed_ref if spec.name == "step-fixed" else state_ref
                if protocol == "probe":
                    r = _remote_probe.options(**opts).remote(ref, spec, state, list(cfg.seeds), cfg)
                    pending.append((protocol, task.name, spec.name, None, r))
                else:
                    for seed in cfg.seeds:
                        r = _remote_finetune.options(**opts).remote(ref, spec, state, seed, cfg)
                        pending.append((protocol, task.name, spec.name, seed, r))
    results = []
    features: dict[tuple[str, str], tuple] = {}
    from step_dist.progress import Progress

    bar = Progress("evaluate", total=len(pending), unit="runs")  # a run: one model on one task (probe: all seeds)
    for protocol, task_name, model, seed, ref in pending:
        bar.update(0, f"{protocol} {task_name} / {model}")
        head = {"protocol": protocol, "task": task_name, "model": model}
        try:
            rows = ray.get(ref)
            for row in rows:
                if FEATURES_KEY in row:
                    features[(task_name, model)] = row.pop(FEATURES_KEY)
            results += [{**head, **row} for row in rows]
        except Exception as e:  # noqa: BLE001 - one failed baseline must not lose the other numbers
            cause = getattr(e, "cause", None) or e
            msg = f"{type(cause).__name__}: {cause}".strip()[:2000]
            log.error("evaluate: %s / %s / %s failed: %s", protocol, task_name, model, msg)
            seeds = [seed] if seed is not None else list(cfg.seeds)
            results += [{**head, "seed": s, "error": msg} for s in seeds]
        bar.update(1)
    bar.close()
    timings["runs_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    report = build_report(
        results, [t.summary() for t in loaded], cfg,
        checkpoint={"uri": checkpoint, "export": export_uri, "student_config": student_config}, timings=timings,
    )
    if features:
        from step_dist.evaluate.recovery import recovery_table

        report["recovery"] = recovery_table(features, report["summary"].get("probe", {}))
    if out:
        write_report(report, out)
    return report


def _task_from(uri: str, cfg: EvaluateConfig) -> TaskConfig:
    """A --task URI picks up the preparation a config gives the same URI (channels, crop)."""
    for t in cfg.tasks:
        if t.uri == uri:
            return t
    return TaskConfig(uri=uri)


def _fixed_student(cfg: EvaluateConfig, student_config: dict) -> tuple[dict, dict | None]:
    """The fixed-patching student: a distilled one from ``fixed_checkpoint``, else the student's architecture
    with fixed patching at random init."""
    if cfg.fixed_checkpoint:
        from step_dist.evaluate.checkpoint import load_student

        enc, _ = load_student(cfg.fixed_checkpoint)
        if enc.config.patching != "fixed":
            raise ValueError(f"fixed_checkpoint {cfg.fixed_checkpoint} has patching={enc.config.patching!r}, not 'fixed'")
        return to_dict(enc.config), {k: v.detach().cpu() for k, v in enc.state_dict().items()}
    fixed = dict(student_config, patching="fixed")
    if cfg.fixed_stride:
        fixed["fixed_stride"] = float(cfg.fixed_stride)
    return fixed, None


def _remote(fn):
    import ray

    return ray.remote(max_retries=0)(fn)


_remote_probe = _remote(run_probe)
_remote_finetune = _remote(run_finetune)
