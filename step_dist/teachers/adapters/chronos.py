"""Chronos / Chronos-Bolt / Chronos-2 through chronos-forecasting's own pipelines and their ``.embed()``.

The pipelines scale each series themselves (mean scaling / instance norm), so no scaling here. ``.embed``
gives the last encoder layer only; the token count (patches, plus a [REG] or EOS token where the model has
one) is measured once per length, because the three families tokenise differently.
"""
from __future__ import annotations

import numpy as np
import torch

from step_dist.teachers.adapters.hf_common import check_remote_code, load_error, locate_hf
from step_dist.teachers.protocol import Teacher, TeacherError


class ChronosTeacher(Teacher):
    family = "timeseries"
    native_rate_hz = None
    default_scaling = "none"

    def _locate(self) -> None:
        self.hf_config = locate_hf(self)
        if "chronos_config" not in self.hf_config and "chronos_pipeline_class" not in self.hf_config:
            raise TeacherError(f"teacher {self.name}: {self.local_dir} is not a Chronos checkpoint "
                               "(config.json has no chronos_config)")

    def _load(self) -> None:
        check_remote_code(self, self.hf_config)
        if self.layer != -1:
            raise TeacherError(f"teacher {self.name}: the chronos adapter gives the last encoder layer only (layer: -1)")
        from chronos import BaseChronosPipeline

        try:
            self.pipeline = BaseChronosPipeline.from_pretrained(self.local_dir, device_map=str(self.device))
        except Exception as e:  # noqa: BLE001
            raise load_error(self, e) from e
        ccfg = self.hf_config.get("chronos_config", {})
        self.context_length = int(self.cfg.options.get("context_length", ccfg.get("context_length", 512)))
        self.min_length = int(self.cfg.options.get("min_length", 2))
        self._token_counts: dict[int, int] = {}
        self.dim = int(self._run([np.zeros(max(self.min_length, 16), np.float32)]).shape[-1])

    def _run(self, seqs: list[np.ndarray]) -> torch.Tensor:
        x = torch.from_numpy(np.stack(seqs))
        with torch.inference_mode():
            if type(self.pipeline).__name__ == "Chronos2Pipeline":
                # Chronos-2 takes [series, variates, length] and returns one [variates, tokens, D] per series
                emb, _ = self.pipeline.embed(x[:, None, :], batch_size=len(seqs))
                return torch.stack([e[0] for e in emb]).float()
            emb, _ = self.pipeline.embed(x)
        return emb.float()

    def num_tokens(self, prepared_len: int) -> int:
        n = min(prepared_len, self.effective_context)
        if n not in self._token_counts:
            self._token_counts[n] = int(self._run([np.zeros(n, np.float32)]).shape[1])
        return self._token_counts[n]

    def _embed_sequences(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        return list(self._run(seqs).numpy())
