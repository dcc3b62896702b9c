"""Teacher recovery: how much of a teacher's pooled features a linear map from the student's features gets
back on held-out records (issue 16, item 1b).

For each task and teacher: a ridge regression from the student's features to the teacher's pooled features,
fitted on the task's train split and scored on its test split, R^2 pooled over the teacher's dimensions
(1 - residual energy / total energy around the train mean, so a dimension counts by its spread). The
student at random init is scored the same way: distillation should raise it. The report puts the ratio of
the student's probe macro-F1 to the teacher's beside it.
"""
from __future__ import annotations

import numpy as np

ALPHAS = np.logspace(-6, 4, 11)


def ridge_r2(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """R^2 on test of a ridge map x -> y fitted on train (penalty by efficient leave-one-out CV on train)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(x_train) < 2 or len(x_test) < 1:
        return float("nan")
    model = make_pipeline(StandardScaler(), RidgeCV(alphas=ALPHAS))
    model.fit(np.asarray(x_train, np.float64), np.asarray(y_train, np.float64))
    pred = model.predict(np.asarray(x_test, np.float64))
    y_test = np.asarray(y_test, np.float64)
    total = ((y_test - np.asarray(y_train, np.float64).mean(0)) ** 2).sum()
    if total <= 0:
        return float("nan")
    return float(1.0 - ((y_test - pred) ** 2).sum() / total)


def recovery_table(features: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]], summary: dict) -> list[dict]:
    """features: (task, model) -> (train, test) features of seed 0; summary: report summary of the probe.
    One row per (task, teacher, student model): R^2 and the student's probe F1 over the teacher's."""
    rows = []
    tasks = sorted({t for t, _ in features})
    for task in tasks:
        teachers = sorted(m for t, m in features if t == task and m.startswith("teacher-"))
        students = [m for m in ("step", "step-random") if (task, m) in features]
        for teacher in teachers:
            t_tr, t_te = features[(task, teacher)]
            f1_teacher = summary.get(task, {}).get(teacher, {}).get("macro_f1", {}).get("mean", float("nan"))
            for student in students:
                s_tr, s_te = features[(task, student)]
                f1_student = summary.get(task, {}).get(student, {}).get("macro_f1", {}).get("mean", float("nan"))
                rows.append({"task": task, "teacher": teacher, "student": student,
                             "r2": ridge_r2(s_tr, t_tr, s_te, t_te),
                             "f1_ratio": f1_student / f1_teacher if f1_teacher else float("nan")})
    return rows
