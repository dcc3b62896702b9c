"""SciTS JSONL from someone else: a row cannot make evaluate read outside the set, allocate without bound, or
end in a traceback. Every file here is real (numpy, soundfile, mne); bad rows are set aside with a reason
while the good row beside them is kept unchanged."""
from __future__ import annotations

import io
import json
import os
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from step_dist import storage
from step_dist.evaluate.scits import ingest_scits, read_scits

# a pattern no good row holds: if these bytes turn up in what SciTS returns or writes, the secret leaked
SECRET = (np.arange(256, dtype=np.float32) * 3.25 + 12345.5).astype(np.float32)
GOOD = np.linspace(-1, 1, 300, dtype=np.float32)


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _jsonl(path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _written(out_dir) -> bytes:
    """Every byte ingest_scits wrote, with the Parquet cells decoded (the shards are zstd-compressed, so the
    raw file bytes alone would hide a leak)."""
    blob = b""
    for folder, _, files in os.walk(out_dir):
        for name in files:
            path = os.path.join(folder, name)
            blob += open(path, "rb").read()
            if name.endswith(".parquet"):
                for column in pq.read_table(path).columns:
                    for cell in column.to_pylist():
                        blob += cell if isinstance(cell, bytes) else str(cell).encode()
    return blob


def _no_secret(result, out_dir=None) -> None:
    secret = SECRET.tobytes()[:64]
    assert all(secret not in r.values.tobytes() for r in result.records)
    if out_dir is not None:
        assert secret not in _written(out_dir)


@pytest.fixture
def dataset(tmp_path):
    """A SciTS root holding one good .npy; a 'secret' .npy outside it; a link inside it pointing at the secret."""
    root, outside = tmp_path / "set", tmp_path / "outside"
    (root / "data").mkdir(parents=True)
    outside.mkdir()
    (root / "data" / "good.npy").write_bytes(_npy(GOOD))
    secret = outside / "secret.npy"
    secret.write_bytes(_npy(SECRET))
    os.symlink(secret, root / "data" / "link.npy")
    return root, secret


def _good_row() -> dict:
    return {"id": "good", "path": "data/good.npy", "label": "a", "sampling_rate_hz": 100}


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "file_uri"])
def test_when_a_row_names_a_file_outside_the_root_then_it_is_set_aside_and_the_file_is_not_read(dataset, tmp_path, kind):
    root, secret = dataset
    path = {"absolute": str(secret), "dotdot": "data/../../outside/secret.npy", "symlink": "data/link.npy",
            "file_uri": f"file://{secret}"}[kind]
    evil = {"id": "evil", "path": path, "label": "b", "sampling_rate_hz": 100}
    jsonl = _jsonl(root / "train.jsonl", [_good_row(), evil])

    out = tmp_path / "shards"
    summary = ingest_scits(jsonl, str(out))
    result = read_scits(jsonl)

    assert [r.id for r in result.records] == ["good"]
    np.testing.assert_array_equal(result.records[0].values, GOOD[None, :])  # the good row is unchanged
    (aside,) = result.set_aside
    assert aside["id"] == "evil" and aside["line"] == 2
    assert path in aside["reason"] and ("root" in aside["reason"])
    assert summary["records"] == 1 and summary["set_aside"] == 1
    _no_secret(result, out)


def test_when_a_row_names_another_bucket_then_it_is_set_aside_and_nothing_is_fetched(s3_bucket, s3_server, tmp_path):
    import boto3

    other = s3_bucket + "-other"
    boto3.client("s3", endpoint_url=s3_server.endpoint).create_bucket(Bucket=other[len("s3://"):])
    storage.write_bytes(f"{other}/secret.npy", _npy(SECRET))
    storage.write_bytes(f"{s3_bucket}/set/data/good.npy", _npy(GOOD))
    rows = [_good_row(), {"id": "evil", "path": f"{other}/secret.npy", "label": "b", "sampling_rate_hz": 100}]
    storage.write_bytes(f"{s3_bucket}/set/train.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())

    out = tmp_path / "shards"
    ingest_scits(f"{s3_bucket}/set", str(out))
    result = read_scits(f"{s3_bucket}/set")

    assert [r.id for r in result.records] == ["good"]
    (aside,) = result.set_aside
    assert aside["id"] == "evil" and "is a URI" in aside["reason"] and f"{other}/secret.npy" in aside["reason"]
    _no_secret(result, out)


def _flac_declaring(frames: int) -> bytes:
    """A real 100-frame FLAC whose STREAMINFO says it holds ``frames`` frames (a few bytes to change)."""
    buf = io.BytesIO()
    sf.write(buf, np.zeros((100, 2), np.float32), 100, format="FLAC", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    info = int.from_bytes(data[8:42], "big")  # STREAMINFO: ..., 36 bits of total samples, then a 128-bit MD5
    info = (info & ~(((1 << 36) - 1) << 128)) | (frames << 128)
    data[8:42] = info.to_bytes(34, "big")
    return bytes(data)


def _npy_declaring(shape: tuple) -> bytes:
    """A valid .npy header promising ``shape`` float32, followed by a few bytes."""
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = shape
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + b"\0" * 64


@pytest.mark.parametrize("name,data", [
    ("bomb.flac", _flac_declaring((1 << 36) - 1)),  # 2 x 6.9e10 frames = 512 GiB of float32, in 100 bytes
    ("bomb.npy", _npy_declaring((1 << 40,))),  # 4 TiB of float32, in 200 bytes
    ("wide.npy", _npy_declaring((1 << 20, 1 << 20))),
])
def test_when_a_header_declares_a_huge_signal_then_the_row_is_set_aside_for_size_before_decoding(tmp_path, name, data):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "good.npy").write_bytes(_npy(GOOD))
    (tmp_path / "data" / name).write_bytes(data)
    bomb = {"id": "bomb", "path": f"data/{name}", "label": "b", "fs": 1}
    jsonl = _jsonl(tmp_path / "train.jsonl", [_good_row(), bomb])

    result = read_scits(jsonl)

    assert [r.id for r in result.records] == ["good"]
    (aside,) = result.set_aside
    # the reason is the declared size (not a MemoryError or an EOF found after allocating)
    assert "too large" in aside["reason"] and "declares" in aside["reason"] and name in aside["reason"]


def _wav(n: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros((n, 2), np.float32), 100, format="WAV", subtype="FLOAT")
    return buf.getvalue()


@pytest.mark.parametrize("name,data,limit", [
    ("a.wav", _wav(1000), {"max_record_bytes": 4000}),  # 2 x 1000 float32 = 8000 bytes
    ("a.npy", _npy(np.zeros((1000, 2), np.float32)), {"max_record_bytes": 4000}),
    ("a.csv", b"1,2\n" * 1000, {"max_record_bytes": 4000}),
    ("a.npy", _npy(np.zeros((1000, 2), np.float32)), {"max_file_bytes": 1000}),
])
def test_when_a_signal_is_over_the_ingest_limits_then_it_is_set_aside_and_under_them_it_is_kept(tmp_path, name, data, limit):
    (tmp_path / name).write_bytes(data)
    jsonl = _jsonl(tmp_path / "train.jsonl", [{"id": "x", "path": name, "label": "a", "fs": 100}])

    assert [r.shape for r in (rec.values for rec in read_scits(jsonl).records)] == [(2, 1000)]
    result = read_scits(jsonl, **limit)
    assert result.records == []
    (aside,) = result.set_aside
    assert "MiB" in aside["reason"] and name in aside["reason"]


def test_when_jsonl_lines_are_malformed_then_each_is_set_aside_with_its_line_number(tmp_path):
    (tmp_path / "good.npy").write_bytes(_npy(GOOD))
    good = json.dumps({"id": "good", "path": "good.npy", "label": "a", "fs": 10}).encode()
    lines = [
        good,
        b"{not json",
        b'{"id": "latin1", "label": "caf\xe9"}',  # not UTF-8
        b"[" * 2000 + b"]" * 2000,  # deeper than Python's stack: RecursionError inside json
        b'{"id": "digits", "fs": ' + b"9" * 4400 + b"}",  # past Python's int-digits limit: ValueError
        json.dumps({"id": "good2", "path": "good.npy", "label": "b", "fs": 10}).encode(),
    ]
    (tmp_path / "train.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    result = read_scits(str(tmp_path / "train.jsonl"))

    assert [r.id for r in result.records] == ["good", "good2"]
    by_line = {r["line"]: r["reason"] for r in result.set_aside}
    assert sorted(by_line) == [2, 3, 4, 5]
    assert "not valid JSON" in by_line[2]
    assert "not UTF-8" in by_line[3] and "0xe9" in by_line[3]
    assert "RecursionError" in by_line[4] and "ValueError" in by_line[5]


def test_when_a_jsonl_line_is_over_max_line_bytes_then_it_is_set_aside_before_it_is_parsed(tmp_path):
    (tmp_path / "good.npy").write_bytes(_npy(GOOD))
    rows = [{"id": "long", "path": "good.npy", "label": "x" * 5000, "fs": 10},
            {"id": "good", "path": "good.npy", "label": "a", "fs": 10}]
    result = read_scits(_jsonl(tmp_path / "train.jsonl", rows), max_line_bytes=4096)

    assert [r.id for r in result.records] == ["good"]
    (aside,) = result.set_aside
    assert aside["line"] == 1 and "max_line_bytes" in aside["reason"]


def test_when_row_fields_have_the_wrong_types_then_the_row_is_set_aside_not_a_traceback(tmp_path):
    (tmp_path / "good.npy").write_bytes(_npy(GOOD))
    rows = [
        {"id": "rate", "path": "good.npy", "label": "a", "sampling_rate_hz": "fast"},
        {"id": "names", "path": "good.npy", "label": "a", "fs": 10, "channel_names": 5},
        {"id": "path", "input_ts": {"original": {"ori_path": 7}}, "label": "a", "fs": 10},
    ]
    result = read_scits(_jsonl(tmp_path / "train.jsonl", rows))

    assert [r.id for r in result.records] == ["names"]  # names that are not a list are not used
    assert result.records[0].channel_names == ["ch0"]
    reasons = {r["id"]: r["reason"] for r in result.set_aside}
    assert "'fast' is not a number" in reasons["rate"] and "7 is not a file name" in reasons["path"]


def test_when_a_jsonl_is_over_its_size_limit_then_it_is_set_aside_whole_and_the_others_are_read(tmp_path):
    (tmp_path / "good.npy").write_bytes(_npy(GOOD))
    _jsonl(tmp_path / "train.jsonl", [{"id": "a", "path": "good.npy", "label": "a", "fs": 10}])
    _jsonl(tmp_path / "test.jsonl", [{"id": f"b{i}", "path": "good.npy", "label": "b", "fs": 10} for i in range(50)])

    result = read_scits(str(tmp_path), max_jsonl_bytes=1000)

    assert [r.id for r in result.records] == ["a"]
    (aside,) = result.set_aside
    assert aside["jsonl"].endswith("test.jsonl") and aside["line"] is None and "max_jsonl_bytes" in aside["reason"]


def _read_or_release(jsonl: str, fifos: list) -> object:
    """read_scits(jsonl) in a thread; if it blocks (opening one of ``fifos``), release it and fail."""
    done: list = []
    reader = threading.Thread(target=lambda: done.append(read_scits(jsonl)), daemon=True)
    reader.start()
    reader.join(timeout=30)
    if reader.is_alive():  # blocked opening a FIFO: give it a writer so that the test process can end
        for fifo in fifos:
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass  # no reader waits on this one
        reader.join(timeout=10)
        pytest.fail("read_scits blocked on a FIFO")
    return done[0]


def test_when_a_row_names_a_fifo_then_it_is_set_aside_without_waiting_for_a_writer(tmp_path):
    os.mkfifo(tmp_path / "pipe.npy")
    jsonl = _jsonl(tmp_path / "train.jsonl", [{"id": "p", "path": "pipe.npy", "label": "a", "fs": 10}])
    result = _read_or_release(jsonl, [tmp_path / "pipe.npy"])
    assert result.records == [] and "FIFO" in result.set_aside[0]["reason"]


def test_when_a_wav_is_not_audio_then_libsndfile_never_probes_for_a_resource_fork(tmp_path, monkeypatch):
    # libsndfile, given bytes it does not recognise, opens "._<name>" beside a path (or "._" in the working
    # folder for a stream) looking for a Mac resource fork: a FIFO there would block evaluate for ever
    (tmp_path / "x.wav").write_bytes(np.random.default_rng(0).bytes(4000))
    fifos = [tmp_path / "._x.wav", tmp_path / "._"]
    for fifo in fifos:
        os.mkfifo(fifo)
    monkeypatch.chdir(tmp_path)
    jsonl = _jsonl(tmp_path / "train.jsonl", [{"id": "x", "path": "x.wav", "label": "a"}])
    result = _read_or_release(jsonl, fifos)
    assert result.records == [] and "not a WAV or FLAC" in result.set_aside[0]["reason"]


# ---- .fif (mne, the eeg extra) -------------------------------------------------------------------------------

def _fif_split_set(folder, outside, values: np.ndarray) -> None:
    """A real split .fif set saved by mne, then its link to the second part rewritten (same length) to climb
    out of the folder, and the second part moved there: the first part alone holds none of its samples."""
    mne = pytest.importorskip("mne")
    raw = mne.io.RawArray(values, mne.create_info(["a", "b"], 100.0, "eeg"), verbose=False)
    raw.save(folder / "aaaaaaaaaaaaaaaa_raw.fif", split_size="2MB", overwrite=True, verbose=False)
    first = (folder / "aaaaaaaaaaaaaaaa_raw.fif").read_bytes()
    assert first.count(b"aaaaaaaaaaaaaaaa_raw-1.fif") == 1
    (folder / "aaaaaaaaaaaaaaaa_raw.fif").write_bytes(
        first.replace(b"aaaaaaaaaaaaaaaa_raw-1.fif", b"../out/aaaaaaaaa_raw-1.fif"))
    os.replace(folder / "aaaaaaaaaaaaaaaa_raw-1.fif", outside / "aaaaaaaaa_raw-1.fif")


def test_when_a_fif_names_a_next_file_outside_the_root_then_the_row_is_set_aside_and_that_file_is_not_read(tmp_path):
    root, outside = tmp_path / "set", tmp_path / "out"
    root.mkdir()
    outside.mkdir()
    values = np.random.default_rng(0).standard_normal((2, 200_000)) * 1e-6
    _fif_split_set(root, outside, values)
    jsonl = _jsonl(root / "train.jsonl", [{"id": "eeg", "path": "aaaaaaaaaaaaaaaa_raw.fif", "label": "a"}])

    result = read_scits(jsonl)

    assert result.records == []
    (aside,) = result.set_aside
    assert "split set" in aside["reason"] and "aaaaaaaaaaaaaaaa_raw.fif" in aside["reason"]


def test_when_a_fif_is_over_the_record_limit_then_it_is_set_aside_and_under_it_it_is_kept(tmp_path):
    mne = pytest.importorskip("mne")
    values = np.random.default_rng(1).standard_normal((2, 1000)) * 1e-6
    mne.io.RawArray(values, mne.create_info(["a", "b"], 250.0, "eeg"), verbose=False).save(
        tmp_path / "x_raw.fif", verbose=False)
    jsonl = _jsonl(tmp_path / "train.jsonl", [{"id": "eeg", "path": "x_raw.fif", "label": "a"}])

    (kept,) = read_scits(jsonl).records
    np.testing.assert_allclose(kept.values, values.astype(np.float32), rtol=1e-6)
    assert kept.sampling_rate_hz == 250.0 and kept.channel_names == ["a", "b"]
    result = read_scits(jsonl, max_record_bytes=4000)
    assert result.records == [] and "declares 2 x 1000" in result.set_aside[0]["reason"]
