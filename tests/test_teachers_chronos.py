"""Chronos-Bolt teachers: a tiny random model saved as the Chronos publishers do, loaded locally and from S3."""
from __future__ import annotations

import numpy as np
import pytest

from step_dist import storage
from step_dist.teachers import TeacherConfig, TeacherError, build_teacher


def save_tiny_bolt(folder, patch: int = 8) -> str:
    import torch
    from transformers import T5Config

    from chronos.chronos_bolt import ChronosBoltModelForForecasting

    torch.manual_seed(0)
    cfg = T5Config(d_model=16, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2, d_kv=8, vocab_size=2,
                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    cfg.chronos_config = {"context_length": 64, "prediction_length": 8, "input_patch_size": patch,
                          "input_patch_stride": patch, "quantiles": [0.1, 0.5, 0.9], "use_reg_token": True}
    cfg.chronos_pipeline_class = "ChronosBoltPipeline"
    cfg.architectures = ["ChronosBoltModelForForecasting"]
    ChronosBoltModelForForecasting(cfg).save_pretrained(str(folder))
    return str(folder)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_when_a_tiny_chronos_bolt_is_loaded_then_tokens_are_patches_plus_reg_and_deterministic(tmp_path, s3_bucket, where):
    folder = save_tiny_bolt(tmp_path / "bolt")
    ck = folder
    if where == "s3":
        storage.upload_dir(folder, f"{s3_bucket}/bolt")
        ck = f"{s3_bucket}/bolt"
    t = build_teacher(TeacherConfig(name="bolt", kind="chronos", checkpoint=ck, cache_dir=str(tmp_path / "dl")))
    assert (t.dim, t.context_length, t.native_rate_hz) == (16, 64, None)
    x = np.sin(np.arange(100) / 3.0).astype(np.float32)[None] * 50 + 7
    p = t.prepare(x, 1.0, "series")
    assert p.shape == (1, 64)  # cropped to the context, values untouched (the pipeline scales itself)
    np.testing.assert_array_equal(p[0], x[0, :64])
    a, b = t.embed([p, p[:, :40]]), t.embed([p, p[:, :40]])
    assert a[0].shape == (64 // 8 + 1, 16) and a[1].shape == (40 // 8 + 1, 16)
    np.testing.assert_array_equal(a[0], b[0])


def test_when_a_chronos_folder_has_no_chronos_config_then_the_error_says_so(tmp_path):
    import transformers as tf

    tf.T5EncoderModel(tf.T5Config(d_model=8, d_ff=16, num_layers=1, num_heads=2, d_kv=4, vocab_size=10)).save_pretrained(str(tmp_path / "t5"))
    with pytest.raises(TeacherError, match="teacher c: .* is not a Chronos checkpoint"):
        build_teacher(TeacherConfig(name="c", kind="chronos", checkpoint=str(tmp_path / "t5")))
