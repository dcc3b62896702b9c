"""The SciTS loader: JSONL rows pointing at wav / csv / npy files on object storage become a labelled task."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf

from step_dist import storage
from step_dist.evaluate.config import TaskConfig
from step_dist.evaluate.scits import ScitsError, ingest_scits, read_scits
from step_dist.evaluate.tasks import load_task


def _wav(values: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, values.T, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.fixture
def scits_set(s3_bucket):
    """A small SciTS-style set on moto S3: flat rows and SciTS's nested input_ts rows, three file formats."""
    root = f"{s3_bucket}/scits"
    t = np.arange(400) / 100.0
    wav = np.stack([np.sin(2 * np.pi * 3 * t), np.cos(2 * np.pi * 3 * t)]).astype(np.float32)
    storage.write_bytes(f"{root}/data/a.wav", _wav(wav, 100))
    npy = np.stack([np.sin(2 * np.pi * 1 * t)] * 3, axis=1).astype(np.float32)  # [time, channels] as SciTS
    storage.write_bytes(f"{root}/data/b.npy", _npy(npy))
    csv = "1.0,10\nX,20\n3.0,30\n4.0,X\n"  # 'X' = missing, filled by interpolation
    storage.write_bytes(f"{root}/data/c.csv", csv.encode())
    train = [
        {"id": "a", "path": "data/a.wav", "label": "quake"},
        {"id": "b", "input_ts": {"already_segment": False, "original": {"ori_path": "data/b.npy"}},
         "gt_result": {"label": "noise"}, "sampling_rate": 100},
        {"id": "missing", "path": "data/nope.npy", "label": "noise", "sampling_rate_hz": 50},
        {"id": "nolabel", "path": "data/b.npy", "sampling_rate_hz": 50},
    ]
    test = [{"id": "c", "path": "data/c.csv", "gt_result": {"gt_class": {"default": ["quake"]}}, "fs": 10},
            {"id": "sentence", "path": "data/c.csv", "gt_text": ["The answer is quake."], "fs": 10}]
    storage.write_bytes(f"{root}/train.jsonl", ("\n".join(json.dumps(r) for r in train) + "\nnot json\n").encode())
    storage.write_bytes(f"{root}/test.jsonl", ("\n".join(json.dumps(r) for r in test) + "\n").encode())
    return root, wav, npy


def test_when_scits_jsonl_on_s3_is_ingested_then_wav_csv_npy_become_labelled_records(scits_set, s3_bucket):
    root, wav, npy = scits_set
    summary = ingest_scits(root, f"{s3_bucket}/shards")
    assert summary["records"] == 3
    assert summary["splits"] == {"train": 2, "test": 1}  # split from the JSONL file name
    assert summary["set_aside"] == 4  # gt_text is free text, never a label
    reasons = " | ".join(summary["reasons"])
    assert "signal file not found" in reasons and "no label" in reasons and "not valid JSON" in reasons

    task = load_task(TaskConfig(uri=f"{s3_bucket}/shards", name="toy"))
    assert task.classes == ["noise", "quake"]
    assert task.train.ids == ["a", "b"]
    np.testing.assert_array_equal(task.train.values[0], wav)  # float WAV round-trips exactly
    np.testing.assert_array_equal(task.train.values[1], npy.T)  # [time, channels] -> [channels, time]
    assert task.train.rates == [100.0, 100.0]
    c = task.test.values[0]
    np.testing.assert_allclose(c, [[1, 2, 3, 4], [10, 20, 30, 30]])  # interpolated, edge-held
    assert task.test.labels == ["quake"] and task.test.rates == [10.0]


def test_when_a_task_selects_channels_and_caps_length_then_records_are_prepared(scits_set, s3_bucket):
    root, wav, _ = scits_set
    ingest_scits(root, f"{s3_bucket}/shards2")
    task = load_task(TaskConfig(uri=f"{s3_bucket}/shards2", channels=["ch1"], max_length=50))
    np.testing.assert_array_equal(task.train.values[0], wav[1:2, :50])
    assert all(v.shape == (1, min(50, v.shape[1])) for v in task.train.values)


def test_when_a_task_asks_for_an_absent_channel_then_the_records_are_set_aside_with_the_reason(scits_set, s3_bucket):
    root, _, _ = scits_set
    ingest_scits(root, f"{s3_bucket}/shards3")
    with pytest.raises(ValueError, match="0 train and 0 test"):
        load_task(TaskConfig(uri=f"{s3_bucket}/shards3", channels=["Fpz-Cz"]))


def test_when_a_fif_row_is_read_without_mne_then_the_error_names_the_extra(tmp_path):
    try:
        import mne  # noqa: F401

        pytest.skip("mne is installed here")
    except ImportError:
        pass
    (tmp_path / "x.fif").write_bytes(b"\0" * 16)
    (tmp_path / "train.jsonl").write_text(json.dumps({"id": "x", "path": "x.fif", "label": "a"}) + "\n")
    with pytest.raises(ScitsError, match=r"step-dist\[eeg\]"):
        read_scits(str(tmp_path / "train.jsonl"))
