"""Hugging Face audio teachers: tiny random wav2vec2 / HuBERT / WavLM / Whisper saved with save_pretrained."""
from __future__ import annotations

import numpy as np
import pytest

from step_dist import storage
from step_dist.teachers import TeacherConfig, TeacherError, build_teacher

CONV = dict(conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_feat_extract_layers=2)
SMALL = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
             num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)


def save_tiny(kind: str, folder) -> str:
    import torch
    import transformers as tf

    torch.manual_seed(0)
    if kind == "whisper":
        cfg = tf.WhisperConfig(d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                               decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8,
                               max_source_positions=50, max_target_positions=8, vocab_size=60,
                               pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=3)
        tf.WhisperModel(cfg).save_pretrained(str(folder))
        tf.WhisperFeatureExtractor(feature_size=8, chunk_length=1).save_pretrained(str(folder))
        return str(folder)
    cls = {"wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model), "hubert": (tf.HubertConfig, tf.HubertModel),
           "wavlm": (tf.WavLMConfig, tf.WavLMModel)}[kind]
    extra = {"num_buckets": 8, "max_bucket_distance": 20} if kind == "wavlm" else {}
    cls[1](cls[0](**SMALL, **CONV, **extra)).save_pretrained(str(folder))
    return str(folder)


def _sine(f, rate, seconds, channels=1):
    t = np.arange(int(rate * seconds)) / rate
    return np.stack([np.sin(2 * np.pi * f * (c + 1) * t) for c in range(channels)]).astype(np.float32)


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert", "wavlm", "whisper"])
def test_when_a_tiny_hf_audio_encoder_is_loaded_from_a_folder_then_targets_have_its_shape(kind, tmp_path):
    folder = save_tiny(kind, tmp_path / kind)
    t = build_teacher(TeacherConfig(name=kind, kind="hf_audio", checkpoint=folder, layer=1))
    assert (t.family, t.native_rate_hz, t.dim) == ("audio", 16000.0, 16)
    x = _sine(300, 8000, 0.4, channels=2)  # 0.4 s at 8 kHz -> 6,400 samples at 16 kHz
    p = t.prepare(x, 8000, "clip")
    assert p.shape == (2, 6400)
    a, b = t.embed([p, p[:, :3000]]), t.embed([p, p[:, :3000]])
    want = 20 if kind == "whisper" else t.num_tokens(6400)
    assert a[0].shape == (want, 16) and a[1].shape == (t.num_tokens(3000), 16)
    np.testing.assert_array_equal(a[0], b[0])
    assert np.isfinite(a[0]).all() and a[0].std() > 0


def test_when_a_wav2vec2_checkpoint_is_in_s3_then_it_loads_and_matches_the_local_copy(tmp_path, s3_bucket):
    folder = save_tiny("wav2vec2", tmp_path / "w2v")
    storage.upload_dir(folder, f"{s3_bucket}/w2v")
    x = _sine(440, 16000, 0.2)
    outs = []
    for ck in (folder, f"{s3_bucket}/w2v"):
        t = build_teacher(TeacherConfig(name="w", kind="hf_audio", checkpoint=ck, cache_dir=str(tmp_path / "dl")))
        outs.append(t.embed([t.prepare(x, 16000)])[0])
    np.testing.assert_array_equal(outs[0], outs[1])


def test_when_an_hf_audio_folder_holds_another_model_then_the_error_names_it(tmp_path):
    import transformers as tf

    tf.T5EncoderModel(tf.T5Config(d_model=8, d_ff=16, num_layers=1, num_heads=2, d_kv=4, vocab_size=10)).save_pretrained(str(tmp_path / "t5"))
    with pytest.raises(TeacherError, match=r"teacher a: hf_audio takes .* holds 't5'"):
        build_teacher(TeacherConfig(name="a", kind="hf_audio", checkpoint=str(tmp_path / "t5")))
