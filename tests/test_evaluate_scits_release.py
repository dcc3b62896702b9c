"""`step-dist ingest-scits` on a SciTS release built here in SciTS's own schema, then `step-dist evaluate` on it.

The fixture holds every row field SciTS writes (id, uid, dataset_name, task, scene, input_text, gt_text,
input_ts{already_segment, original, segment, channel}, gt_ts, gt_result, meta_data), five formats (.npy,
.wav, .flac, .fif, .csv with 'X' gaps and a blank) plus an .m4a, a detection task, a QA task, a forecasting task,
an already-segmented row, a multi-label row, a missing file, a row without a rate and malformed rows. Values are
checked against SciTS's own loader logic (``Dataset_Unified.load_ts_data`` up to its scaler), written out below
as it is there; only torchaudio.load is read through soundfile, its backend here (same float scaling).
"""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from step_dist.cli import main
from step_dist.evaluate.config import TaskConfig
from step_dist.evaluate.tasks import load_task

STEAD = "Earth-STEAD-Seismic-Detection"
MARM = "Bioacoustics-MarmAudio-Calls-Classification"
SLEEP = "Neuroscience-SleepEDF-Sleep-Classification"
QA = "Astronomy-LEAVES-Lightcurve-QA"
ETT = "Energy-ETT-Electricity-Forecasting"


def scits_reference(path: str) -> np.ndarray:
    """SciTS's load_ts_data before ``use_scaler``: [time, channels] -> returned as [channels, time] float32."""
    from sklearn.impute import SimpleImputer

    ext = os.path.splitext(path)[1].lower()
    if ext in (".wav", ".flac", ".mp3"):
        np_data, _ = sf.read(path, dtype="float32", always_2d=True)  # torchaudio.load(...).T, same scaling
    elif ext == ".csv":
        df = pd.read_csv(path, header=None)
        x_mask = (df == "X") | (df == "x")
        if x_mask.any().any():
            df = df.replace(["X", "x"], np.nan)
            df = df.apply(pd.to_numeric, errors="coerce")
            df = df.interpolate(method="linear", limit_direction="both")
        np_data = df.values
    elif ext == ".npy":
        np_data = np.load(path)
        if np_data.ndim == 1:
            np_data = np_data.reshape(-1, 1)
    elif ext == ".fif":
        import mne

        np_data = mne.io.read_raw_fif(path, preload=True, verbose=False).get_data().T
    np_data = np_data[:240000]
    np_data = np.where(np.isfinite(np_data), np_data, np.nan)
    np_data = SimpleImputer(missing_values=np.nan, strategy="mean").fit_transform(np_data)
    return np_data.astype(np.float32).T


def _row(task: str, i: int, path: str, gt_result, *, segment: str | None = None, channel: int = 1,
         gt_ts=None, meta=None, dataset: str | None = None) -> dict:
    """A row in SciTS's schema, every field present."""
    return {
        "id": f"{i}", "uid": f"{task}-{i:04d}", "dataset_name": dataset or task.split("-")[1],
        "task": task.split("-")[-1].lower(), "scene": task.split("-")[2],
        "input_text": [f"Look at series {i}. What is it?"],
        "gt_text": [f"The answer is a phrasing number {i}."],
        "input_ts": {"already_segment": segment is not None,
                     "original": {"ori_path": path, "ori_length": 0},
                     "segment": {"seg_path": segment, "seg_length": 0 if segment else None},
                     "channel": channel},
        "gt_ts": gt_ts, "gt_result": gt_result, "meta_data": meta or {},
    }


def _write_jsonl(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("scits") / "Release_v1"
    rng = np.random.default_rng(0)
    files: dict[str, str] = {}

    def put(task, name, writer):
        rel = f"{task}/raw_input_data/{name}"
        full = root / rel
        full.parent.mkdir(parents=True, exist_ok=True)
        writer(str(full))
        files[name] = str(full)
        return rel

    # STEAD, detection: 3-component .npy [time, channels] (no rate inside: the rate table gives 100 Hz)
    stead_train, stead_test = [], []
    t = np.arange(600) / 100.0
    for i in range(12):
        quake = i % 2 == 0
        x = 0.1 * rng.standard_normal((600, 3)) + (np.sin(2 * np.pi * 8 * t)[:, None] * (t[:, None] > 2) if quake else 0)
        if i == 3:
            x[10:15, 1] = np.nan  # gaps SciTS fills with the channel mean
        rel = put(STEAD, f"stead_{i}.npy", lambda p, x=x: np.save(p, x.astype(np.float64)))
        gt = {"contain": quake, **({"p_arrival_time": 200} if quake else {})}
        (stead_test if i >= 8 else stead_train).append(_row(STEAD, i, rel, gt, channel=3))
    _write_jsonl(root / STEAD / f"{STEAD}-train-{len(stead_train)}.jsonl", stead_train)
    _write_jsonl(root / STEAD / f"{STEAD}-test-{len(stead_test)}.jsonl", stead_test)

    # MarmAudio, classification: .wav / .flac at 8 kHz, an already-segmented row, a multi-label row,
    # an .m4a, a missing file, a row with a malformed gt_class and a line that is not JSON
    marm_train, marm_test = [], []
    for i in range(10):
        call = "phee" if i % 2 == 0 else "trill"
        f = 600.0 if call == "phee" else 2000.0
        y = (0.5 * np.sin(2 * np.pi * f * np.arange(800) / 8000) + 0.01 * rng.standard_normal(800)).astype(np.float32)
        ext = "flac" if i == 1 else "wav"
        rel = put(MARM, f"marm_{i}.{ext}", lambda p, y=y, ext=ext: sf.write(p, y, 8000, subtype="PCM_16" if ext == "flac" else "FLOAT"))
        (marm_test if i >= 6 else marm_train).append(_row(MARM, i, rel, {"gt_class": {"default": [call]}}))
    seg = put(MARM, "marm_long_seg0.wav", lambda p: sf.write(p, 0.3 * np.sin(np.arange(400) / 3.0).astype(np.float32), 8000, subtype="FLOAT"))
    orig = put(MARM, "marm_long.wav", lambda p: sf.write(p, np.zeros(4000, np.float32), 8000, subtype="FLOAT"))
    marm_train.append(_row(MARM, 20, orig, {"gt_class": {"default": ["phee"]}}, segment=seg))
    multi = put(MARM, "marm_both.wav", lambda p: sf.write(p, 0.2 * np.ones(500, np.float32), 8000, subtype="FLOAT"))
    marm_train.append(_row(MARM, 21, multi, {"gt_class": {"default": ["trill", "phee"]}}))
    m4a = put(MARM, "marm_22.m4a", lambda p: open(p, "wb").write(b"\0\0\0\x20ftypM4A " + b"\0" * 64))
    marm_train.append(_row(MARM, 22, m4a, {"gt_class": {"default": ["phee"]}}))
    marm_train.append(_row(MARM, 23, f"{MARM}/raw_input_data/gone.wav", {"gt_class": {"default": ["trill"]}}))
    marm_train.append(_row(MARM, 24, multi, {"gt_class": {"species": ["callithrix"]}}))
    marm_train.append('{"id": "25", "input_ts": ')
    _write_jsonl(root / MARM / f"{MARM}-train-{len(marm_train)}.jsonl", marm_train)
    _write_jsonl(root / MARM / f"{MARM}-test-{len(marm_test)}.jsonl", marm_test)

    # SleepEDF: one-channel .fif at 100 Hz (the file's rate and channel name)
    mne = pytest.importorskip("mne")
    sleep = []
    for i, stage in enumerate(["W", "N2", "W", "N2"]):
        v = rng.standard_normal((1, 300)) * 1e-5
        rel = put(SLEEP, f"sleep_{i}_raw.fif", lambda p, v=v: mne.io.RawArray(
            v, mne.create_info(["Fpz-Cz"], 100.0, "eeg"), verbose=False).save(p, verbose=False))
        sleep.append(_row(SLEEP, i, rel, {"gt_class": {"default": stage}}))
    _write_jsonl(root / SLEEP / f"{SLEEP}-test-{len(sleep)}.jsonl", sleep)

    # LEAVES-like QA: .csv light curves, one with 'X' gaps and a blank, one with a blank only (mean fill);
    # the rate comes from the row's meta_data
    qa = put(QA, "lc_x.csv", lambda p: open(p, "w").write("1.0,10\nX,20\n3.5,\n4.0,X\n5.0,50\n"))
    qb = put(QA, "lc_blank.csv", lambda p: open(p, "w").write("1.0,2\n,4\n3.0,6\n"))
    hr = {"sampling_rate": 1 / 1800}
    _write_jsonl(root / QA / f"{QA}-train-2.jsonl", [_row(QA, 0, qa, {"answer": "A"}, channel=2, meta=hr),
                                                     _row(QA, 1, qb, {"answer": "B"}, channel=2, meta=hr)])

    # ETT-like forecasting: inputs with gt_ts and no gt_result (corpus only); one row has no rate anywhere
    ea = put(ETT, "ett_0.csv", lambda p: open(p, "w").write("\n".join(f"{k},{2 * k}" for k in range(50)) + "\n"))
    eb = put(ETT, "ett_1.csv", lambda p: open(p, "w").write("\n".join(f"{k}" for k in range(40)) + "\n"))
    _write_jsonl(root / ETT / f"{ETT}-train-2.jsonl", [
        _row(ETT, 0, ea, None, channel=2, gt_ts={"path": f"{ETT}/raw_gt_data/ett_0.csv", "length": 10},
             meta={"sampling_rate_hz": 1 / 3600}),
        _row(ETT, 1, eb, None, gt_ts={"path": f"{ETT}/raw_gt_data/ett_1.csv", "length": 10}),
    ])
    # meta_data.jsonl repeats the rows: with task folders holding their own JSONL it is not read
    _write_jsonl(root / "meta_data.jsonl", stead_train[:2])
    (root / "rates.yaml").write_text("rates:\n  STEAD: 100\n")
    return root, files


@pytest.fixture(scope="module")
def ingested(release, tmp_path_factory):
    root, files = release
    out = tmp_path_factory.mktemp("ingested") / "scits"
    code = main(["ingest-scits", str(root), "--out", str(out), "--rates", str(root / "rates.yaml")])
    summary = json.loads((out / "scits_summary.json").read_text())
    return out, summary, code, files


def test_when_a_release_is_ingested_then_each_task_gets_exact_classes_and_its_splits(ingested, capsys):
    out, summary, code, _ = ingested
    assert code == 3  # written, with rows set aside
    by_task = {t["task"]: t for t in summary["tasks"]}
    assert set(summary["task_uris"]) == {STEAD, MARM, SLEEP, QA}  # ETT has no labels: corpus only
    assert by_task[STEAD]["classes"] == {"false": 6, "true": 6}
    assert by_task[STEAD]["splits"] == {"test": 4, "train": 8}
    assert by_task[MARM]["classes"] == {"phee": 6, "phee + trill": 1, "trill": 5}
    assert by_task[MARM]["splits"] == {"test": 4, "train": 8}
    assert by_task[SLEEP]["classes"] == {"N2": 2, "W": 2} and by_task[SLEEP]["splits"] == {"test": 4}
    assert by_task[QA]["classes"] == {"A": 1, "B": 1}
    assert by_task[ETT]["records"] == 1 and by_task[ETT]["labelled"] == 0
    assert any("meta_data.jsonl not read" in n for n in summary["notes"])

    stead = load_task(TaskConfig(uri=summary["task_uris"][STEAD]))
    assert stead.classes == ["false", "true"] and len(stead.train) == 8 and len(stead.test) == 4
    assert stead.train.ids[0] == f"{STEAD}/0" and stead.train.rates == [100.0] * 8  # the rate table's
    marm = load_task(TaskConfig(uri=summary["task_uris"][MARM]))
    assert marm.classes == ["phee", "phee + trill", "trill"]
    assert set(marm.test.labels) == {"phee", "trill"} and marm.train.rates[0] == 8000.0


def test_when_rows_cannot_be_read_then_each_is_set_aside_by_name_with_its_reason(ingested):
    out, summary, _, _ = ingested
    aside = {(t["task"], r["id"] or f"line {r['line']}"): r for t in summary["tasks"] for r in t["set_aside_rows"]}
    assert set(aside) == {(MARM, "22"), (MARM, "23"), (MARM, "24"), (MARM, "line 12"), (ETT, "1")}
    assert aside[(MARM, "22")]["kind"] == "format not readable here (.m4a)" and "ffmpeg" in aside[(MARM, "22")]["reason"]
    assert aside[(MARM, "23")]["kind"] == "signal file not found" and "gone.wav" in aside[(MARM, "23")]["reason"]
    assert aside[(MARM, "24")]["kind"] == "malformed label" and "default" in aside[(MARM, "24")]["reason"]
    assert aside[(MARM, "line 12")]["kind"] == "malformed line"
    assert aside[(ETT, "1")]["kind"] == "no sampling rate" and "ett_1.csv" in aside[(ETT, "1")]["reason"]
    manifest = json.loads((out / "tasks" / MARM / "_manifest.json").read_text())
    assert sorted(q["id"] or "" for q in manifest["quarantined"]) == ["", "22", "23", "24"]


def test_when_values_are_read_then_they_equal_scits_own_loader_before_scaling(ingested):
    out, summary, _, files = ingested
    records = {}
    for uri in list(summary["task_uris"].values()) + [summary["corpus"]["uri"]]:
        from step_dist.signals.shards import iter_records

        records.update({r.id: r for r in iter_records(uri)})
    for rid, name in [(f"{STEAD}/3", "stead_3.npy"), (f"{STEAD}/0", "stead_0.npy"), (f"{MARM}/0", "marm_0.wav"),
                      (f"{MARM}/1", "marm_1.flac"), (f"{SLEEP}/1", "sleep_1_raw.fif"), (f"{QA}/0", "lc_x.csv"),
                      (f"{QA}/1", "lc_blank.csv"), (f"{ETT}/0", "ett_0.csv")]:
        np.testing.assert_array_equal(records[rid].values, scits_reference(files[name]), err_msg=rid)
    # the hand-checked numbers behind two of them: 'X' gaps interpolated, a blank-only file mean-filled
    np.testing.assert_allclose(records[f"{QA}/0"].values, [[1, 2.25, 3.5, 4, 5], [10, 20, 30, 40, 50]])
    np.testing.assert_allclose(records[f"{QA}/1"].values, [[1, 2, 3], [2, 4, 6]])
    # already_segment: the segment, not the original recording
    np.testing.assert_array_equal(records[f"{MARM}/20"].values, scits_reference(files["marm_long_seg0.wav"]))
    multi = records[f"{MARM}/21"]
    assert multi.label == "phee + trill" and multi.meta["labels"] == ["trill", "phee"]
    assert records[f"{SLEEP}/0"].channel_names == ["Fpz-Cz"] and records[f"{SLEEP}/0"].sampling_rate_hz == 100.0
    assert records[f"{STEAD}/0"].meta["detection"] == {"p_arrival_time": 200}
    assert records[f"{STEAD}/3"].meta["flags"]["nan_filled_with_channel_mean"] == 5
    assert records[f"{QA}/0"].sampling_rate_hz == pytest.approx(1 / 1800)


def test_when_the_corpus_is_written_then_it_holds_every_non_test_record_and_no_test_one(ingested):
    from step_dist.signals.shards import iter_records

    out, summary, _, _ = ingested
    corpus = {r.id: r for r in iter_records(summary["corpus"]["uri"])}
    assert f"{ETT}/0" in corpus and corpus[f"{ETT}/0"].label is None  # a forecasting input, unlabelled
    assert corpus[f"{ETT}/0"].meta["gt_ts"] == f"{ETT}/raw_gt_data/ett_0.csv"
    assert all(r.split not in ("test", "val") for r in corpus.values())
    assert f"{STEAD}/8" not in corpus and f"{STEAD}/0" in corpus
    assert len(corpus) == 8 + 8 + 2 + 1  # STEAD, MarmAudio, QA train rows and the ETT input


def test_when_only_meta_data_jsonl_is_given_then_tasks_come_from_paths_and_holdout_splits_them(release, tmp_path):
    root, _ = release
    flat = tmp_path / "release"
    flat.mkdir()
    rows = [json.loads(line) for line in (root / STEAD / f"{STEAD}-train-8.jsonl").read_text().splitlines()]
    (flat / "meta_data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    code = main(["ingest-scits", str(flat / "meta_data.jsonl"), "--root", str(root), "--rate", "100",
                 "--holdout", "0.5", "--out", str(out)])
    summary = json.loads((out / "scits_summary.json").read_text())
    assert code == 0 and list(summary["task_uris"]) == [STEAD]
    from step_dist.evaluate.tasks import holdout_split

    task = load_task(TaskConfig(uri=summary["task_uris"][STEAD]))
    assert {split: sorted(s.ids) for split, s in task.splits.items()} == {
        split: sorted(f"{STEAD}/{r['id']}" for r in rows if holdout_split(f"{STEAD}/{r['id']}", 0.5) == split)
        for split in ("train", "test")}


def test_when_evaluate_runs_on_the_ingested_tasks_then_the_report_sets_the_paper_beside_ours(ingested, ray_local, tmp_path, capsys):
    import torch

    from step_dist.model import STEPEncoder, StudentConfig

    out, summary, _, _ = ingested
    torch.manual_seed(0)
    STEPEncoder(StudentConfig.named("tiny")).save_pretrained(str(tmp_path / "export"))
    report_dir = tmp_path / "report"
    code = main(["evaluate", "--checkpoint", str(tmp_path / "export"), "--task", summary["task_uris"][STEAD],
                 "--task", summary["task_uris"][MARM], "--out", str(report_dir), "--protocol", "probe",
                 "--baselines", "none", "--seeds", "0"])
    report = json.loads((report_dir / "report.json").read_text())
    assert code == 0, [r for r in report["results"] if "error" in r]
    assert set(report["summary"]["probe"]) == {STEAD, MARM}
    paper = {r["task"]: r for r in report["paper"]}
    assert paper[STEAD]["paper_task"] == "STEAD" and paper[STEAD]["paper"]["STEP"] == 99.0
    assert paper[MARM]["paper"]["STEP"] == 94.7
    assert 0.0 <= paper[STEAD]["ours"]["step"] <= 100.0
    assert "tiny student (2 x 64" in paper[STEAD]["scale"] and "8 train / 4 test" in paper[STEAD]["scale"]
    md = (report_dir / "report.md").read_text()
    assert "## beside the paper" in md and f"| {STEAD} | STEAD | 83.7 |" in md


def test_when_the_scits_recipes_are_loaded_then_they_pass_the_config_checks():
    from step_dist import config
    from step_dist.evaluate.config import EvaluateConfig
    from step_dist.evaluate.paper import paper_task
    from step_dist.evaluate.scits_release import load_rates
    from step_dist.teachers import TeacherConfig
    from step_dist.train.config import PretrainConfig

    pretrain = config.load(PretrainConfig, "jobs/configs/scits.yaml")
    pretrain.check()
    kinds = [config.from_dict(TeacherConfig, {"name": t.name, **t.model}).kind for t in pretrain.teachers]
    assert kinds == ["hf_audio", "hf_remote", "braindecode"]  # audio SSL, Time-MoE, an EEG model
    evaluation = config.load(EvaluateConfig, "jobs/configs/eval-scits.yaml")
    assert [paper_task(t.name) for t in evaluation.tasks] == ["GWOSC", "LEAVES", "STEAD", "MarmAudio", "SleepEDF",
                                                             "WBCIC", "RadSeg"]
    assert "finetune" in evaluation.protocols
    assert load_rates("jobs/configs/scits-rates.yaml")["STEAD"] == 100.0


def test_when_the_release_is_on_object_storage_then_the_verb_reads_it_there(s3_bucket, tmp_path):
    import io

    from step_dist import storage

    root, task = f"{s3_bucket}/Release_v1", "Earth-STEAD-Seismic-Detection"
    rows = {"train": [], "test": []}
    for i in range(6):
        buf = io.BytesIO()
        np.save(buf, np.full((50, 3), float(i), np.float32))
        storage.write_bytes(f"{root}/{task}/raw_input_data/{i}.npy", buf.getvalue())
        rows["test" if i >= 4 else "train"].append(
            _row(task, i, f"{task}/raw_input_data/{i}.npy", {"contain": i % 2 == 0}, channel=3, meta={"fs": 100}))
    for split, rs in rows.items():
        storage.write_bytes(f"{root}/{task}/{task}-{split}-{len(rs)}.jsonl", "".join(json.dumps(r) + "\n" for r in rs).encode())

    assert main(["ingest-scits", root, "--out", f"{s3_bucket}/out"]) == 0
    loaded = load_task(TaskConfig(uri=f"{s3_bucket}/out/tasks/{task}"))
    assert loaded.classes == ["false", "true"] and len(loaded.train) == 4 and len(loaded.test) == 2
    np.testing.assert_array_equal(loaded.test.values[1], np.full((3, 50), 5.0, np.float32))


@pytest.mark.parametrize("name", ["../../etc", "a/../../b", "..", "/abs/path", "", "_hidden", "x\0y"])
def test_when_a_row_names_its_task_with_path_parts_then_the_task_folder_stays_one_plain_name(name):
    from step_dist.evaluate.scits_release import task_slug

    slug = task_slug(name)
    assert "/" not in slug and "\0" not in slug and slug not in ("", ".", "..") and not slug.startswith(("_", "."))
