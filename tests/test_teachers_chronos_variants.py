"""Original Chronos (T5 over mean-scaled bins) and Chronos-2 teachers: tiny random models saved as their
publishers do (T5ForConditionalGeneration / Chronos2Model + chronos_config), loaded locally and from S3."""
from __future__ import annotations

import numpy as np
import pytest

from step_dist import storage
from step_dist.teachers import TeacherConfig, build_teacher

CTX, PATCH = 64, 8


def save_tiny_chronos_t5(folder, seed: int = 0) -> str:
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(d_model=16, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8, vocab_size=32,
                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    # the keys amazon/chronos-t5-* ship in config.json (no chronos_pipeline_class: ChronosPipeline is the default)
    cfg.chronos_config = {"tokenizer_class": "MeanScaleUniformBins", "tokenizer_kwargs": {"low_limit": -15.0, "high_limit": 15.0},
                          "n_tokens": 32, "n_special_tokens": 2, "pad_token_id": 0, "eos_token_id": 1, "use_eos_token": True,
                          "model_type": "seq2seq", "context_length": CTX, "prediction_length": 8, "num_samples": 2,
                          "temperature": 1.0, "top_k": 50, "top_p": 1.0}
    cfg.architectures = ["T5ForConditionalGeneration"]
    T5ForConditionalGeneration(cfg).save_pretrained(str(folder))
    return str(folder)


def save_tiny_chronos2(folder, seed: int = 0) -> str:
    import torch

    from chronos.chronos2.config import Chronos2CoreConfig
    from chronos.chronos2.model import Chronos2Model

    torch.manual_seed(seed)
    cfg = Chronos2CoreConfig(d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    cfg.chronos_config = {"context_length": CTX, "output_patch_size": PATCH, "input_patch_size": PATCH,
                          "input_patch_stride": PATCH, "quantiles": [0.1, 0.5, 0.9], "use_reg_token": True,
                          "use_arcsinh": True, "max_output_patches": 4}
    cfg.chronos_pipeline_class = "Chronos2Pipeline"
    cfg.architectures = ["Chronos2Model"]
    Chronos2Model(cfg).save_pretrained(str(folder))
    return str(folder)


SAVE = {"chronos-t5": save_tiny_chronos_t5, "chronos-2": save_tiny_chronos2}
# tokens per prepared length: one per step + EOS (T5), one per patch + [REG] + the masked forecast patch (Chronos-2)
TOKENS = {"chronos-t5": lambda n: n + 1, "chronos-2": lambda n: -(-n // PATCH) + 2}


@pytest.mark.parametrize("variant", sorted(SAVE))
@pytest.mark.parametrize("where", ["local", "s3"])
def test_when_a_tiny_chronos_variant_is_loaded_then_targets_have_its_token_count_and_are_deterministic(variant, where, tmp_path, s3_bucket):
    folder = SAVE[variant](tmp_path / variant)
    ck = folder
    if where == "s3":
        storage.upload_dir(folder, f"{s3_bucket}/{variant}")
        ck = f"{s3_bucket}/{variant}"
    t = build_teacher(TeacherConfig(name="c", kind="chronos", checkpoint=ck, cache_dir=str(tmp_path / "dl")))
    assert (t.dim, t.context_length, t.native_rate_hz, t.family) == (16, CTX, None, "timeseries")
    x = np.stack([np.sin(np.arange(100) / 3.0) * 50 + 7, np.cos(np.arange(100) / 5.0)]).astype(np.float32)
    p = t.prepare(x, 1.0, "series")
    np.testing.assert_array_equal(p, x[:, :CTX])  # cropped, values untouched (the pipeline scales itself)
    a, b = t.embed([p, p[:, :37]]), t.embed([p, p[:, :37]])
    assert a[0].shape == (TOKENS[variant](CTX), 16) and a[1].shape == (TOKENS[variant](37), 16)
    assert t.num_tokens(37) == TOKENS[variant](37)
    np.testing.assert_array_equal(a[0], b[0])
    assert np.isfinite(a[0]).all() and a[0].std() > 0
    # a record's target is the mean of its channels' targets
    per_channel = t.embed([p[:1], p[1:]])
    np.testing.assert_allclose(a[0], (per_channel[0] + per_channel[1]) / 2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", sorted(SAVE))
def test_when_the_chronos_checkpoint_changes_then_the_fingerprint_and_targets_change(variant, tmp_path):
    ta = build_teacher(TeacherConfig(name="c", kind="chronos", checkpoint=SAVE[variant](tmp_path / "a", seed=0)))
    tb = build_teacher(TeacherConfig(name="c", kind="chronos", checkpoint=SAVE[variant](tmp_path / "b", seed=1)))
    assert ta.fingerprint != tb.fingerprint
    p = ta.prepare(np.sin(np.arange(64) / 3.0).astype(np.float32), 1.0, "s")
    assert not np.allclose(ta.embed([p])[0], tb.embed([p])[0])
