"""`step-dist evaluate` and `step-dist embed` end to end: real shard sets, a saved student, real Ray tasks."""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from tests.evaluate_helpers import write_two_class_task
from step_dist import storage
from step_dist.cli import main
from step_dist.evaluate.checkpoint import resolve_export
from step_dist.model import STEPEncoder, StudentConfig


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder with two exports; the newer one (checkpoint_000002) is the one to evaluate."""
    root = tmp_path_factory.mktemp("run")
    for i in (1, 2):
        torch.manual_seed(i)
        STEPEncoder(StudentConfig.named("tiny")).save_pretrained(str(root / f"checkpoint_00000{i}" / "export"))
        time.sleep(0.05)
    old = root / "checkpoint_000001" / "export" / "model.safetensors"
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    return root


def test_when_given_a_run_folder_then_the_newest_export_is_chosen(run_folder, tmp_path):
    assert resolve_export(str(run_folder)) == str(run_folder / "checkpoint_000002" / "export")
    assert resolve_export(str(run_folder / "checkpoint_000001" / "export")).endswith("checkpoint_000001/export")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no export here")
    with pytest.raises(FileNotFoundError, match="no student export"):
        resolve_export(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_export(str(tmp_path / "nothing-here"))


def test_when_the_run_folder_is_on_object_storage_then_its_newest_export_loads(run_folder, s3_bucket):
    from step_dist.evaluate.checkpoint import load_student

    storage.upload_dir(str(run_folder / "checkpoint_000002"), f"{s3_bucket}/runs/r/checkpoint_000002")
    enc, export = load_student(f"{s3_bucket}/runs/r")
    assert export == f"{s3_bucket}/runs/r/checkpoint_000002/export"
    ref = STEPEncoder.from_pretrained(str(run_folder / "checkpoint_000002" / "export"))
    for (k, a), (_, b) in zip(enc.state_dict().items(), ref.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.slow
def test_when_evaluate_runs_on_tiny_tasks_then_every_model_is_scored_and_the_report_is_written(ray_local, run_folder, tmp_path):
    t1 = write_two_class_task(str(tmp_path / "sines"), n_per_class=6, length=200)
    t2 = write_two_class_task(str(tmp_path / "sines2ch"), n_per_class=6, length=160, channels=2, seed=3)
    (tmp_path / "eval.yaml").write_text(
        "teachers:\n  - {name: fracast, kind: fracast, checkpoint: builtin}\n"
        "minirocket: {n_kernels: 200, max_length: 256}\n"
        "finetune: {stage_epochs: [1, 1, 1], batch_size: 4, max_steps_per_stage: 2}\n"
    )
    out = tmp_path / "report"
    code = main(["evaluate", "--checkpoint", str(run_folder), "--task", t1, "--task", t2, "--out", str(out),
                 "--protocol", "both", "--baselines", "random,teachers,minirocket,fixed", "--seeds", "0,1",
                 "--config", str(tmp_path / "eval.yaml")])
    data = json.loads((out / "report.json").read_text())
    assert code == 0, [r for r in data["results"] if "error" in r]
    assert data["checkpoint"]["export"].endswith("checkpoint_000002/export")
    probe, ft = data["summary"]["probe"], data["summary"]["finetune"]
    assert set(probe) == set(ft) == {"sines", "sines2ch"}
    assert set(probe["sines"]) == {"step", "step-random", "step-fixed", "teacher-fracast", "minirocket"}
    assert set(ft["sines"]) == {"step", "step-random", "step-fixed"}
    for table in (probe, ft):
        for cells in table.values():
            for cell in cells.values():
                assert cell["macro_f1"]["n"] == 2 and 0.0 <= cell["macro_f1"]["mean"] <= 1.0
    assert probe["sines"]["step"]["macro_f1"]["mean"] > 0.95  # the known answer, through the whole CLI path
    assert {f"bar_{p}_{t}.png" for p in ("probe", "finetune") for t in ("sines", "sines2ch")} <= set(os.listdir(out))
    assert "| sines |" in (out / "report.md").read_text()
    stages = [r["stages"] for r in data["results"] if r["protocol"] == "finetune"]
    assert all([s["trainable_params"] for s in st][0] < [s["trainable_params"] for s in st][2] for st in stages)


def test_when_embed_writes_to_object_storage_then_rows_hold_id_split_label_and_embedding(run_folder, tmp_path, s3_bucket):
    data = write_two_class_task(f"{s3_bucket}/toy", n_per_class=3, length=128)
    code = main(["embed", "--checkpoint", str(run_folder), "--data", data, "--out", f"{s3_bucket}/emb/toy.parquet",
                 "--pooling", "mean+std"])
    assert code == 0
    fs, path = storage.arrow_filesystem(f"{s3_bucket}/emb/toy.parquet")
    table = pq.read_table(path, filesystem=fs)
    assert table.column_names == ["id", "split", "label", "embedding"] and table.num_rows == 6
    emb = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    assert emb.shape == (6, 128) and np.isfinite(emb).all()  # mean and spread of a 64-wide student
    # the same numbers as the library call on the same export
    from step_dist.signals.shards import iter_records

    enc = STEPEncoder.from_pretrained(resolve_export(str(run_folder)))
    recs = {r.id: r for r in iter_records(data)}
    first = table.column("id")[0].as_py()
    np.testing.assert_allclose(emb[0], enc.encode(recs[first].values, recs[first].sampling_rate_hz, pooling="mean+std"),
                               rtol=1e-5, atol=1e-6)
