"""AST teachers: a tiny random ASTModel + ASTFeatureExtractor saved with save_pretrained, loaded locally and from S3."""
from __future__ import annotations

import os

import numpy as np
import pytest

from step_dist import storage
from step_dist.teachers import TeacherConfig, TeacherError, build_teacher

MEL, FRAMES, STRIDE = 32, 100, 8  # 100 frames of 10 ms = ~1 s of context; 16x16 patches every 8 frames


def save_tiny_ast(folder, seed: int = 0) -> str:
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    cfg = tf.ASTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                       num_mel_bins=MEL, max_length=FRAMES, patch_size=16, frequency_stride=STRIDE, time_stride=STRIDE)
    tf.ASTModel(cfg).save_pretrained(str(folder))
    tf.ASTFeatureExtractor(num_mel_bins=MEL, max_length=FRAMES).save_pretrained(str(folder))
    return str(folder)


def _sine(f, rate, seconds, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([np.sin(2 * np.pi * f * (c + 1) * t) for c in range(channels)]).astype(np.float32)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_when_a_tiny_ast_is_loaded_then_tokens_are_time_columns_of_real_audio_and_deterministic(tmp_path, s3_bucket, where):
    folder = save_tiny_ast(tmp_path / "ast")
    ck = folder
    if where == "s3":
        storage.upload_dir(folder, f"{s3_bucket}/ast")
        ck = f"{s3_bucket}/ast"
    t = build_teacher(TeacherConfig(name="ast", kind="ast", checkpoint=ck, cache_dir=str(tmp_path / "dl")))
    assert (t.family, t.native_rate_hz, t.dim) == ("audio", 16000.0, 16)
    assert t.context_length == (FRAMES - 1) * 160 + 400
    x = _sine(500, 8000, 2.0, channels=2)  # 2 s at 8 kHz: cropped to the 1.0 s context after resampling
    p = t.prepare(x, 8000, "clip")
    assert p.shape == (2, t.context_length)
    a, b = t.embed([p, p[:, :4000]]), t.embed([p, p[:, :4000]])
    t_dim = (FRAMES - 16) // STRIDE + 1
    assert a[0].shape == (t_dim, 16)  # a full context covers every time column of the patch grid
    frames = 1 + (4000 - 400) // 160  # 23 frames of real audio -> columns starting on them
    assert a[1].shape == (int(np.ceil(frames / STRIDE)), 16) == (t.num_tokens(4000), 16)
    np.testing.assert_array_equal(a[0], b[0])
    assert np.isfinite(a[0]).all() and a[0].std() > 0
    # the first columns see the same audio either way but attention spans the whole grid: targets differ
    assert not np.allclose(a[0][:3], a[1][:3])


def test_when_the_ast_checkpoint_changes_then_the_fingerprint_and_targets_change(tmp_path):
    one, two = save_tiny_ast(tmp_path / "a", seed=0), save_tiny_ast(tmp_path / "b", seed=1)
    ta = build_teacher(TeacherConfig(name="ast", kind="ast", checkpoint=one))
    tb = build_teacher(TeacherConfig(name="ast", kind="ast", checkpoint=two))
    assert ta.fingerprint != tb.fingerprint
    p = ta.prepare(_sine(440, 16000, 0.5), 16000, "clip")
    assert not np.allclose(ta.embed([p])[0], tb.embed([p])[0])


def test_when_the_feature_extractor_does_not_fit_the_model_then_the_error_names_both_shapes(tmp_path):
    import transformers as tf

    folder = save_tiny_ast(tmp_path / "ast")
    tf.ASTFeatureExtractor(num_mel_bins=MEL, max_length=FRAMES * 2).save_pretrained(folder)
    with pytest.raises(TeacherError, match=rf"teacher ast: .*{MEL} mel bins x {FRAMES * 2} frames .* {MEL} x {FRAMES}"):
        build_teacher(TeacherConfig(name="ast", kind="ast", checkpoint=folder))


def test_when_the_ast_weights_are_truncated_then_the_error_names_the_teacher(tmp_path):
    folder = save_tiny_ast(tmp_path / "ast")
    w = os.path.join(folder, "model.safetensors")
    data = open(w, "rb").read()
    open(w, "wb").write(data[: len(data) // 2])
    with pytest.raises(TeacherError, match=r"teacher ast: cannot load .* as a ast model"):
        build_teacher(TeacherConfig(name="ast", kind="ast", checkpoint=folder))


def test_when_an_ast_folder_holds_another_model_then_the_error_names_it(tmp_path):
    import transformers as tf

    folder = str(tmp_path / "w")
    tf.Wav2Vec2Model(tf.Wav2Vec2Config(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                                       conv_dim=(8,), conv_stride=(5,), conv_kernel=(10,), num_feat_extract_layers=1,
                                       num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)).save_pretrained(folder)
    with pytest.raises(TeacherError, match=r"teacher a: kind ast takes .* holds 'wav2vec2'"):
        build_teacher(TeacherConfig(name="a", kind="ast", checkpoint=folder))
