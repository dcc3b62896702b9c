"""The probe objective of a sweep: macro-F1 of a linear probe on an exported student (no Ray)."""
from __future__ import annotations

from tests.signal_factory import synthetic_records


def test_when_a_student_export_is_probed_on_a_labelled_task_then_the_f1_is_a_repeatable_score_in_range(tmp_path):
    from step_dist.model import STEPEncoder, StudentConfig
    from step_dist.signals.shards import write_records
    from step_dist.tune.objective import probe_f1

    task = str(tmp_path / "task")
    recs = synthetic_records(12, seed=1, label=True, split="train") + synthetic_records(8, seed=2, label=True, split="test")
    write_records(task, recs)
    export = str(tmp_path / "export")
    STEPEncoder(StudentConfig.named("tiny")).save_pretrained(export)
    f1 = probe_f1(export, task, split="val")  # no val split: scored on test
    assert 0.0 <= f1 <= 1.0
    assert probe_f1(export, task, split="test") == f1  # trials are compared on a repeatable score
