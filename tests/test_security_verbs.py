"""Hostile files met by verbs other than ingest (pretrain's recipe, evaluate/embed's export, teacher
checkpoints, the target cache): nothing runs, nothing hangs, nothing is read outside its folder, sizes are
not taken from a file's word, and the user gets a message instead of a traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from step_dist.cli import main
from step_dist.config import ConfigError, apply_overrides, load_yaml
from step_dist.model import STEPEncoder
from step_dist.model.config import StudentConfig


def test_when_a_recipe_nests_yaml_aliases_then_it_is_refused_at_once(tmp_path):
    lol = "a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']\n"
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefgh"[i]
        lol += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"  # 9**9 strings once expanded
    recipe = tmp_path / "laughs.yaml"
    recipe.write_text(lol)
    with pytest.raises(ConfigError, match="aliases"):
        load_yaml(str(recipe))


def test_when_a_set_value_is_not_valid_yaml_then_the_error_names_the_override(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"override 'train.seed=\[1,'"):
        apply_overrides({}, ["train.seed=[1,"])
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\nstudent: [1, 2]\n")
    assert main(["pretrain", "--config", str(recipe)]) == 2  # a section that is not a mapping
    assert "student: expected a mapping" in capsys.readouterr().err


def _export(tmp_path):
    enc = STEPEncoder(StudentConfig.named("tiny"))
    enc.save_pretrained(str(tmp_path / "export"))
    return tmp_path / "export"


def test_when_an_export_config_asks_for_a_huge_model_then_nothing_is_allocated_before_the_weights_disagree(tmp_path):
    folder = _export(tmp_path)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"].update(d_model=65536, n_layers=64)  # ~ 3 TB of parameters if built
    (folder / "config.json").write_text(json.dumps(meta))
    code = ("import resource, sys\nfrom step_dist.model import STEPEncoder\n"
            "try:\n    STEPEncoder.from_pretrained(sys.argv[1])\nexcept ValueError as e:\n    print('REFUSED', e)\n"
            "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, timeout=300)
    assert "REFUSED" in out.stdout and "do not match the config" in out.stdout, out.stderr[-2000:]
    maxrss_gb = int(out.stdout.split("MAXRSS_KB")[1]) / 2**20
    assert maxrss_gb < 4, f"peak RSS {maxrss_gb:.1f} GB: the model was built before the check"


@pytest.mark.parametrize("damage", ["not json", "list", "version", "weights"])
def test_when_an_export_is_damaged_then_embed_exits_2_with_a_message(tmp_path, capsys, damage):
    folder = _export(tmp_path)
    cfg = folder / "config.json"
    if damage == "not json":
        cfg.write_text("{oops")
    elif damage == "list":
        cfg.write_text("[1, 2]")
    elif damage == "version":
        meta = json.loads(cfg.read_text())
        meta["format_version"] = "one"
        cfg.write_text(json.dumps(meta))
    else:
        (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    rc = main(["embed", "--checkpoint", str(folder), "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and str(folder) in err


def test_when_an_exported_student_loads_then_its_outputs_are_unchanged(tmp_path):
    enc = STEPEncoder(StudentConfig.named("tiny")).eval()
    enc.save_pretrained(str(tmp_path / "e"))
    back = STEPEncoder.from_pretrained(str(tmp_path / "e")).eval()
    x = np.random.default_rng(0).standard_normal((2, 300)).astype(np.float32)
    np.testing.assert_array_equal(enc.encode(x, 100.0), back.encode(x, 100.0))
    assert all(p.device.type == "cpu" and p.requires_grad for p in back.parameters())


def test_when_a_teacher_checkpoint_folder_holds_a_fifo_then_fingerprinting_refuses_it_instead_of_hanging(tmp_path):
    from step_dist.teachers.checkpoint import files_under
    from step_dist.teachers.protocol import TeacherError

    (tmp_path / "model.safetensors").write_bytes(b"x")
    os.mkfifo(tmp_path / "weights.bin")
    with pytest.raises(TeacherError, match="not a regular file"):
        files_under(str(tmp_path))


def test_when_a_target_cache_manifest_points_outside_its_run_or_is_malformed_then_that_run_is_skipped(tmp_path):
    from step_dist.teachers.cache import CACHE_FORMAT, MANIFEST, complete_runs

    good = {"format": CACHE_FORMAT, "created": 2.0, "teachers": [{"name": "t", "fingerprint": "f" * 16}],
            "files": [{"path": "part-0.parquet", "bytes": 10}]}
    for name, manifest in (("good", good), ("escape", {**good, "created": 3.0, "files": [{"path": "../../secret", "bytes": 1}]}),
                           ("broken", "{not json"), ("odd", {**good, "created": "yesterday", "teachers": "t"})):
        (tmp_path / name).mkdir()
        (tmp_path / name / MANIFEST).write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    runs = complete_runs(str(tmp_path))
    assert [os.path.basename(u) for u, _ in runs] == ["good"]


def test_when_a_fifo_sits_where_libsndfile_probes_for_a_sidecar_then_ingest_does_not_hang(tmp_path):
    # given a file *name* it cannot parse, libsndfile also opens '._<name>' beside it (macOS AppleDouble)
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "x.wav").write_bytes(b"not audio at all " * 40)
    os.mkfifo(raw / "._x.wav")
    sf.write(raw / "ok.wav", np.random.default_rng(0).standard_normal(400).astype(np.float32), 8000, subtype="FLOAT")
    code = ("import sys\nfrom step_dist.signals.readers import ReaderOptions, read_records\n"
            "for name in ('x.wav', 'ok.wav'):\n"
            "    try:\n        print(name, [type(r).__name__ for r in read_records(sys.argv[1] + '/' + name, ReaderOptions())])\n"
            "    except Exception as e:\n        print(name, 'error', type(e).__name__)\n")
    try:
        out = subprocess.run([sys.executable, "-c", code, str(raw)], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("reading x.wav blocked on the FIFO beside it")
    assert "ok.wav ['SignalRecord']" in out.stdout and "x.wav error" in out.stdout, out.stdout + out.stderr[-1500:]



def test_when_a_shard_row_group_declares_more_than_any_shard_holds_then_it_is_refused_before_decoding(tmp_path, monkeypatch):
    from step_dist.signals import shards
    from step_dist.signals.record import SignalRecord

    rec = SignalRecord(id="a", source="s", domain="d", sampling_rate_hz=1.0, values=np.zeros((1, 4096), np.float32) + 1)
    shards.write_records(str(tmp_path / "set"), [rec])
    assert len(list(shards.iter_rows(str(tmp_path / "set")))) == 1
    monkeypatch.setattr(shards, "MAX_ROW_GROUP_BYTES", 1024)  # a 16 KiB row group now stands for a bomb
    with pytest.raises(ValueError, match="row group 0 declares"):
        list(shards.iter_rows(str(tmp_path / "set")))


def test_when_a_cached_target_holds_fewer_bytes_than_its_shape_then_loading_the_cache_fails_clearly(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from step_dist.teachers.cache import fp_column, load_targets
    from step_dist.teachers.protocol import TeacherError

    col = fp_column("f" * 16)
    table = pa.table({"id": ["r"], "view_id": ["v"], col: [np.zeros(10, "<f4").tobytes()],
                      f"{col}_tokens": [4], f"{col}_dim": [8]})  # 4 x 8 declared, 10 floats held
    pq.write_table(table, tmp_path / "part-0.parquet")
    manifest = {"files": [{"path": "part-0.parquet", "bytes": (tmp_path / "part-0.parquet").stat().st_size}]}
    with pytest.raises(TeacherError, match="holds 40 bytes for 4 tokens x 8 dims"):
        load_targets(str(tmp_path), manifest, "f" * 16)


def test_when_evaluate_out_is_a_file_then_it_stops_before_evaluating(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    folder = _export(tmp_path)
    assert main(["evaluate", "--checkpoint", str(folder), "--task", str(tmp_path / "t"), "--out", str(tmp_path / "taken")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["{oops", "[1]", '{"step": 3, "injected": "x"}'])
def test_when_a_checkpoints_trainer_state_is_damaged_then_resume_says_so(tmp_path, text):
    from step_dist.train.checkpoint import read_trainer_state

    (tmp_path / "trainer_state.json").write_text(text)
    with pytest.raises(RuntimeError, match="trainer_state.json is damaged"):
        read_trainer_state(str(tmp_path))
