"""MOMENT teachers: a tiny random MOMENTPipeline saved with save_pretrained (huggingface_hub's mixin, as AutonLab
publishes MOMENT-1), loaded through the adapter locally and from S3."""
from __future__ import annotations

import os

import numpy as np
import pytest

from step_dist import storage
from step_dist.teachers import TeacherConfig, TeacherError, build_teacher

try:  # momentfm is installed with --no-deps (it pins transformers 4.33); skip only if it truly cannot import
    from momentfm import MOMENTPipeline
except Exception as e:  # noqa: BLE001
    pytest.skip(f"momentfm does not import here ({type(e).__name__}: {e}); "
                "install it with: pip install --no-deps momentfm", allow_module_level=True)

CTX, PATCH = 64, 8


def save_tiny_moment(folder, seed: int = 0) -> str:
    import torch

    torch.manual_seed(seed)
    t5 = dict(d_model=16, d_ff=32, num_layers=2, num_heads=2, d_kv=8, vocab_size=8, feed_forward_proj="gated-gelu",
              is_encoder_decoder=False, model_type="t5")
    # the keys of AutonLab/MOMENT-1-large's config.json, at toy sizes
    cfg = {"task_name": "reconstruction", "model_name": "MOMENT", "transformer_type": "encoder_only", "d_model": None,
           "seq_len": CTX, "patch_len": PATCH, "patch_stride_len": PATCH, "device": "cpu",
           "transformer_backbone": "google/flan-t5-large", "model_kwargs": {}, "t5_config": t5}
    model = MOMENTPipeline(config=cfg, model_kwargs={"task_name": "reconstruction"})
    model.init()
    model.save_pretrained(str(folder))
    return str(folder)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_when_a_tiny_moment_is_loaded_then_tokens_are_whole_patches_and_deterministic(where, tmp_path, s3_bucket):
    folder = save_tiny_moment(tmp_path / "moment")
    ck = folder
    if where == "s3":
        storage.upload_dir(folder, f"{s3_bucket}/moment")
        ck = f"{s3_bucket}/moment"
    t = build_teacher(TeacherConfig(name="moment", kind="moment", checkpoint=ck, cache_dir=str(tmp_path / "dl")))
    assert (t.family, t.native_rate_hz, t.dim, t.context_length) == ("timeseries", None, 16, CTX)
    x = np.stack([np.sin(np.arange(90) / 3.0) * 50 + 7, np.cos(np.arange(90) / 4.0)]).astype(np.float32)
    p = t.prepare(x, 1.0, "series")
    np.testing.assert_array_equal(p, x[:, :CTX])  # cropped, values untouched: RevIN scales inside the model
    a, b = t.embed([p, p[:, :37]]), t.embed([p, p[:, :37]])
    assert a[0].shape == (CTX // PATCH, 16) and a[1].shape == (37 // PATCH, 16) == (t.num_tokens(37), 16)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert np.isfinite(a[0]).all() and a[0].std() > 0


def test_when_the_moment_checkpoint_changes_then_the_fingerprint_and_targets_change(tmp_path):
    ta = build_teacher(TeacherConfig(name="m", kind="moment", checkpoint=save_tiny_moment(tmp_path / "a", seed=0)))
    tb = build_teacher(TeacherConfig(name="m", kind="moment", checkpoint=save_tiny_moment(tmp_path / "b", seed=1)))
    assert ta.fingerprint != tb.fingerprint
    p = ta.prepare(np.sin(np.arange(64) / 3.0).astype(np.float32), 1.0, "s")
    assert not np.allclose(ta.embed([p])[0], tb.embed([p])[0])


def test_when_the_moment_weights_do_not_fit_its_config_then_the_error_names_the_teacher(tmp_path):
    import json

    folder = save_tiny_moment(tmp_path / "m")
    cfg_path = os.path.join(folder, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["t5_config"]["num_layers"] = 3  # weights hold 2 layers
    json.dump(cfg, open(cfg_path, "w"))
    with pytest.raises(TeacherError, match=r"teacher m: cannot load .* as a MOMENT model"):
        build_teacher(TeacherConfig(name="m", kind="moment", checkpoint=folder))


def test_when_the_folder_is_not_a_moment_checkpoint_then_the_error_says_so(tmp_path):
    import transformers as tf

    tf.T5EncoderModel(tf.T5Config(d_model=8, d_ff=16, num_layers=1, num_heads=2, d_kv=4, vocab_size=10)).save_pretrained(str(tmp_path / "t5"))
    with pytest.raises(TeacherError, match=r"teacher m: .* is not a MOMENT checkpoint"):
        build_teacher(TeacherConfig(name="m", kind="moment", checkpoint=str(tmp_path / "t5")))
