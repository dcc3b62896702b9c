"""demo-data builds the offline corpus from signals shipped in PyPI packages; inspect summarises it."""
from __future__ import annotations

import json

import numpy as np

from step_dist.cli import main
from step_dist.signals.shards import iter_records, read_manifest


def test_when_demo_data_tiny_is_built_then_pretrain_mixes_domains_and_tasks_have_labelled_splits(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo-data", "--out", str(out), "--size", "tiny"]) == 0
    index = json.loads((out / "demo_index.json").read_text())
    assert json.loads(capsys.readouterr().out) == index
    assert set(index["tasks"]) == {"GunPoint", "BasicMotions"}

    pre = read_manifest(index["pretrain"])
    assert set(pre["sources"]) == {"seismic", "physio", "audio", "eeg", "edf"}
    assert all(s["records"] > 0 for s in pre["sources"].values())
    assert len(set(pre["sources"]["edf"]["rate_hz"])) == 2  # several rates from the multi-rate EDF files
    recs = {r.id: r for r in iter_records(index["pretrain"])}
    import obspy

    by_channel = {tr.stats.channel: tr.data for tr in obspy.read()}
    example = recs["seismic:obspy-example#0"]
    assert example.values.shape == (3, 3000)  # obspy's real 3-component seismogram, values untouched
    np.testing.assert_array_equal(example.values, np.stack([by_channel[c] for c in example.channel_names]).astype(np.float32))
    assert all(r.length <= 4000 and np.isfinite(r.values).all() for r in recs.values())

    for name, uri in index["tasks"].items():
        task = read_manifest(uri)["sources"][name]
        assert set(task["splits"]) == {"train", "test"}, name
        assert len(task["labels"]) >= 2, name
    bm = [r for r in iter_records(index["tasks"]["BasicMotions"])]
    assert {r.n_channels for r in bm} == {6} and {r.sampling_rate_hz for r in bm} == {10.0}

    assert main(["demo-data", "--out", str(out), "--size", "tiny"]) == 2  # never overwrites a corpus
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"records      {pre['n_records']} in" in text
    assert "seismic" in text and "GunPoint" in text and "train: " in text and "test: " in text
    assert "labels       none" in text  # the pretraining set is unlabelled
    assert main(["inspect", str(tmp_path / "nothing-here")]) == 2
