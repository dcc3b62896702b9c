"""Recipes fail before any worker starts, naming the key, when they cannot work."""
from __future__ import annotations

import pytest

from step_dist.config import ConfigError
from tests.pretrain_runs import load_tiny, overrides


def _tiny(**kv):
    return load_tiny(overrides(**{"data.train": "/tmp/somewhere", **kv}))


def test_when_the_tiny_recipe_is_loaded_then_it_passes_its_checks():
    cfg = _tiny()
    cfg.check()
    assert [t.name for t in cfg.teachers] == ["fracast", "crepe"]


def test_when_a_key_is_unknown_then_the_error_names_it():
    with pytest.raises(ConfigError, match="train.max_stepz"):
        _tiny(**{"train.max_stepz": 3})


def test_when_a_value_has_the_wrong_type_then_the_error_names_the_key():
    with pytest.raises(ConfigError, match="train.max_steps"):
        _tiny(**{"train.max_steps": "many"})


@pytest.mark.parametrize(
    "sets, key",
    [
        ({"train.zero_stage": 4}, "train.zero_stage"),
        ({"train.zero_stage": 0, "train.offload_optimizer": True}, "train.offload_optimizer"),
        ({"train.precision": "bf16"}, "train.precision"),
        ({"train.global_batch_size": 10}, "train.global_batch_size"),
        ({"data.bucket_rows": 2}, "data.bucket_rows"),
        ({"targets.mode": "cache"}, "targets.cache"),
        ({"data.train": ""}, "data.train"),
        ({"tracker": "wandb"}, "tracker"),
    ],
)
def test_when_a_combination_is_impossible_then_check_names_the_key(sets, key):
    cfg = _tiny(**sets)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cfg.check()


def test_when_the_global_batch_matches_micro_batch_times_accumulation_times_workers_then_it_is_accepted():
    _tiny(**{"train.global_batch_size": 4 * 2 * 2, "train.grad_accum": 2}).check()


@pytest.mark.parametrize(
    "sets, message",
    [
        ({"student.d_modle": 32}, r"student\.d_modle"),  # a typo fails on the driver, not inside a Ray worker
        ({"student.d_model": "wide"}, r"student\.d_model: expected int"),
        ({"student.size": "huge"}, r"student\.size: unknown student size 'huge'"),
        ({"student.d_model": 30, "student.n_heads": 4}, r"d_model=30 must be divisible by n_heads=4"),
        ({"teachers.0.model.max_contex": 5}, r"teachers\[0\]\.model\.max_contex"),
    ],
)
def test_when_the_student_or_a_teacher_model_is_wrong_then_check_names_the_full_key(sets, message):
    cfg = _tiny()
    for key, value in sets.items():  # set after loading: check() is what runs on the driver before Ray starts
        section, *path = key.split(".")
        if section == "student":
            cfg.student[path[0]] = value
        else:
            cfg.teachers[int(path[0])].model[path[2]] = value
    with pytest.raises(ConfigError, match=message):
        cfg.check()


def test_the_student_the_recipe_names_is_its_size_with_the_overrides():
    s = _tiny(**{"student.d_model": 32, "student.n_layers": 1}).student_config()
    assert (s.name, s.d_model, s.n_layers, s.n_heads) == ("tiny", 32, 1, 4)


def test_when_a_teacher_pool_is_impossible_then_loading_names_the_pool():
    with pytest.raises(ConfigError, match=r"teachers\[0\]\.pool"):
        _tiny(**{"teachers": "[{name: a, pool: {size: 0}}]"})


def test_a_teacher_entry_gives_its_head_the_teachers_rate_bounds_and_widths():
    te = _tiny().teachers[1]
    te.model["min_rate_hz"] = 8000.0
    h = te.head_config({"dim": 5, "teacher_rate_hz": 16000.0, "teacher_context": 1024, "teacher_crops": True})
    assert (h.name, h.dim, h.weight, h.loss, h.min_rate_hz, h.max_rate_hz) == ("crepe", 5, 0.5, "cosine+mse", 8000.0, 0.0)
    assert (h.teacher_rate_hz, h.teacher_context, h.teacher_crops) == (16000.0, 1024, True)


def test_when_the_storage_cannot_be_written_then_pretrain_fails_before_starting_workers(tmp_path):
    from step_dist.storage import StorageError
    from step_dist.train import pretrain
    from tests.signal_factory import write_synthetic_shards

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    shards = write_synthetic_shards(str(tmp_path / "shards"), 4)
    cfg = load_tiny(overrides(**{"data.train": shards, "storage": str(blocker)}))
    with pytest.raises((StorageError, OSError)):
        pretrain(cfg)


def test_when_the_data_has_no_manifest_then_the_error_says_what_to_point_at(tmp_path):
    from step_dist.train import pretrain

    cfg = load_tiny(overrides(**{"data.train": str(tmp_path / "nothing"), "storage": str(tmp_path / "runs")}))
    with pytest.raises(ConfigError, match="step-dist ingest"):
        pretrain(cfg)


def test_when_every_record_was_quarantined_at_ingest_then_pretrain_refuses_to_start(tmp_path):
    from step_dist.signals.shards import ShardWriter
    from step_dist.signals.validate import Quarantined
    from step_dist.train import pretrain

    w = ShardWriter(str(tmp_path / "shards"))
    w.quarantine(Quarantined(uri="x.npy", reason="all NaN"))
    w.close()
    cfg = load_tiny(overrides(**{"data.train": str(tmp_path / "shards"), "storage": str(tmp_path / "runs")}))
    with pytest.raises(ConfigError, match="no usable records"):
        pretrain(cfg)


SHIPPED = sorted((__import__("pathlib").Path(__file__).resolve().parents[1] / "jobs" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_recipe_loads_through_the_loader_users_run(path):
    # a recipe that only parses as YAML but fails our loader (an alias, an unknown key) breaks `ray job submit`
    from step_dist.config import load
    from step_dist.evaluate.config import EvaluateConfig
    from step_dist.evaluate.scits_release import load_rates
    from step_dist.train.trainer import load_config
    from step_dist.tune.driver import load_sweep

    if path.name.startswith("eval-"):
        load(EvaluateConfig, str(path))
    elif path.name.startswith("sweep-"):
        load_sweep(str(path))
    elif path.name.endswith("-rates.yaml"):
        assert load_rates(str(path))
    else:
        assert load_config(str(path)).teachers
