"""Every readable format, written by the format's own library, ingested from a local folder and from a real
S3 API (moto on 127.0.0.1), read back with Ray Data, and compared bit-for-bit with what was written."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from step_dist.signals.ingest import ingest
from step_dist.signals.readers import ReaderOptions
from step_dist.signals.record import SignalRecord
from step_dist.signals.shards import read_dataset, read_manifest

RNG = np.random.default_rng(7)


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def write_corpus(folder: str) -> dict[str, tuple[np.ndarray, float, str | None]]:
    """One file per format. Returns {record id: (expected float32 values, rate, label)}."""
    import h5py
    import obspy
    import pandas as pd
    import pyedflib
    import soundfile as sf
    from aeon.datasets._data_writers import save_to_ts_file
    from astropy.table import Table

    os.makedirs(folder, exist_ok=True)
    p = lambda name: os.path.join(folder, name)  # noqa: E731
    exp: dict[str, tuple[np.ndarray, float, str | None]] = {}

    x = _f32(2, 800) * 0.3
    sf.write(p("tone.wav"), x.T, 16000, subtype="FLOAT")
    exp["c:tone.wav#0"] = (x, 16000.0, None)

    pcm = (RNG.integers(-2000, 2000, size=(1, 500))).astype(np.int16)
    sf.write(p("call.flac"), pcm.T, 8000, subtype="PCM_16")
    exp["c:call.flac#0"] = (sf.read(p("call.flac"), dtype="float32", always_2d=True)[0].T, 8000.0, None)

    # EDF with two rates: one record per rate group
    sigs = [RNG.uniform(-100, 100, 256 * 4), RNG.uniform(-100, 100, 256 * 4), RNG.uniform(-100, 100, 4 * 4)]
    hdrs = [pyedflib.highlevel.make_signal_header(n, sample_frequency=f) for n, f in (("EEG1", 256), ("EEG2", 256), ("SpO2", 4))]
    pyedflib.highlevel.write_edf(p("sleep.edf"), sigs, hdrs)
    back = pyedflib.highlevel.read_edf(p("sleep.edf"))[0]
    exp["c:sleep.edf#0"] = (np.stack(back[:2]).astype(np.float32), 256.0, None)
    exp["c:sleep.edf#1"] = (np.asarray(back[2:]).astype(np.float32), 4.0, None)

    z = _f32(3, 1200)
    st = obspy.Stream([obspy.Trace(z[i], header={"network": "XX", "station": "STA", "channel": c, "sampling_rate": 50.0})
                       for i, c in enumerate(("BHE", "BHN", "BHZ"))])
    st.write(p("quake.mseed"), format="MSEED", encoding="FLOAT32")
    exp["c:quake.mseed#0"] = (z, 50.0, None)
    s1 = _f32(1, 700)
    obspy.Trace(s1[0], header={"station": "ONE", "channel": "HHZ", "sampling_rate": 0.1}).write(p("slow.sac"), format="SAC")
    exp["c:slow.sac#0"] = (s1, 0.1, None)

    a = _f32(4, 300)
    np.save(p("arr.npy"), a)
    with open(p("arr.npy.json"), "w") as f:  # sidecar: the rate an NPY file cannot carry
        json.dump({"sampling_rate_hz": 250.0}, f)
    exp["c:arr.npy#0"] = (a, 250.0, None)
    b = _f32(3, 2, 90)
    np.savez(p("batch.npz"), x=b, fs=np.float64(1e-6), labels=np.array(["a", "b", "a"]))
    for i in range(3):
        exp[f"c:batch.npz#{i}"] = (b[i], 1e-6, "ab"[i % 2])

    c = _f32(2, 400)
    t = np.arange(400) / 125.0
    pd.DataFrame({"time": t, "x": c[0].astype(np.float64), "y": c[1].astype(np.float64)}).to_csv(p("table.csv"), index=False)
    exp["c:table.csv#0"] = (c, 125.0, None)

    h = _f32(2, 3, 256)
    with h5py.File(p("lab.h5"), "w") as f:
        ds = f.create_dataset("signals/strain", data=h)
        ds.attrs["sampling_rate_hz"] = 4096.0
        f.create_dataset("other/notes", data=np.arange(10))
    for i in range(2):
        exp[f"c:lab.h5#{i}"] = (h[i], 4096.0, None)

    tt = np.sort(RNG.uniform(0, 30, 600))  # irregular cadence, days
    flux = _f32(600) + 100
    tab = Table({"TIME": tt, "FLUX": flux, "FLUX_ERR": np.ones(600, np.float32)})
    tab["TIME"].unit = "d"
    tab.write(p("star.fits"), format="fits")
    exp["c:star.fits#0"] = (flux[None, :], 1.0 / (np.median(np.diff(tt)) * 86400.0), None)

    cases = [_f32(2, n) for n in (40, 55, 31)]
    save_to_ts_file([v.astype(np.float64) for v in cases], np.array(["up", "down", "up"]), label_type="classification",
                    path=folder, problem_name="Motion", file_suffix="_TRAIN")
    for i, v in enumerate(cases):
        exp[f"c:Motion_TRAIN.ts#{i}"] = (v, 1.0, ["up", "down", "up"][i])
    return exp


def _check(out: str, exp: dict) -> dict:
    manifest = read_manifest(out)
    assert manifest["n_quarantined"] == 0, manifest["quarantined"]
    rows = read_dataset(out).take_all()
    got = {r["id"]: SignalRecord.from_row(r) for r in rows}
    assert sorted(got) == sorted(exp)
    for rid, (values, rate, label) in exp.items():
        rec = got[rid]
        assert rec.values.shape == values.shape, rid
        # bit-for-bit: compare the raw float32 words
        np.testing.assert_array_equal(rec.values.view("<u4"), np.ascontiguousarray(values, "<f4").view("<u4"), err_msg=rid)
        assert rec.sampling_rate_hz == pytest.approx(rate, rel=1e-9), rid
        assert rec.label == label, rid
        assert rec.index == int(rid.rsplit("#", 1)[1]) and rec.uri.endswith(rid.split(":")[1].split("#")[0])
    assert manifest["n_records"] == len(exp)
    assert manifest["total_samples"] == sum(v.size for v, _, _ in exp.values())
    return got


@pytest.mark.slow  # ~15-35 s on 2 shared cores: Ray workers import every format library
def test_when_every_format_is_ingested_from_a_local_folder_then_ray_data_reads_the_values_back_bit_for_bit(tmp_path, ray_local):
    exp = write_corpus(str(tmp_path / "raw"))
    res = ingest([str(tmp_path / "raw")], str(tmp_path / "shards"), ReaderOptions(source="c", domain="mixed", h5_dataset="signals/strain"), shard_mb=0.02)
    got = _check(str(tmp_path / "shards"), exp)
    assert res.files_failed == 0
    assert len(res.manifest["shards"]) > 1  # rolled by bytes
    # the format details a user needs later are kept
    assert got["c:sleep.edf#1"].channel_names == ["SpO2"] and got["c:sleep.edf#0"].meta["rate_groups"] == [256.0, 4.0]
    assert got["c:quake.mseed#0"].channel_names == ["BHE", "BHN", "BHZ"]
    assert got["c:star.fits#0"].meta["cadence"] == "irregular"
    assert got["c:Motion_TRAIN.ts#0"].split == "train" and got["c:Motion_TRAIN.ts#0"].meta["rate_known"] is False


@pytest.mark.slow
def test_when_the_files_sit_in_s3_then_ingest_reads_them_there_and_writes_shards_back_to_s3(tmp_path, s3_bucket, ray_local):
    import s3fs

    exp = write_corpus(str(tmp_path / "raw"))
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]})
    fs.put(str(tmp_path / "raw") + "/", f"{s3_bucket[5:]}/raw/", recursive=True)
    out = f"{s3_bucket}/shards/v1"
    ingest([f"{s3_bucket}/raw"], out, ReaderOptions(source="c", h5_dataset="signals/strain"))
    _check(out, exp)
    assert fs.exists(f"{s3_bucket[5:]}/shards/v1/_manifest.json")
