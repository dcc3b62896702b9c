"""Hostile and careless HDF5, NPZ and CSV files (issue 14): ingest reads nothing outside SRC, bounds every
declared size before decoding it, and loses or changes no record silently. Every file here is written by
h5py, numpy's own format module or pandas/numpy, as a user's tools would write it."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import h5py
import numpy as np
import pandas as pd
import pytest

from step_dist.cli import main
from step_dist.signals.shards import iter_records, read_manifest

# 64 bytes, a whole number of float32 words, so a leak would land in the shards as the file's exact bytes
SECRET = b"aws_secret_access_key = wJalrXUtnFEMI/K7MDENG+bPxRfiCY-stepdist\n"
N_WORDS = len(SECRET) // 4


def _reasons(out) -> dict[str, str]:
    return {(q["id"] or q["uri"]).split("/")[-1]: q["reason"] for q in read_manifest(str(out))["quarantined"]}


def _hostile_hdf5(tmp_path):
    """A credentials file and an HDF5 copy of it outside SRC, and three files in SRC that point at them."""
    outside = tmp_path / "outside"
    outside.mkdir()
    cred = outside / "credentials"
    cred.write_bytes(SECRET)
    with h5py.File(outside / "secret.h5", "w") as f:
        f["data"] = np.frombuffer(SECRET, "<f4")[None, :]
    raw = tmp_path / "raw"
    raw.mkdir()
    with h5py.File(raw / "storage.h5", "w") as f:  # samples kept in another file, read through the dataset
        f.create_dataset("sig", shape=(1, N_WORDS), dtype="<f4", external=[(str(cred), 0, len(SECRET))])
    with h5py.File(raw / "link.h5", "w") as f:
        f["sig"] = h5py.ExternalLink(str(outside / "secret.h5"), "/data")
    with h5py.File(raw / "virtual.h5", "w") as f:
        layout = h5py.VirtualLayout(shape=(1, N_WORDS), dtype="<f4")
        layout[:] = h5py.VirtualSource(str(outside / "secret.h5"), "data", shape=(1, N_WORDS))
        f.create_virtual_dataset("sig", layout)
    good = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    with h5py.File(raw / "good.h5", "w") as f:
        f["sig"] = good
    return raw, good


@pytest.mark.slow
def test_when_hdf5_files_point_at_a_file_outside_src_then_each_is_quarantined_and_its_bytes_appear_nowhere(tmp_path, ray_local):
    raw, good = _hostile_hdf5(tmp_path)
    out = tmp_path / "shards"

    rc = main(["ingest", str(raw), "--out", str(out), "--rate", "100", "--h5-dataset", "sig", "--source", "h"])

    assert rc == 3
    reasons = _reasons(out)
    assert "external file" in reasons["storage.h5"] and "credentials" in reasons["storage.h5"]
    assert "external link" in reasons["link.h5"]
    assert "virtual dataset" in reasons["virtual.h5"]
    got = {r.id: r for r in iter_records(str(out))}
    assert sorted(got) == ["h:good.h5#0"]
    np.testing.assert_array_equal(got["h:good.h5#0"].values, good)
    leaked = np.frombuffer(SECRET, "<f4")
    assert not any(np.isin(r.values, leaked).any() for r in got.values())
    for path in out.rglob("*"):  # nor, byte for byte, in the manifest, a message or any other file written
        if path.is_file():
            assert SECRET[:24] not in path.read_bytes() and SECRET[-24:] not in path.read_bytes(), path


PEAK = """
import json, resource, sys
import h5py, pandas  # imported before the baseline: only what reading the file costs is measured
from step_dist.signals.ingest import read_and_check
from step_dist.signals.readers import ReaderOptions
from step_dist.signals.validate import ValidationConfig
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
_, bad, failed = read_and_check(sys.argv[1], "bomb", ReaderOptions(source="b", rate_hz=1.0), ValidationConfig())
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"grew_mib": grew / 1024, "reasons": [b["reason"] for b in bad]}))
"""


def _ingest_step_peak(path) -> dict:
    """The per-file step ingest runs in its Ray tasks, in a fresh process whose peak RSS is measured."""
    done = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _npz_of_zeros(path, n: int) -> None:
    """What np.savez_compressed writes for x = np.zeros(n, float32), fs = 1.0, without holding x in memory."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("fs.npy", "w") as f:
            np.lib.format.write_array(f, np.float64(1.0))
        with z.open("x.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
            block = bytes(64 << 20)
            for _ in range(n * 4 // len(block)):
                f.write(block)


@pytest.mark.slow
def test_when_small_files_declare_a_gigabyte_then_they_are_quarantined_for_size_without_allocating_it(tmp_path):
    n = 2**28  # 1 GiB of float32 each
    with h5py.File(tmp_path / "bomb.h5", "w") as f:  # declared, never written: 1.4 KB on disk
        f.create_dataset("sig", shape=(n,), dtype="<f4", chunks=(1 << 20,), compression="gzip")
    _npz_of_zeros(tmp_path / "bomb.npz", n)
    assert (tmp_path / "bomb.h5").stat().st_size < 4096 and (tmp_path / "bomb.npz").stat().st_size < 2 << 20

    for name in ("bomb.h5", "bomb.npz"):
        got = _ingest_step_peak(tmp_path / name)
        assert len(got["reasons"]) == 1 and "too large" in got["reasons"][0], (name, got)
        assert "checked before decoding" in got["reasons"][0]
        assert got["grew_mib"] < 100, (name, got)  # against 1024 MiB decoded


def _careless_files(raw):
    rng = np.random.default_rng(1)
    a, c = rng.standard_normal((2, 50)).astype(np.float32), rng.standard_normal((1, 40)).astype(np.float32)
    np.savez(raw / "three.npz", a=a, b=np.array([{"pickled": 1}], dtype=object), c=c, fs=np.float64(10.0))
    table = rng.standard_normal((30, 2)).astype(np.float32)
    np.savetxt(raw / "headerless.csv", table.astype(np.float64), delimiter=",")  # no header line
    t = np.arange(200) / 250.0
    timed = rng.standard_normal(200).astype(np.float32)
    pd.DataFrame({"time": t, "x": timed.astype(np.float64)}).to_csv(raw / "timed.csv", index=False)
    return a, c, table, timed


@pytest.mark.slow
def test_when_an_npz_array_fails_or_a_csv_has_no_header_or_a_time_column_then_nothing_is_lost_or_overridden(tmp_path, ray_local):
    raw = tmp_path / "raw"
    raw.mkdir()
    a, c, table, timed = _careless_files(raw)
    out = tmp_path / "shards"

    rc = main(["ingest", str(raw), "--out", str(out), "--rate", "100", "--source", "l"])

    assert rc == 3
    reasons = _reasons(out)
    assert list(reasons) == ["l:three.npz#1"] and "'b'" in reasons["l:three.npz#1"] and "pickle" in reasons["l:three.npz#1"]
    got = {r.id: r for r in iter_records(str(out))}
    # the arrays on either side of the bad one are both kept, bit for bit
    assert got["l:three.npz#0"].meta["array"] == "a" and got["l:three.npz#2"].meta["array"] == "c"
    np.testing.assert_array_equal(got["l:three.npz#0"].values, a)
    np.testing.assert_array_equal(got["l:three.npz#2"].values, c)
    # a headerless CSV keeps its first row as data; --rate fills its rate
    headerless = got["l:headerless.csv#0"]
    assert headerless.values.shape == (2, 30) and headerless.meta["csv_header"] is False
    np.testing.assert_array_equal(headerless.values, table.T)
    assert headerless.sampling_rate_hz == 100.0 and headerless.meta["rate_source"] == "--rate"
    # the measured 250 Hz of a time column is kept over --rate 100
    rec = got["l:timed.csv#0"]
    assert rec.sampling_rate_hz == pytest.approx(250.0, rel=1e-9) and rec.meta["rate_source"] == "file"
    np.testing.assert_array_equal(rec.values[0], timed)
