"""General time-series models that transformers implements natively: PatchTST and TimesFM.

Both scale each series themselves (PatchTST's std scaler, TimesFM's patch-statistics normalisation), so no
scaling here; both are rate-free. Targets are one token per input patch:

- PatchTST takes exactly ``context_length`` steps of ``num_input_channels`` channels. Shorter views are
  left-padded and marked unobserved (``past_observed_mask``); only patches lying wholly on real data are kept.
  Its pretraining checkpoints mask random patches: masking is switched off so targets are deterministic.
  A one-channel model sees every record channel on its own; a multi-channel one needs exactly its channels
  (``channel_mode: montage``), and a record's target is the mean of the channel tokens.
- TimesFM (published as TimesFmModelForPrediction; the decoder stack is the encoder here) takes any length
  up to ``context_length``; views are left-padded to whole patches with the padding flag set, as its own
  preprocessing does. ``options.freq`` is its frequency class (0 = high, 1 = medium, 2 = low; default 0).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from step_dist.teachers.adapters.hf_common import check_remote_code, load_error, local_only, locate_hf, pick_layer
from step_dist.teachers.protocol import Teacher, TeacherError, TeacherInputError

TYPES = ("patchtst", "timesfm")


class HFTimeSeriesTeacher(Teacher):
    family = "timeseries"
    native_rate_hz = None
    default_scaling = "none"

    def _locate(self) -> None:
        self.hf_config = locate_hf(self)
        self.model_type = self.hf_config.get("model_type", "")
        if self.model_type not in TYPES:
            raise TeacherError(f"teacher {self.name}: kind hf_timeseries takes {TYPES} models, {self.local_dir} holds "
                               f"{self.model_type!r} (Chronos: kind chronos; other models: kind hf_remote)")

    def _load(self) -> None:
        check_remote_code(self, self.hf_config)
        from transformers import PatchTSTModel, TimesFmModel

        cls = PatchTSTModel if self.model_type == "patchtst" else TimesFmModel
        try:
            # the base model out of any head checkpoint (ForPretraining / ForPrediction): prefixes are stripped
            model, info = cls.from_pretrained(self.local_dir, output_loading_info=True, **local_only())
        except Exception as e:  # noqa: BLE001
            raise load_error(self, e) from e
        if info.get("missing_keys"):
            raise TeacherError(f"teacher {self.name}: {self.cfg.checkpoint} lacks {self.model_type} weights "
                               f"({sorted(info['missing_keys'])[:3]}...); is it a truncated or different model?")
        c = model.config
        if self.model_type == "patchtst":
            model.do_mask_input = False  # pretraining checkpoints mask random patches; targets must not
            model.masking = torch.nn.Identity()
            self.patch, self.stride = int(c.patch_length), int(c.patch_stride)
            self.n_channels = int(c.num_input_channels)
            self.multichannel = self.n_channels > 1
            self.min_length = self.patch
            self.n_patches = (max(c.context_length, self.patch) - self.patch) // self.stride + 1
        else:
            self.patch = self.stride = int(c.patch_length)
            self.freq = int(self.cfg.options.get("freq", 0))
            if not 0 <= self.freq < int(c.freq_size):
                raise TeacherError(f"teacher {self.name}: options.freq {self.freq} not in 0..{c.freq_size - 1}")
            self.min_length = 1
        self.context_length = int(c.context_length)
        self.model = model.to(self.device).eval()
        self.dim = int(c.d_model if self.model_type == "patchtst" else c.hidden_size)

    def num_tokens(self, prepared_len: int) -> int:
        n = min(prepared_len, self.effective_context)
        if self.model_type == "timesfm":
            return int(math.ceil(n / self.patch))
        # patches are laid out from the end of the context; keep those wholly on the last n (real) steps
        return min(self.n_patches, (n - self.patch) // self.stride + 1) if n >= self.patch else 0

    def _embed_sequences(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        n = seqs[0].shape[-1]
        x = np.stack([np.atleast_2d(s) for s in seqs])  # [B, C, n]
        with torch.inference_mode(), _autocast(self.device):
            if self.model_type == "patchtst":
                h = self._patchtst(x)
            else:
                h = self._timesfm(x[:, 0])
        t = self.num_tokens(n)
        return list(h[:, h.shape[1] - t :].float().cpu().numpy())

    def _patchtst(self, x: np.ndarray) -> torch.Tensor:
        b, c, n = x.shape
        if c != self.n_channels:
            raise TeacherInputError(f"teacher {self.name}: the PatchTST checkpoint takes {self.n_channels} channels, "
                                    f"the prepared view has {c}; set channel_mode: montage with its {self.n_channels} channel names")
        ctx = self.context_length
        v = np.zeros((b, ctx, c), dtype=np.float32)
        v[:, ctx - n :] = x.transpose(0, 2, 1)
        observed = np.zeros_like(v)
        observed[:, ctx - n :] = 1.0
        out = self.model(past_values=torch.from_numpy(v).to(self.device),
                         past_observed_mask=torch.from_numpy(observed).to(self.device), output_hidden_states=True)
        return pick_layer(self, out).mean(dim=1)  # [B, C, P, D] -> channel mean

    def _timesfm(self, x: np.ndarray) -> torch.Tensor:
        b, n = x.shape
        total = int(math.ceil(n / self.patch)) * self.patch
        v = np.zeros((b, total), dtype=np.float32)
        v[:, total - n :] = x
        pad = np.ones((b, total), dtype=np.float32)
        pad[:, total - n :] = 0.0
        out = self.model(past_values=torch.from_numpy(v).to(self.device),
                         past_values_padding=torch.from_numpy(pad).to(self.device),
                         freq=torch.full((b, 1), self.freq, dtype=torch.long, device=self.device),
                         output_hidden_states=True)
        return pick_layer(self, out)


def _autocast(device: torch.device):
    import contextlib

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
