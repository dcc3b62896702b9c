"""fracast: a small general time-series forecaster whose real pretrained weights ship in its wheel.

The targets are the core's hidden states (one per time step, dim 64), averaged over ``token_pool`` steps
(default 16) so a 2,048-step context gives 128 tokens. Inputs are min/max scaled per series exactly as
fracast's own FracastModel does before its core sees them.
"""
from __future__ import annotations

import json
import os

import numpy as np
import torch

from step_dist.teachers import checkpoint as ck
from step_dist.teachers.protocol import Teacher, TeacherError, pooled_length


class FracastTeacher(Teacher):
    family = "timeseries"
    native_rate_hz = None
    default_scaling = "none"  # the model scales each series itself (done in _embed_sequences)
    min_length = 8  # fracast needs 8 observations

    def _locate(self) -> None:
        folder = ck.resolve(self.cfg, builtin=os.path.join(ck.package_dir("fracast"), "weights"))
        self.local_dir = folder
        self.weight_files = ck.require(self.cfg, folder, ["config.json"]) + ck.require(self.cfg, folder, ["model.safetensors"])

    def _load(self) -> None:
        try:
            from fracast._core.model import _recency_encoding, build_from_cfg
        except ImportError:
            raise TeacherError(f"teacher {self.name}: kind 'fracast' needs the fracast package: "
                               "pip install 'step-dist[demo]'") from None
        self._recency = _recency_encoding
        cfg_path, weights = self.weight_files
        try:
            mcfg = json.loads(open(cfg_path).read())
            core, _head = build_from_cfg({k: mcfg[k] for k in ("model", "pyramid")})
        except Exception as e:  # noqa: BLE001
            raise TeacherError(f"teacher {self.name}: {cfg_path} is not a fracast config ({e})") from e
        state = ck.load_state_dict(self.cfg, weights)
        core_state = {k.removeprefix("core."): v for k, v in state.items() if k.startswith("core.")}
        ck.load_strict(self.cfg, core, core_state, weights)
        self.core = core.to(self.device).eval()
        self.context_length = int(core.W)
        self.dim = int(core.d)
        self.pool = self.cfg.token_pool or 16
        n = len(core.dilations())
        self.n_stages = n if self.layer in (-1, n) else self.layer
        if not 0 <= self.n_stages <= n:
            raise TeacherError(f"teacher {self.name}: layer {self.layer} out of range (fracast has {n} stages; -1 = last)")

    def num_tokens(self, prepared_len: int) -> int:
        return pooled_length(min(prepared_len, self.effective_context), self.pool)

    def _embed_sequences(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        x = np.stack(seqs).astype(np.float64)  # [B, n]
        b, n = x.shape
        lo = x.min(axis=1, keepdims=True)
        span = np.maximum(x.max(axis=1, keepdims=True) - lo, 1e-5)
        W = self.context_length
        v = np.zeros((b, W), dtype=np.float32)
        v[:, W - n :] = (x - lo) / span  # left-padded: the series ends where the forecast would start
        mask = np.zeros((b, W), dtype=bool)
        mask[:, W - n :] = True
        values = torch.from_numpy(v).to(self.device)
        m = torch.from_numpy(mask).to(self.device)
        h = self._hidden(values, m)[:, W - n :]  # [B, n, D]
        return [self._pool(h[i].float().cpu().numpy()) for i in range(b)]

    def _hidden(self, v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        # FracastCore.forward, stopped after ``n_stages`` stages (the final norm only for the last layer)
        core = self.core
        c = m.to(v.dtype)
        bsz, length = v.shape
        feats = [v.unsqueeze(-1), c.unsqueeze(-1)]
        if core.use_recency:
            pos = torch.arange(length, device=v.device).unsqueeze(0).expand(bsz, -1)
            feats.append(self._recency(pos, length).to(v.dtype))
        x = core.in_proj(torch.cat(feats, dim=-1))
        if core.periodic is not None:
            x = x + core.periodic(v, m, core.level_widths)
        for i, dil in enumerate(core.dilations()[: self.n_stages]):
            xi = x if core.scale is None else core.scale(x, dil)
            x = core.block(xi, dil) if core.share_stages else core.blocks[i](xi, dil)
        return core.norm(x) if self.n_stages == len(core.dilations()) else x

    def _pool(self, h: np.ndarray) -> np.ndarray:
        p = self.pool
        if p <= 1:
            return h
        n = h.shape[0]
        t = pooled_length(n, p)
        out = np.add.reduceat(h, np.arange(0, n, p), axis=0)
        counts = np.minimum(p, n - np.arange(0, n, p))[:, None]
        return (out / counts)[:t].astype(np.float32)
