"""Hugging Face audio encoders: wav2vec2, HuBERT, WavLM (raw waveform) and the Whisper encoder (log-mel).

Targets are ``hidden_states[layer]`` (-1 = last). Waveform models get the per-record standardisation their
feature extractors apply (do_normalize); Whisper gets WhisperFeatureExtractor's log-mel of a zero-padded
window and its tokens are cut to the ones that cover real audio (one per 20 ms).
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch

from step_dist.teachers.adapters.hf_common import check_remote_code, load_error, local_only, locate_hf, pick_layer
from step_dist.teachers.protocol import Teacher, TeacherError

WAVEFORM = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "wav2vec2-conformer", "unispeech", "unispeech-sat")


class HFAudioTeacher(Teacher):
    family = "audio"
    native_rate_hz = 16000.0

    def _locate(self) -> None:
        self.hf_config = locate_hf(self)
        self.model_type = self.hf_config.get("model_type", "")
        if self.model_type not in WAVEFORM + ("whisper",):
            raise TeacherError(f"teacher {self.name}: hf_audio takes {WAVEFORM + ('whisper',)} models, "
                               f"{self.local_dir} holds {self.model_type!r}; use kind hf_remote for other models")

    @property
    def default_scaling(self) -> str:  # type: ignore[override]
        return "none" if self.model_type == "whisper" else "standardize"

    def _load(self) -> None:
        check_remote_code(self, self.hf_config)
        from transformers import AutoModel

        try:
            model = AutoModel.from_pretrained(self.local_dir, **local_only())
        except Exception as e:  # noqa: BLE001
            raise load_error(self, e) from e
        if self.model_type == "whisper":
            from transformers import WhisperFeatureExtractor

            enc = model.get_encoder()
            del model  # the decoder is never used
            self.model = enc.to(self.device).eval()
            if os.path.exists(os.path.join(self.local_dir, "preprocessor_config.json")):
                self.fe = WhisperFeatureExtractor.from_pretrained(self.local_dir, **local_only())
            else:
                self.fe = WhisperFeatureExtractor(feature_size=self.hf_config["num_mel_bins"])
            self.native_rate_hz = float(self.fe.sampling_rate)
            self.context_length = int(self.fe.n_samples)
            self.min_length = int(self.fe.hop_length) * 2
            frames = int(self.hf_config["max_source_positions"]) * 2
            if frames != self.fe.nb_max_frames:
                raise TeacherError(f"teacher {self.name}: the feature extractor gives {self.fe.nb_max_frames} frames "
                                   f"but the encoder takes {frames}; the checkpoint's preprocessor_config.json does not fit")
        else:
            self.model = model.to(self.device).eval()
            self.context_length = int(float(self.cfg.options.get("context_seconds", 30)) * self.native_rate_hz)
            self.min_length = 400  # the conv feature encoder's receptive field (25 ms)
        self.dim = int(self.hf_config.get("d_model") or self.hf_config["hidden_size"])

    def num_tokens(self, prepared_len: int) -> int:
        n = min(prepared_len, self.effective_context)
        if self.model_type == "whisper":
            return min(int(math.ceil(n / (2 * self.fe.hop_length))), int(self.hf_config["max_source_positions"]))
        return int(self.model._get_feat_extract_output_lengths(torch.tensor(n)).item())

    def _embed_sequences(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        n = seqs[0].shape[-1]
        if self.model_type == "whisper":
            feats = self.fe([s for s in seqs], sampling_rate=int(self.native_rate_hz), return_tensors="pt")
            x = feats["input_features"].to(self.device)
        else:
            x = torch.from_numpy(np.stack(seqs)).to(self.device)
        with torch.inference_mode(), _autocast(self.device):
            h = pick_layer(self, self.model(x, output_hidden_states=True)).float()
        t = self.num_tokens(n)
        return list(h[:, :t].cpu().numpy())


def _autocast(device: torch.device):
    import contextlib

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
