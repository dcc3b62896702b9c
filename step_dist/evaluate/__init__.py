"""Evaluate: labelled downstream tasks (shard sets; SciTS releases through ``ingest_release``, the
``ingest-scits`` verb), frozen linear probe and STEP's staged fine-tune against baselines (random init,
teachers, MiniRocket, fixed patching), reports and plots, with the paper's published numbers beside ours."""
from step_dist.evaluate.checkpoint import load_student, resolve_export
from step_dist.evaluate.config import EvaluateConfig, FinetuneConfig, MiniRocketConfig, ProbeConfig, TaskConfig
from step_dist.evaluate.probe import linear_probe
from step_dist.evaluate.scits import ingest_scits, read_scits
from step_dist.evaluate.scits_release import ingest_release
from step_dist.evaluate.tasks import Task, TaskError, load_task

__all__ = [
    "EvaluateConfig", "FinetuneConfig", "MiniRocketConfig", "ProbeConfig", "Task", "TaskConfig", "TaskError",
    "embed_shards", "evaluate", "ingest_release", "ingest_scits", "linear_probe", "load_student", "load_task",
    "read_scits", "resolve_export", "write_report",
]


def __getattr__(name: str):
    # the parts that import torch / Ray load on first use
    if name == "evaluate":
        from step_dist.evaluate.runner import evaluate

        return evaluate
    if name == "embed_shards":
        from step_dist.evaluate.embed import embed_shards

        return embed_shards
    if name == "write_report":
        from step_dist.evaluate.report import write_report

        return write_report
    raise AttributeError(name)
