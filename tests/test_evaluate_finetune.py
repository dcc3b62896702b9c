"""STEP's staged fine-tune: each stage trains exactly the modules it names, and the run scores the task."""
from __future__ import annotations

import pytest
import torch

from tests.evaluate_helpers import write_two_class_task
from step_dist.evaluate.config import FinetuneConfig
from step_dist.evaluate.finetune import STAGES, Classifier, finetune, set_stage
from step_dist.evaluate.tasks import load_task
from step_dist.model import STEPEncoder, StudentConfig


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_when_each_stage_is_set_then_trainable_parameters_are_exactly_the_stage_modules():
    enc = STEPEncoder(StudentConfig.named("tiny"))
    model = Classifier(enc, n_classes=3)
    patching, head, everything = _count(enc.patching), _count(model.head), _count(model)
    assert 0 < patching < everything and head == 64 * 3 + 3
    expected = {"patching": patching, "patching+head": patching + head, "all": everything}
    for stage in STAGES:
        n = set_stage(model, stage)
        assert n == expected[stage] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    set_stage(model, "patching")
    assert all(not p.requires_grad for p in model.head.parameters())
    assert all(p.requires_grad for p in enc.patching.parameters())


def test_when_stage_one_runs_then_only_the_patching_module_changes(tmp_path):
    task = load_task(write_two_class_task(str(tmp_path / "t"), n_per_class=6))
    torch.manual_seed(0)
    enc = STEPEncoder(StudentConfig.named("tiny"))
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    cfg = FinetuneConfig(stage_epochs=[1, 0, 0], lr=[1e-2, 1e-3, 1e-3], batch_size=4, max_steps_per_stage=2)
    finetune(enc, task.train, task.test, task.classes, cfg, seed=0)
    changed = {k for k, v in enc.state_dict().items() if not torch.equal(v, before[k])}
    patching_keys = {"patching." + k for k in enc.patching.state_dict()}
    assert changed and changed <= patching_keys


@pytest.mark.parametrize("seed", [0])
def test_when_the_three_stages_run_then_the_report_has_per_stage_counts_and_scores(tmp_path, seed):
    task = load_task(write_two_class_task(str(tmp_path / "t"), n_per_class=9))
    enc = STEPEncoder(StudentConfig.named("tiny"))
    cfg = FinetuneConfig(stage_epochs=[1, 2, 4], lr=[1e-3, 1e-2, 3e-3], batch_size=4)
    res = finetune(enc, task.train, task.test, task.classes, cfg, seed=seed)
    assert [s["stage"] for s in res["stages"]] == list(STAGES)
    counts = [s["trainable_params"] for s in res["stages"]]
    assert counts[0] < counts[1] < counts[2] == enc.num_parameters() + 64 * 2 + 2
    assert res["stages"][2]["steps"] == 4 * 3  # 12 train records, batch 4, 4 epochs
    assert res["macro_f1"] > 0.9  # slow vs fast sines are easy once everything trains


def test_when_the_student_has_fixed_patching_then_stage_one_trains_nothing_and_the_rest_runs(tmp_path):
    task = load_task(write_two_class_task(str(tmp_path / "t"), n_per_class=3))
    enc = STEPEncoder(StudentConfig.named("tiny", patching="fixed"))
    cfg = FinetuneConfig(stage_epochs=[1, 1, 1], batch_size=4, max_steps_per_stage=1)
    res = finetune(enc, task.train, task.test, task.classes, cfg, seed=0)
    first = res["stages"][0]
    assert first["trainable_params"] == sum(p.numel() for p in enc.patching.parameters()) == 0 and first["steps"] == 0
    assert [s["steps"] for s in res["stages"][1:]] == [1, 1]
