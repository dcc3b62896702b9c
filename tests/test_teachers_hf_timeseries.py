"""PatchTST and TimesFM teachers: tiny random models saved with save_pretrained as their publishers do
(a head checkpoint: PatchTSTForPretraining, TimesFmModelForPrediction), loaded locally and from S3."""
from __future__ import annotations

import numpy as np
import pytest

from step_dist import storage
from step_dist.teachers import TeacherConfig, TeacherError, TeacherInputError, build_teacher

CTX, PATCH = 64, 8


def save_tiny(kind: str, folder, seed: int = 0, channels: int = 1) -> str:
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    if kind == "patchtst":
        # a pretraining checkpoint: random patch masking on, as IBM's published PatchTST pretraining configs
        cfg = tf.PatchTSTConfig(num_input_channels=channels, context_length=CTX, patch_length=PATCH, patch_stride=PATCH,
                                d_model=16, num_attention_heads=2, num_hidden_layers=2, ffn_dim=32,
                                do_mask_input=True, mask_type="random", random_mask_ratio=0.4)
        tf.PatchTSTForPretraining(cfg).save_pretrained(str(folder))
    else:
        cfg = tf.TimesFmConfig(patch_length=PATCH, context_length=CTX, horizon_length=PATCH, hidden_size=16,
                               intermediate_size=32, head_dim=8, num_attention_heads=2, num_hidden_layers=2)
        tf.TimesFmModelForPrediction(cfg).save_pretrained(str(folder))
    return str(folder)


def _series(n=100, channels=1):
    t = np.arange(n)
    return np.stack([np.sin(t / (3.0 + c)) * 50 + 7 for c in range(channels)]).astype(np.float32)


@pytest.mark.parametrize("kind", ["patchtst", "timesfm"])
@pytest.mark.parametrize("where", ["local", "s3"])
def test_when_a_tiny_time_series_model_is_loaded_then_tokens_are_patches_and_deterministic(kind, where, tmp_path, s3_bucket):
    folder = save_tiny(kind, tmp_path / kind)
    ck = folder
    if where == "s3":
        storage.upload_dir(folder, f"{s3_bucket}/{kind}")
        ck = f"{s3_bucket}/{kind}"
    t = build_teacher(TeacherConfig(name=kind, kind="hf_timeseries", checkpoint=ck, cache_dir=str(tmp_path / "dl")))
    assert (t.family, t.native_rate_hz, t.dim, t.context_length) == ("timeseries", None, 16, CTX)
    x = _series(100, channels=2)
    p = t.prepare(x, 1.0, "series")
    assert p.shape == (2, CTX)
    np.testing.assert_array_equal(p, x[:, :CTX])  # cropped, values untouched: the model scales itself
    a, b = t.embed([p, p[:, :37]]), t.embed([p, p[:, :37]])
    short = 37 // PATCH if kind == "patchtst" else int(np.ceil(37 / PATCH))  # whole patches vs left-padded patches
    assert a[0].shape == (CTX // PATCH, 16) and a[1].shape == (short, 16) == (t.num_tokens(37), 16)
    np.testing.assert_array_equal(a[0], b[0])  # PatchTST's pretraining mask is off
    np.testing.assert_array_equal(a[1], b[1])
    assert np.isfinite(a[0]).all() and a[0].std() > 0


@pytest.mark.parametrize("kind", ["patchtst", "timesfm"])
def test_when_the_checkpoint_or_layer_changes_then_the_fingerprint_and_targets_change(kind, tmp_path):
    one, two = save_tiny(kind, tmp_path / "a", seed=0), save_tiny(kind, tmp_path / "b", seed=1)
    ta = build_teacher(TeacherConfig(name="t", kind="hf_timeseries", checkpoint=one))
    tb = build_teacher(TeacherConfig(name="t", kind="hf_timeseries", checkpoint=two))
    tl = build_teacher(TeacherConfig(name="t", kind="hf_timeseries", checkpoint=one, layer=1))
    assert len({ta.fingerprint, tb.fingerprint, tl.fingerprint}) == 3
    p = ta.prepare(_series(64), 1.0, "s")
    a = ta.embed([p])[0]
    assert not np.allclose(a, tb.embed([p])[0]) and not np.allclose(a, tl.embed([p])[0])


def test_when_timesfm_is_told_another_frequency_class_then_targets_change(tmp_path):
    folder = save_tiny("timesfm", tmp_path / "tf")
    hi = build_teacher(TeacherConfig(name="t", kind="hf_timeseries", checkpoint=folder))
    lo = build_teacher(TeacherConfig(name="t", kind="hf_timeseries", checkpoint=folder, options={"freq": 2}))
    assert hi.fingerprint != lo.fingerprint
    p = hi.prepare(_series(64), 1.0, "s")
    assert not np.allclose(hi.embed([p])[0], lo.embed([p])[0])
    with pytest.raises(TeacherError, match=r"teacher t: options.freq 7 not in 0..2"):
        build_teacher(TeacherConfig(name="t", kind="hf_timeseries", checkpoint=folder, options={"freq": 7}))


def test_when_a_multichannel_patchtst_gets_its_montage_then_one_target_covers_all_channels(tmp_path):
    folder = save_tiny("patchtst", tmp_path / "p3", channels=3)
    cfg = TeacherConfig(name="p3", kind="hf_timeseries", checkpoint=folder, channel_mode="montage", montage=["Z", "N", "E"])
    t = build_teacher(cfg)
    x = _series(80, channels=4)
    p = t.prepare(x, 1.0, "quake", channel_names=["E", "N", "Z", "X"])
    np.testing.assert_array_equal(p, x[[2, 1, 0], :CTX])
    assert t.embed([p])[0].shape == (CTX // PATCH, 16)
    loose = build_teacher(TeacherConfig(name="p3", kind="hf_timeseries", checkpoint=folder))
    with pytest.raises(TeacherInputError, match=r"teacher p3: the PatchTST checkpoint takes 3 channels.*has 4.*montage"):
        loose.embed([loose.prepare(x, 1.0, "quake")])


def test_when_the_folder_holds_a_chronos_like_t5_then_the_error_points_to_the_right_kind(tmp_path):
    import transformers as tf

    tf.T5EncoderModel(tf.T5Config(d_model=8, d_ff=16, num_layers=1, num_heads=2, d_kv=4, vocab_size=10)).save_pretrained(str(tmp_path / "t5"))
    with pytest.raises(TeacherError, match=r"teacher c: kind hf_timeseries takes .* holds 't5' \(Chronos: kind chronos"):
        build_teacher(TeacherConfig(name="c", kind="hf_timeseries", checkpoint=str(tmp_path / "t5")))
