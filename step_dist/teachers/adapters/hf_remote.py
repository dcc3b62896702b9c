"""Any Hugging Face model folder (AutoModel), including models that ship their own code (SPEAR, Time-MoE).

Model code from a checkpoint runs only with ``trust_remote_code: true`` in the teacher config. Options:
``input_name`` (the forward argument taking the series; "input_values", Time-MoE: "input_ids"),
``rate_hz`` (native rate; absent = rate-free), ``context_length``, ``min_length``, ``family``,
``default_scaling`` ("standardize" unless the model scales internally: then "none"), ``multichannel``,
``auto_class`` (the transformers Auto class its auto_map names; default "AutoModel", Time-MoE:
"AutoModelForCausalLM").
"""
from __future__ import annotations

import numpy as np
import torch

from step_dist.teachers.adapters.hf_common import check_remote_code, load_error, local_only, locate_hf, pick_layer
from step_dist.teachers.protocol import FAMILIES, Teacher, TeacherError


class HFRemoteTeacher(Teacher):
    def _locate(self) -> None:
        self.hf_config = locate_hf(self)

    def _load(self) -> None:
        check_remote_code(self, self.hf_config)
        import transformers

        o = self.cfg.options
        auto = o.get("auto_class", "AutoModel")
        if not str(auto).startswith("AutoModel") or not hasattr(transformers, auto):
            raise TeacherError(f"teacher {self.name}: options.auto_class {auto!r} is not a transformers AutoModel* class "
                               "(e.g. AutoModel, AutoModelForCausalLM: the key the checkpoint's auto_map uses)")
        try:
            self.model = getattr(transformers, auto).from_pretrained(self.local_dir, trust_remote_code=self.cfg.trust_remote_code,
                                                   **local_only()).to(self.device).eval()
        except Exception as e:  # noqa: BLE001 - transformers raises many types for bad folders
            raise load_error(self, e) from e
        self.family = o.get("family", "timeseries")
        if self.family not in FAMILIES:
            raise TeacherError(f"teacher {self.name}: options.family {self.family!r} not in {FAMILIES}")
        self.native_rate_hz = float(o["rate_hz"]) if o.get("rate_hz") else None
        self.default_scaling = o.get("default_scaling", "standardize")
        self.multichannel = bool(o.get("multichannel", False))
        self.input_name = o.get("input_name", "input_values")
        self.context_length = int(o.get("context_length", 0))
        self.min_length = int(o.get("min_length", 1))
        self._token_counts: dict[int, int] = {}
        probe = self._forward([np.zeros(max(self.min_length, 16), np.float32)])
        self.dim = int(probe.shape[-1])

    def _forward(self, seqs: list[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(seqs)).to(self.device)
        with torch.inference_mode(), _autocast(self.device):
            out = self.model(**{self.input_name: x}, output_hidden_states=True)
        return pick_layer(self, out).float()

    def num_tokens(self, prepared_len: int) -> int:
        n = min(prepared_len, self.effective_context) if self.effective_context else prepared_len
        if n not in self._token_counts:  # remote models do not say how they tokenise: measure once per length
            self._token_counts[n] = int(self._forward([np.zeros(n, np.float32)]).shape[1])
        return self._token_counts[n]

    def _embed_sequences(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        h = self._forward(seqs).cpu().numpy()
        self._token_counts.setdefault(seqs[0].shape[-1], h.shape[1])
        return list(h)


def _autocast(device: torch.device):
    import contextlib

    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
