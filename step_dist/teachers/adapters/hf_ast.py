"""Audio Spectrogram Transformer (AST): ASTModel on ASTFeatureExtractor's Kaldi-style log-mel filterbank.

AST cuts a [frames, mel] spectrogram into overlapping 16x16 patches on a (frequency x time) grid and adds
two summary tokens ([CLS], distillation). A target token here is one time column of that grid: the summary
tokens are dropped and the patches of a column are averaged over frequency, so tokens run along time like
every other teacher's. Only columns that start on real audio are kept (the extractor zero-pads to
``max_length`` frames, 10 ms each).
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch

from step_dist.teachers.adapters.hf_common import check_remote_code, load_error, local_only, locate_hf, pick_layer
from step_dist.teachers.protocol import Teacher, TeacherError

FRAME, HOP = 400, 160  # the extractor's 25 ms window and 10 ms hop at 16 kHz (fixed in its numpy path)
AST_TYPE = "audio-spectrogram-transformer"


class HFASTTeacher(Teacher):
    family = "audio"
    native_rate_hz = 16000.0
    default_scaling = "none"  # the extractor normalises the filterbank with the dataset mean/std AST was trained with
    min_length = FRAME  # one analysis frame

    def _locate(self) -> None:
        self.hf_config = locate_hf(self)
        if self.hf_config.get("model_type") != AST_TYPE:
            raise TeacherError(f"teacher {self.name}: kind ast takes {AST_TYPE!r} models, {self.local_dir} holds "
                               f"{self.hf_config.get('model_type')!r}")

    def _load(self) -> None:
        check_remote_code(self, self.hf_config)
        from transformers import ASTFeatureExtractor, ASTModel

        try:
            model, info = ASTModel.from_pretrained(self.local_dir, output_loading_info=True, **local_only())
        except Exception as e:  # noqa: BLE001
            raise load_error(self, e) from e
        if info.get("missing_keys"):
            raise TeacherError(f"teacher {self.name}: {self.cfg.checkpoint} lacks AST weights "
                               f"({sorted(info['missing_keys'])[:3]}...); is it a truncated or different model?")
        self.model = model.to(self.device).eval()
        c = self.hf_config
        if os.path.exists(os.path.join(self.local_dir, "preprocessor_config.json")):
            self.fe = ASTFeatureExtractor.from_pretrained(self.local_dir, **local_only())
        else:  # AudioSet checkpoints ship one; a bare model folder gets the extractor its config implies
            self.fe = ASTFeatureExtractor(num_mel_bins=c["num_mel_bins"], max_length=c["max_length"])
        if (self.fe.num_mel_bins, self.fe.max_length) != (c["num_mel_bins"], c["max_length"]):
            raise TeacherError(f"teacher {self.name}: preprocessor_config.json gives {self.fe.num_mel_bins} mel bins x "
                               f"{self.fe.max_length} frames but the model takes {c['num_mel_bins']} x {c['max_length']}")
        self.native_rate_hz = float(self.fe.sampling_rate)
        self.f_dim, self.t_dim = self.model.embeddings.get_shape(self.model.config)
        self.context_length = (int(c["max_length"]) - 1) * HOP + FRAME  # exactly max_length frames
        self.dim = int(c["hidden_size"])

    def num_tokens(self, prepared_len: int) -> int:
        n = min(prepared_len, self.effective_context)
        frames = 1 + (n - FRAME) // HOP
        return min(self.t_dim, int(math.ceil(frames / self.hf_config["time_stride"])))

    def _embed_sequences(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        feats = self.fe(list(seqs), sampling_rate=int(self.native_rate_hz), return_tensors="pt")["input_values"]
        with torch.inference_mode(), _autocast(self.device):
            h = pick_layer(self, self.model(feats.to(self.device), output_hidden_states=True)).float()
        # [B, 2 + F*T, D]: patches are frequency-major (conv output flattened as [F, T])
        grid = h[:, 2:].reshape(h.shape[0], self.f_dim, self.t_dim, h.shape[-1]).mean(dim=1)
        return list(grid[:, : self.num_tokens(seqs[0].shape[-1])].cpu().numpy())


def _autocast(device: torch.device):
    import contextlib

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
