"""Tasks from shard sets: splits, class lists, what is set aside and why, and the CLI's config errors."""
from __future__ import annotations

import dataclasses

import pytest

from step_dist.cli import main
from step_dist.evaluate.config import TaskConfig
from step_dist.evaluate.tasks import TaskError, load_task
from step_dist.signals.shards import write_records
from tests.evaluate_helpers import two_class_records


def test_when_records_have_no_split_then_the_error_says_how_to_fix_it_and_holdout_splits_them(tmp_path):
    recs = [dataclasses.replace(r, split=None) for r in two_class_records(n_per_class=20)]
    write_records(str(tmp_path / "t"), recs)
    with pytest.raises(TaskError, match="holdout_fraction"):
        load_task(str(tmp_path / "t"))
    task = load_task(TaskConfig(uri=str(tmp_path / "t"), holdout_fraction=0.3))
    assert len(task.train) + len(task.test) == 40 and len(task.test) > 0
    again = load_task(TaskConfig(uri=str(tmp_path / "t"), holdout_fraction=0.3))
    assert again.test.ids == task.test.ids  # the hash split is deterministic


def test_when_test_labels_are_unseen_or_missing_then_they_are_set_aside_and_counted(tmp_path):
    recs = two_class_records(n_per_class=6)
    recs.append(dataclasses.replace(recs[0], id="odd-one", label="medium", split="test"))
    recs.append(dataclasses.replace(recs[0], id="no-label", label=None))
    write_records(str(tmp_path / "t"), recs)
    task = load_task(str(tmp_path / "t"))
    assert task.classes == ["fast", "slow"]
    assert task.set_aside == {"test label not in train": 1, "no label": 1}
    assert "odd-one" not in task.test.ids and len(task.train) + len(task.test) == 12


def test_when_a_baseline_name_is_unknown_then_the_cli_names_it_and_exits_2(tmp_path, capsys):
    code = main(["evaluate", "--checkpoint", str(tmp_path), "--task", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--baselines", "random,teacherz"])
    assert code == 2 and "teacherz" in capsys.readouterr().err
