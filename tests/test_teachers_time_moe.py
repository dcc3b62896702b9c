"""Time-MoE through kind hf_remote: a tiny remote-code model with Time-MoE's interface (auto_map with
AutoModelForCausalLM only, forward(input_ids=[B, L]), one token per step) built from the recipe entry
jobs/configs/teachers/time_moe.yaml, locally and from S3; views are cut to its 2,048-step context."""
from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import yaml

from step_dist import storage
from step_dist.config import from_dict
from step_dist.teachers import TeacherConfig, TeacherError, build_teacher
from step_dist.train.config import TeacherEntry

HERE = os.path.dirname(__file__)
FIXTURE = os.path.join(HERE, "fixtures", "teachers", "time_moe_like.py")
RECIPE = os.path.join(HERE, "..", "jobs", "configs", "teachers", "time_moe.yaml")


def save_time_moe_like(folder, seed: int = 0) -> str:
    """Publish the fixture as Time-MoE is published: its code file, auto_map (AutoConfig + AutoModelForCausalLM)."""
    import torch

    spec = importlib.util.spec_from_file_location("time_moe_like", FIXTURE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["time_moe_like"] = mod
    spec.loader.exec_module(mod)
    mod.TimeMoeConfig.register_for_auto_class()
    mod.TimeMoeForPrediction.register_for_auto_class("AutoModelForCausalLM")
    torch.manual_seed(seed)
    mod.TimeMoeForPrediction(mod.TimeMoeConfig()).save_pretrained(str(folder))
    return str(folder)


def recipe_teacher(checkpoint: str, **overrides) -> TeacherConfig:
    entry = from_dict(TeacherEntry, yaml.safe_load(open(RECIPE)), where="time_moe.yaml: ")  # the recipe's keys are valid
    model = {**entry.model, "checkpoint": checkpoint, **overrides}
    return from_dict(TeacherConfig, {"name": entry.name, **model}, where="time_moe.yaml: model.")


def test_when_time_moe_is_published_then_its_auto_map_has_no_automodel_entry(tmp_path):
    folder = save_time_moe_like(tmp_path / "tm")
    auto_map = json.load(open(os.path.join(folder, "config.json")))["auto_map"]
    assert sorted(auto_map) == ["AutoConfig", "AutoModelForCausalLM"]  # why the recipe sets options.auto_class
    assert "time_moe_like.py" in os.listdir(folder)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_when_the_time_moe_recipe_runs_a_long_record_then_the_input_is_cut_to_2048_steps(where, tmp_path, s3_bucket):
    folder = save_time_moe_like(tmp_path / "tm")
    ck = folder
    if where == "s3":
        storage.upload_dir(folder, f"{s3_bucket}/time-moe")
        ck = f"{s3_bucket}/time-moe"
    t = build_teacher(recipe_teacher(ck, cache_dir=str(tmp_path / "dl")))
    assert (t.name, t.family, t.native_rate_hz, t.dim, t.effective_context) == ("time_moe", "timeseries", None, 8, 2048)
    x = (np.sin(np.arange(3000) / 20.0) * 30 + 5).astype(np.float32)[None]
    p = t.prepare(x, 100.0, "long")
    assert p.shape == (1, 2048)  # the head of the view: Time-MoE's 2,048-step context
    np.testing.assert_allclose(p.mean(), 0, atol=1e-5)  # z-scored, as Time-MoE expects from its caller
    np.testing.assert_allclose(p.std(), 1, atol=1e-3)
    a, b = t.embed([p, p[:, :300]]), t.embed([p, p[:, :300]])
    assert a[0].shape == (2048, 8) and a[1].shape == (300, 8)  # one token per time step
    np.testing.assert_array_equal(a[0], b[0])
    # causal tokens: the first 300 steps' targets do not depend on what follows
    np.testing.assert_allclose(a[0][:300], a[1], rtol=1e-5, atol=1e-6)


def test_when_the_time_moe_checkpoint_changes_then_the_fingerprint_and_targets_change(tmp_path):
    ta = build_teacher(recipe_teacher(save_time_moe_like(tmp_path / "a", seed=0)))
    tb = build_teacher(recipe_teacher(save_time_moe_like(tmp_path / "b", seed=1)))
    assert ta.fingerprint != tb.fingerprint
    p = ta.prepare(np.random.default_rng(0).normal(size=(1, 64)).astype(np.float32), 1.0, "s")
    assert not np.allclose(ta.embed([p])[0], tb.embed([p])[0])


def test_when_time_moe_is_loaded_as_a_plain_automodel_then_the_error_names_the_teacher(tmp_path):
    folder = save_time_moe_like(tmp_path / "tm")
    with pytest.raises(TeacherError, match=r"teacher time_moe: cannot load .* as a hf_remote model"):
        build_teacher(recipe_teacher(folder, options={"input_name": "input_ids", "context_length": 2048}))
    with pytest.raises(TeacherError, match=r"teacher time_moe: options.auto_class 'Pipeline' is not a transformers AutoModel"):
        build_teacher(recipe_teacher(folder, options={"auto_class": "Pipeline"}))
