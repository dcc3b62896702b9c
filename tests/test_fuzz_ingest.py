"""jobs/fuzz_ingest.py, the fuzz harness of issue 14: on its CI budget every class of hostile and broken file is
tried through the real `step-dist ingest` and every promise holds; and its inputs are really hostile (a payload
does run when unpickled, a bomb does decode to what it claims, an external HDF5 dataset does hold the secret),
so a held promise means the code held, not that the harness was inert."""
from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import pickle
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "jobs"))

import fuzz_ingest as fuzz  # noqa: E402

# the classes of issue 14 (and the baseline of good files); the harness must keep a kind for each
ISSUE_CLASSES = {"no_code", "no_leak", "memory", "good", "silent_loss", "globs", "rates", "exactness", "broken", "messages"}


def _ctx(tmp_path, bomb_mb: int = 16) -> fuzz.Ctx:
    ctx = fuzz.Ctx(root=str(tmp_path), seed=0, src=str(tmp_path / "src"), src2=str(tmp_path / "second" / "src"),
                   mem_src=str(tmp_path / "mem-src"), outside=str(tmp_path / "outside"), bomb_bytes=bomb_mb << 20)
    for d in (ctx.src, ctx.src2, ctx.mem_src, os.path.join(ctx.outside, "markers")):
        os.makedirs(d, exist_ok=True)
    return ctx


def test_when_the_harness_runs_on_the_ci_budget_then_every_class_is_tried_and_every_promise_holds(tmp_path):
    out = tmp_path / "fuzz"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "jobs", "fuzz_ingest.py"), "--out", str(out), "--timeout", "150"],
                          capture_output=True, text=True, timeout=400)
    assert (out / "fuzz.json").exists(), proc.stdout[-2000:] + proc.stderr[-4000:]  # the harness itself broke
    report = json.loads((out / "fuzz.json").read_text())
    rows = report["rows"]
    assert ISSUE_CLASSES <= set(report["classes"]), report["classes"]
    for cls in ISSUE_CLASSES:  # each class really tried something and checked a promise on it
        mine = [r for r in rows if r["class"] == cls]
        assert sum(r["files"] for r in mine) and sum(r["held"] + r["broken"] for r in mine), cls
    broken = [f"[{f['promise']}] {f['file']}: {f['what']}" for r in rows for f in r["failures"]]
    assert proc.returncode == 0 and report["ok"], "\n".join(broken) + "\n" + proc.stdout[-3000:] + proc.stderr[-2000:]


def test_when_a_payload_file_is_loaded_the_careless_way_then_its_marker_appears(tmp_path):
    import obspy

    ctx = _ctx(tmp_path)
    for i, load in enumerate((
        lambda p: pickle.loads(open(p, "rb").read()),
        lambda p: obspy.read(p),  # format sniffing unpickles what looks like an obspy stream
    )):
        marker = ctx.marker(f"m{i}")
        path = fuzz._write(str(tmp_path / f"x{i}.mseed"), fuzz._payload(marker))
        try:
            load(path)
        except Exception:  # noqa: BLE001 - obspy then fails on what it unpickled; the payload already ran
            pass
        assert os.path.exists(marker), i
    marker = ctx.marker("npy")
    path = fuzz._npy(str(tmp_path / "o.npy"), fuzz._object_array(marker))
    np.load(path, allow_pickle=True)
    assert os.path.exists(marker)
    with pytest.raises(ValueError):
        np.load(fuzz._npy(str(tmp_path / "o2.npy"), fuzz._object_array(ctx.marker("npy2"))), allow_pickle=False)
    assert not os.path.exists(ctx.marker("npy2"))


def _drain(f) -> int:
    n = 0
    while chunk := f.read(8 << 20):
        n += len(chunk)
    return n


def test_when_bombs_are_built_then_they_are_small_and_decode_to_what_they_declare(tmp_path):
    ctx = _ctx(tmp_path, bomb_mb=48)
    size = ctx.bomb_bytes
    npz, = fuzz._npz_bomb(ctx, 0)
    tar, = fuzz._tar_xz_bomb(ctx, 0)
    lc, = fuzz._fits_gzip_bomb(ctx, 0)
    for e in (npz, tar, lc):
        assert os.path.getsize(e.path) < size // 100, e.path
    with zipfile.ZipFile(npz.path) as z, z.open("signal.npy") as f:  # the CRC is checked at the end
        assert np.lib.format.read_magic(f) == (1, 0)
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        assert shape[0] * dtype.itemsize + 128 == size and _drain(f) == size - 128
    with tarfile.open(tar.path, "r|*") as t:
        member = t.next()
        assert member.name == "inner.sac" and member.size == size - 1536
    with lzma.open(tar.path) as f:
        assert _drain(f) == size
    with gzip.open(lc.path) as f:
        from astropy.io import fits

        head = f.read(5760)
        assert fits.Header.fromstring(head[2880:].decode())["NAXIS2"] == (size - 5760) // 16
        assert _drain(f) == size - 5760
    h5, = fuzz._h5_unallocated(ctx, 0)
    assert os.path.getsize(h5.path) < 1 << 16


def test_when_leaky_files_are_read_naively_then_the_secret_comes_out(tmp_path):
    import h5py

    ctx = _ctx(tmp_path)
    leaks = fuzz._h5_external(ctx, 0) + fuzz._h5_external_link(ctx, 0) + fuzz._h5_virtual(ctx, 0)
    for e in leaks:
        with h5py.File(e.path, "r") as f:  # what `ingest --h5-dataset signal` asks for
            assert e.token in np.asarray(f["signal"][()]).tobytes(), e.path
    link, rel = fuzz._symlink_file(ctx, 0)
    assert link.token in np.load(link.path).tobytes()
    assert rel.token in open(rel.path, "rb").read()


def test_when_a_record_differs_or_a_secret_shows_then_the_checks_say_so(tmp_path):
    from step_dist.signals.record import SignalRecord

    want = np.arange(6, dtype=np.float32).reshape(2, 3)
    e = fuzz.Expect("/src/x.npy", records=[want], rate=100.0, cls="good", kind="k")
    rec = SignalRecord(id="s:x.npy#0", source="s", domain="d", sampling_rate_hz=100.0, values=want.copy(), uri="/src/x.npy")
    run = fuzz.Run("main", [], rc=3, manifest={"quarantined": [], "skipped": []}, records={"/src/x.npy": [rec]})
    assert all(v is None for v in fuzz.check(e, run, 1 << 30).values())
    changed = want.copy()
    changed[1, 2] = np.nextafter(changed[1, 2], np.float32(9))  # one ulp
    run.records["/src/x.npy"] = [SignalRecord(id=rec.id, source="s", domain="d", sampling_rate_hz=250.0, values=changed, uri=rec.uri)]
    res = fuzz.check(e, run, 1 << 30)
    assert "1 of 6 values differ" in res["bit_exact"] and "250 Hz" in res["rate"]
    run.records, run.manifest = {}, {"quarantined": [{"uri": "/src/x.npy.gz", "reason": "about /src/x.npy.gz"}], "skipped": []}
    assert "neither written" in fuzz.check(e, run, 1 << 30)["accounted"]  # x.npy.gz does not name x.npy
    leak = fuzz.Expect("/src/l.h5", token=b"0123abcd" * 4)
    run.stderr = "reading /src/l.h5: " + "0123abcd" * 4
    assert "command output" in fuzz.check(leak, run, 1 << 30)["no_leak"]
