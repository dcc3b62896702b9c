"""The frozen linear probe on a tiny task with a known answer (slow vs fast sines)."""
from __future__ import annotations

import numpy as np
import pytest

from tests.evaluate_helpers import write_two_class_task
from step_dist.config import to_dict
from step_dist.evaluate.config import EvaluateConfig, MiniRocketConfig
from step_dist.evaluate.probe import linear_probe, summarise
from step_dist.evaluate.runner import ModelSpec, run_probe
from step_dist.evaluate.tasks import load_task
from step_dist.model import StudentConfig


@pytest.fixture(scope="module")
def toy_task(tmp_path_factory):
    return load_task(write_two_class_task(str(tmp_path_factory.mktemp("toy") / "shards")))


def test_when_classes_are_well_separated_then_the_student_probe_reaches_macro_f1_above_095(toy_task):
    spec = ModelSpec("step-random", "student", to_dict(StudentConfig.named("tiny")), pretrained=False)
    rows = run_probe(toy_task, spec, None, [0, 1], EvaluateConfig())
    assert [r["seed"] for r in rows] == [0, 1]
    for r in rows:
        assert r["macro_f1"] > 0.95 and r["accuracy"] > 0.95
        assert r["feature_dim"] == 128  # the default pooling, mean+std, of a 64-wide student


def test_when_labels_are_shuffled_then_the_probe_falls_to_chance(toy_task):
    """The same pipeline with labels that carry no signal: the probe must not score well (the test can fail)."""
    from step_dist.evaluate.features import student_features
    from step_dist.model import STEPEncoder

    import torch

    torch.manual_seed(0)
    enc = STEPEncoder(StudentConfig.named("tiny")).eval()
    xtr, xte = student_features(enc, toy_task.train), student_features(enc, toy_task.test)
    rng = np.random.default_rng(0)
    scores = [linear_probe(xtr, rng.permutation(toy_task.train.y(toy_task.classes)), xte,
                           rng.permutation(toy_task.test.y(toy_task.classes)), 2, seed=s)["macro_f1"] for s in range(5)]
    assert np.mean(scores) < 0.8


def test_when_minirocket_runs_on_raw_values_then_it_separates_the_classes(toy_task):
    cfg = EvaluateConfig(minirocket=MiniRocketConfig(n_kernels=500, max_length=256))
    rows = run_probe(toy_task, ModelSpec("minirocket", "minirocket"), None, [0], cfg)
    assert rows[0]["macro_f1"] > 0.95


def test_when_scores_are_summarised_then_mean_and_sample_std_are_reported():
    s = summarise([0.8, 0.9, 1.0])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.9) and s["std"] == pytest.approx(0.1)
    assert summarise([0.5])["std"] == 0.0


def test_when_some_records_are_too_short_for_a_teacher_then_they_are_counted_not_fatal(tmp_path):
    from step_dist.evaluate.features import teacher_features
    from step_dist.evaluate.tasks import Split
    from step_dist.teachers import TeacherConfig, build_teacher

    teacher = build_teacher(TeacherConfig(name="fracast", kind="fracast", checkpoint="builtin"))
    rng = np.random.default_rng(0)
    split = Split(ids=["short", "long"], values=[rng.standard_normal((1, 4)).astype(np.float32),
                                                 rng.standard_normal((1, 300)).astype(np.float32)],
                  rates=[10.0, 10.0], labels=["a", "b"])
    feats, empty = teacher_features(teacher, split)
    assert empty == 1 and feats.shape == (2, teacher.dim)
    assert not feats[0].any() and np.abs(feats[1]).sum() > 0
