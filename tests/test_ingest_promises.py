"""What ingest promises whatever the format: nothing is lost or changed silently, links never lead out of a
SRC, record ids are unique by path, a file's own rate wins over --rate, and usage problems are clear errors
(exit 2, no traceback). Format-specific hostile files are in test_ingest_hostile_*.py."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from step_dist.cli import main
from step_dist.signals.shards import iter_records, read_manifest


def _npy(path, values, rate=100.0):
    np.save(path, values)
    (path.parent / (path.name + ".json")).write_text(json.dumps({"sampling_rate_hz": rate}))


def _ingest(src, out, *extra):
    return main(["ingest", *map(str, src if isinstance(src, list) else [src]), "--out", str(out), *extra])


def _reasons(out):
    return {(q["id"] or q["uri"]): q["reason"] for q in read_manifest(str(out))["quarantined"]}


# --- float32 exactness ---------------------------------------------------------------------------------------

def test_when_values_underflow_float32_then_the_record_is_quarantined_not_zeroed(tmp_path, ray_local):
    raw = tmp_path / "raw"
    raw.mkdir()
    tiny = np.random.default_rng(0).standard_normal((1, 200))
    tiny[0, 5] = 1e-50
    _npy(raw / "tiny.npy", tiny)
    _npy(raw / "fine.npy", np.random.default_rng(1).standard_normal((1, 200)))

    assert _ingest(raw, tmp_path / "out") == 3
    reasons = _reasons(tmp_path / "out")
    reason = next(r for k, r in reasons.items() if "tiny.npy" in k)
    assert reason.startswith("underflow") and "--float32-policy round" in reason
    assert [r.id for r in iter_records(str(tmp_path / "out"))] == ["raw:fine.npy#0"]


def test_when_the_float32_policy_is_round_then_underflow_is_kept_and_counted_in_meta_and_manifest(tmp_path, ray_local):
    raw = tmp_path / "raw"
    raw.mkdir()
    tiny = np.random.default_rng(0).standard_normal((1, 200))
    tiny[0, 5] = 1e-50
    _npy(raw / "tiny.npy", tiny)

    assert _ingest(raw, tmp_path / "out", "--float32-policy", "round") == 0
    (rec,) = iter_records(str(tmp_path / "out"))
    assert rec.meta["flags"]["float32_underflow"] == {"samples": 1, "zeroed": 1, "min_abs": 1e-50}
    assert rec.meta["source_dtype"] == "float64"
    assert read_manifest(str(tmp_path / "out"))["flagged"] == {"float32_underflow": 1}


def test_when_values_exceed_float32_range_then_the_reason_is_overflow_and_zero_fill_never_touches_them(tmp_path, ray_local):
    raw = tmp_path / "raw"
    raw.mkdir()
    big = np.ones((1, 100))
    big[0, ::2] = 1e39  # finite in float64, inf in float32
    _npy(raw / "big.npy", big)

    assert _ingest(raw, tmp_path / "out", "--nan-policy", "zero-fill") == 2  # nothing written
    (reason,) = _reasons(tmp_path / "out").values()
    assert reason.startswith("overflow: 50 finite sample(s)") and "NaN" not in reason


def test_when_integers_exceed_2_pow_24_then_they_are_quarantined_or_rounded_with_a_record(tmp_path, ray_local):
    raw = tmp_path / "raw"
    raw.mkdir()
    counts = np.arange(200, dtype=np.int32).reshape(1, 200) * 3
    counts[0, 7] = (1 << 24) + 1  # not representable in float32
    _npy(raw / "counts.npy", counts)
    exact = np.arange(-100, 100, dtype=np.int32).reshape(1, 200) * 1000
    _npy(raw / "exact.npy", exact)

    assert _ingest(raw, tmp_path / "q") == 3
    assert any(r.startswith("inexact in float32: 1 integer sample(s)") for r in _reasons(tmp_path / "q").values())
    (kept,) = iter_records(str(tmp_path / "q"))
    np.testing.assert_array_equal(kept.values.astype(np.int64), exact)  # exact integers stay bit-exact

    assert _ingest(raw, tmp_path / "r", "--float32-policy", "round") == 0
    rounded = {r.id: r for r in iter_records(str(tmp_path / "r"))}["raw:counts.npy#0"]
    assert rounded.meta["flags"]["float32_rounded_integers"]["samples"] == 1


@pytest.mark.parametrize("dtype,big", [("int64", (1 << 40) + 3), ("uint64", (1 << 63) + 5), ("uint32", (1 << 31) + 3)])
def test_when_wide_integers_round_then_to_float32_counts_exactly_the_changed_samples(dtype, big):
    from step_dist.signals.precision import to_float32

    v = np.array([[0, 5, (1 << 24) + 1, big, 1 << 30]], dtype=dtype)
    out, flags, reason = to_float32(v, "round")
    assert reason is None and flags["float32_rounded_integers"]["samples"] == 2
    assert to_float32(v, "quarantine")[2].startswith("inexact in float32: 2 integer")


# --- rates -------------------------------------------------------------------------------------------------------

def test_when_rate_is_given_and_a_file_carries_its_own_then_the_file_wins_and_the_conflict_is_reported(tmp_path, ray_local, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    _npy(raw / "own.npy", np.random.default_rng(0).standard_normal((1, 300)), rate=250.0)
    np.save(raw / "bare.npy", np.random.default_rng(1).standard_normal((1, 300)))

    assert _ingest(raw, tmp_path / "out", "--rate", "100") == 0
    recs = {r.id: r for r in iter_records(str(tmp_path / "out"))}
    own, bare = recs["raw:own.npy#0"], recs["raw:bare.npy#0"]
    assert own.sampling_rate_hz == 250.0 and own.meta["flags"]["rate_conflict"]["kept"] == "file"
    assert bare.sampling_rate_hz == 100.0 and bare.meta["rate_source"] == "--rate" and "flags" not in bare.meta
    assert read_manifest(str(tmp_path / "out"))["flagged"] == {"rate_conflict": 1}
    assert "rate_conflict" in capsys.readouterr().out


# --- nothing silent: every file written, quarantined or skipped with why ----------------------------------------

def test_when_files_are_skipped_on_purpose_then_each_is_listed_with_its_reason(tmp_path, ray_local, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    _npy(raw / "good.npy", np.random.default_rng(0).standard_normal((1, 50)))
    np.save(raw / "_private.npy", np.ones((1, 50)))
    np.save(raw / ".hidden.npy", np.ones((1, 50)))
    (raw / ".git").mkdir()
    (raw / ".git" / "config").write_text("x")

    assert _ingest(raw, tmp_path / "out", "--rate", "10") == 0
    skipped = {os.path.basename(e["uri"]): e["reason"] for e in read_manifest(str(tmp_path / "out"))["skipped"]}
    assert set(skipped) == {"_private.npy", ".hidden.npy", "good.npy.json", ".git"}
    assert "starts with '_'" in skipped["_private.npy"] and "sidecar of good.npy" in skipped["good.npy.json"]
    assert "skipped 4 file(s) on purpose" in capsys.readouterr().out


def test_when_two_sources_hold_files_of_the_same_name_then_both_land_under_distinct_ids(tmp_path, ray_local):
    a, b = tmp_path / "a" / "data", tmp_path / "b" / "data"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    xa, xb = np.arange(40.0)[None] * 1.5, np.arange(40.0)[None]
    _npy(a / "x.npy", xa)
    _npy(b / "x.npy", xb)

    assert _ingest([a, b], tmp_path / "out") == 0
    recs = {r.id: r.values for r in iter_records(str(tmp_path / "out"))}
    assert set(recs) == {"data:a/data/x.npy#0", "data:b/data/x.npy#0"}
    np.testing.assert_array_equal(recs["data:b/data/x.npy#0"], xb.astype(np.float32))


def test_when_a_symlink_points_out_of_the_source_then_it_is_not_followed_and_nothing_leaks(tmp_path, ray_local):
    secret = tmp_path / "secret.csv"
    secret.write_text("a,b\n" + "\n".join(f"{i},{i * 7}" for i in range(20)))  # a CSV ingest could read
    raw = tmp_path / "raw"
    raw.mkdir()
    os.symlink(secret, raw / "link.csv")
    os.symlink("loop.npy", raw / "loop.npy")
    os.mkfifo(raw / "pipe.npy")
    os.symlink(tmp_path, raw / "up")  # a folder link: never entered
    _npy(raw / "good.npy", np.ones((1, 30)) * np.arange(30))

    assert _ingest(raw, tmp_path / "out") == 3
    reasons = {os.path.basename(k): v for k, v in _reasons(tmp_path / "out").items()}
    assert "outside" in reasons["link.csv"] and "not followed" in reasons["link.csv"]
    assert "symbolic link loop" in reasons["loop.npy"]
    assert "FIFO" in reasons["pipe.npy"]
    assert any("folder, not followed" in e["reason"] for e in read_manifest(str(tmp_path / "out"))["skipped"])
    blobs = b"".join(p.read_bytes() for p in (tmp_path / "out").iterdir())
    assert b"0,0" not in blobs and np.float32(7 * 19).tobytes() not in blobs


def test_when_a_file_name_is_not_utf8_then_the_reason_says_so(tmp_path, ray_local):
    raw = tmp_path / "raw"
    raw.mkdir()
    name = os.fsdecode(b"caf\xe9.npy")
    np.save(os.path.join(str(raw), name), np.ones((1, 30)) * np.arange(30))
    _npy(raw / "good.npy", np.ones((1, 30)) * np.arange(30))

    assert _ingest(raw, tmp_path / "out", "--rate", "5") == 3
    (reason,) = [r for r in _reasons(tmp_path / "out").values() if "UTF-8" in r]
    assert "rename the file" in reason and "corrupt" not in reason


def test_when_every_record_is_too_long_then_the_error_says_so_and_counts_files_right(tmp_path, ray_local, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(2):
        _npy(raw / f"long{i}.npy", np.random.default_rng(i).standard_normal((1, 500)))

    assert _ingest([raw, tmp_path / "gone"], tmp_path / "out", "--max-length", "100") == 2
    out, err = capsys.readouterr()
    assert "too long: 2" in err and "nothing readable was found" not in err
    assert " of 3 file(s) unreadable)" in out  # the missing SRC counts among the files


# --- clear errors for usage problems --------------------------------------------------------------------------

def test_when_out_is_a_file_or_unwritable_then_ingest_exits_2_with_a_message(tmp_path, ray_local, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    _npy(raw / "good.npy", np.ones((1, 30)) * np.arange(30))
    (tmp_path / "afile").write_text("x")

    assert _ingest(raw, tmp_path / "afile") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert _ingest(raw, "/proc/step-dist-out") == 2
    assert "not writable" in capsys.readouterr().err


def test_when_inspect_gets_a_file_or_a_malformed_manifest_then_it_exits_2_with_a_message(tmp_path, capsys):
    (tmp_path / "f.npy").write_bytes(b"x")
    assert main(["inspect", str(tmp_path / "f.npy")]) == 2
    assert "is a file" in capsys.readouterr().err
    for text in ("{not json", "[]", json.dumps({"schema_version": 1, "n_records": 3})):
        bad = tmp_path / f"set{len(text)}"
        bad.mkdir()
        (bad / "_manifest.json").write_text(text)
        assert main(["inspect", str(bad)]) == 2
        assert "re-ingest" in capsys.readouterr().err


def test_when_a_recipe_uses_a_python_yaml_tag_then_pretrain_exits_2_without_running_it(tmp_path, capsys):
    marker = tmp_path / "ran"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(f"name: x\nstudent: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["pretrain", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and "Traceback" not in err
    assert not marker.exists()


def test_when_a_file_yields_no_records_and_no_error_then_it_is_quarantined_not_lost(tmp_path, ray_local):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "empty.ts").write_bytes(b"")
    (raw / "header_only.csv").write_text("a,b\n")
    _npy(raw / "good.npy", np.arange(30.0)[None])

    assert _ingest(raw, tmp_path / "out") == 3
    reasons = {os.path.basename(k): v for k, v in _reasons(tmp_path / "out").items()}
    assert "empty.ts" in reasons and "header_only.csv" in reasons
    assert all(r for r in reasons.values())
