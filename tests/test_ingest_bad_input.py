"""Bad input mixed with good: the good records all land, each bad file or record is quarantined with a reason
that names it, and the exit code and summary say so."""
from __future__ import annotations

import json

import numpy as np
import obspy
import soundfile as sf

from step_dist.cli import main
from step_dist.signals.shards import iter_records, read_manifest


def _good_files(raw):
    raw.mkdir(parents=True, exist_ok=True)
    wav = np.random.default_rng(1).standard_normal((1, 600)).astype(np.float32)
    sf.write(raw / "good.wav", wav.T, 8000, subtype="FLOAT")
    np.savetxt(raw / "good.csv", np.random.default_rng(2).standard_normal((50, 2)), delimiter=",", header="a,b", comments="")
    return wav


def _nan_file(raw, all_nan: bool):
    x = np.random.default_rng(3).standard_normal((2, 100)).astype(np.float32)
    if all_nan:
        x[:] = np.nan
    else:
        x[0, 10:13] = np.nan
        x[1, 50] = np.inf
    np.save(raw / "spiky.npy", x)
    (raw / "spiky.npy.json").write_text(json.dumps({"sampling_rate_hz": 10.0}))
    return x


def test_when_corrupt_nan_and_unknown_files_are_mixed_with_good_ones_then_good_land_and_bad_are_quarantined(tmp_path, ray_local, capsys):
    raw = tmp_path / "raw"
    wav = _good_files(raw)
    _nan_file(raw, all_nan=True)
    (raw / "broken.edf").write_bytes(b"0       this is not an EDF header" + bytes(300))
    obspy.read().write(str(tmp_path / "full.mseed"), format="MSEED")
    (raw / "cut.mseed").write_bytes((tmp_path / "full.mseed").read_bytes()[:700])  # a truncated download
    (raw / "notes.xyz").write_text("not a signal")
    np.save(raw / "flat.npy", np.full((1, 64), 3.0, np.float32))
    np.save(raw / "empty.npy", np.zeros((1, 0), np.float32))
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\ngood.wav,speech\nghost.wav,bird\n")
    out = tmp_path / "shards"

    rc = main(["ingest", str(raw), str(tmp_path / "missing-folder"), "--out", str(out), "--rate", "100",
               "--labels", str(labels), "--source", "mix"])
    printed = capsys.readouterr().out

    assert rc == 3
    m = read_manifest(str(out))
    reasons = {(q["id"] or q["uri"]).split("/")[-1]: q["reason"] for q in m["quarantined"]}
    assert "unreadable .edf" in reasons["broken.edf"] and "corrupt" in reasons["broken.edf"]
    assert "cut.mseed" in reasons
    assert "non-finite" in reasons["mix:spiky.npy#0"] and "nan policy" in reasons["mix:spiky.npy#0"]
    assert "unknown extension '.xyz'" in reasons["notes.xyz"]
    assert "constant" in reasons["mix:flat.npy#0"]
    assert "zero-length" in reasons["mix:empty.npy#0"]
    assert "does not exist" in reasons["missing-folder"]
    assert "'ghost.wav'" in reasons["labels.csv"]
    assert m["n_quarantined"] == len(m["quarantined"]) == 8
    for name in ("broken.edf", "cut.mseed", "spiky.npy", "notes.xyz", "flat.npy", "ghost.wav", "missing-folder"):
        assert name in printed, name
    assert "quarantined 8" in printed
    got = {r.id: r for r in iter_records(str(out))}
    assert sorted(got) == ["mix:good.csv#0", "mix:good.wav#0"]
    np.testing.assert_array_equal(got["mix:good.wav#0"].values, wav)
    assert got["mix:good.wav#0"].label == "speech" and got["mix:good.csv#0"].label is None
    assert got["mix:good.csv#0"].channel_names == ["a", "b"] and got["mix:good.csv#0"].sampling_rate_hz == 100.0


def test_when_nan_policy_is_interpolate_then_the_repair_is_recorded_and_finite_samples_are_untouched(tmp_path, ray_local):
    raw = tmp_path / "raw"
    raw.mkdir()
    x = _nan_file(raw, all_nan=False)
    rc = main(["ingest", str(raw), "--out", str(tmp_path / "s"), "--nan-policy", "interpolate"])
    assert rc == 0
    (rec,) = list(iter_records(str(tmp_path / "s")))
    assert rec.meta["nan_policy"] == {"policy": "interpolate", "samples_repaired": 4}
    ok = np.isfinite(x)
    np.testing.assert_array_equal(rec.values[ok], x[ok])
    np.testing.assert_allclose(rec.values[0, 10:13], np.interp([10, 11, 12], [9, 13], x[0, [9, 13]]), rtol=1e-6)
    assert rec.source == "raw"  # named after its folder when --source is not given


def test_when_nothing_is_readable_or_the_output_exists_then_exit_code_is_2_with_a_message(tmp_path, ray_local, capsys):
    assert main(["ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "no record was written" in err and "does not exist: 1" in err  # says why nothing was written
    raw = tmp_path / "raw"
    _good_files(raw)
    assert main(["ingest", str(raw), "--out", str(tmp_path / "t"), "--rate", "5"]) == 0
    assert main(["ingest", str(raw), "--out", str(tmp_path / "t"), "--rate", "5"]) == 2
    assert "already holds a shard set" in capsys.readouterr().err
