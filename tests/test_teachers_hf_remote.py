"""Remote-code Hugging Face teachers (SPEAR, Time-MoE style): saved with auto_map, loaded only on opt-in."""
from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest

from step_dist import storage
from step_dist.teachers import TeacherConfig, TeacherError, build_teacher

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "teachers", "counting_encoder.py")


def save_counting_encoder(folder, call_log: str = "", seed: int = 0, hidden: int = 8) -> str:
    """Publish the fixture model the way remote-code models are: code file + auto_map + safetensors."""
    import torch

    spec = importlib.util.spec_from_file_location("counting_encoder", FIXTURE)
    mod = importlib.util.module_from_spec(spec)
    import sys

    sys.modules["counting_encoder"] = mod
    spec.loader.exec_module(mod)
    mod.CountingConfig.register_for_auto_class()
    mod.CountingEncoder.register_for_auto_class("AutoModel")
    torch.manual_seed(seed)
    model = mod.CountingEncoder(mod.CountingConfig(hidden_size=hidden, call_log=call_log))
    model.save_pretrained(str(folder))
    return str(folder)


def remote_cfg(ck: str, **kw) -> TeacherConfig:
    base = dict(name="remote", kind="hf_remote", checkpoint=ck, trust_remote_code=True,
                options={"rate_hz": 100.0, "context_length": 256, "min_length": 8})
    base.update(kw)
    return TeacherConfig(**base)


def test_when_a_remote_code_model_is_saved_with_auto_map_then_the_folder_holds_code_and_safetensors(tmp_path):
    folder = save_counting_encoder(tmp_path / "m")
    files = sorted(os.listdir(folder))
    assert "counting_encoder.py" in files and "model.safetensors" in files
    import json

    assert json.load(open(os.path.join(folder, "config.json")))["auto_map"]["AutoModel"].endswith("CountingEncoder")


def test_when_trust_remote_code_is_not_set_then_loading_is_refused_with_the_switch_to_flip(tmp_path):
    folder = save_counting_encoder(tmp_path / "m")
    with pytest.raises(TeacherError, match=r"teacher remote: .*ships its own model code.*trust_remote_code: true"):
        build_teacher(remote_cfg(folder, trust_remote_code=False))


@pytest.mark.parametrize("where", ["local", "s3"])
def test_when_a_remote_code_model_is_loaded_then_targets_have_the_models_shape_and_are_deterministic(tmp_path, s3_bucket, where):
    folder = save_counting_encoder(tmp_path / "m")
    ck = folder
    if where == "s3":
        storage.upload_dir(folder, f"{s3_bucket}/remote")
        ck = f"{s3_bucket}/remote"
    t = build_teacher(remote_cfg(ck, cache_dir=str(tmp_path / "dl"), layer=1))
    assert (t.dim, t.native_rate_hz) == (8, 100.0)
    x = np.random.default_rng(0).normal(size=(2, 150)).astype(np.float32)  # 2 channels at 50 Hz -> 300 at 100 Hz
    p = t.prepare(x, 50.0, "r1")
    assert p.shape == (2, 256)  # cropped to the context
    np.testing.assert_allclose(p.mean(axis=1), 0, atol=1e-5)  # standardised
    a, b = t.embed([p, p[:, :100]]), t.embed([p, p[:, :100]])
    assert a[0].shape == (64, 8) and a[1].shape == (25, 8) and t.num_tokens(100) == 25
    np.testing.assert_array_equal(a[0], b[0])
    other = build_teacher(remote_cfg(ck, cache_dir=str(tmp_path / "dl"), layer=2))
    assert other.fingerprint != t.fingerprint
    assert not np.allclose(other.embed([p])[0], a[0])


def test_when_the_folder_has_no_weights_then_the_error_names_teacher_and_folder(tmp_path):
    folder = save_counting_encoder(tmp_path / "m")
    os.remove(os.path.join(folder, "model.safetensors"))
    with pytest.raises(TeacherError, match=r"teacher remote: checkpoint .* holds none of .*model.safetensors"):
        build_teacher(remote_cfg(folder))
