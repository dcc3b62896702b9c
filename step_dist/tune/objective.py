"""The probe objective: macro-F1 of a frozen linear probe on a trial's exported student (step_dist.evaluate)."""
from __future__ import annotations


def probe_f1(export_uri: str, task: str, split: str = "val", max_records_per_split: int = 0, seed: int = 0) -> float:
    """Fit the probe on the task's train split, score on ``split`` (test when the task has no such split)."""
    from step_dist.evaluate import TaskConfig, linear_probe, load_student, load_task
    from step_dist.evaluate.features import student_features

    t = load_task(TaskConfig(uri=task, max_records_per_split=max_records_per_split))
    target = t.splits.get(split) if split in t.splits and len(t.splits[split]) else t.test
    encoder, _ = load_student(export_uri)
    encoder.eval()
    x_train, x_eval = student_features(encoder, t.train), student_features(encoder, target)
    s = linear_probe(x_train, t.train.y(t.classes), x_eval, target.y(t.classes), len(t.classes), seed=seed)
    return float(s["macro_f1"])
