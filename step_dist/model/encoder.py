"""STEPEncoder: the student. Statistics compensation -> conv stem -> adaptive patching -> token projection
with positions -> axial Transformer blocks -> token and pooled outputs.

Shapes: values [B, C, L] zero padded, lengths [B], channel_mask [B, C]. Channels stay separate through the
stem and the patching (channel-independent), then attention mixes time within a channel and channels at a
token position. Outputs keep padding at exactly zero, and the real part of a record never depends on what
else is in the batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from step_dist.model import export
from step_dist.model.batching import as_record_array, collate
from step_dist.model.config import StudentConfig
from step_dist.model.layers import AxialBlock, ConvStem, sinusoid
from step_dist.model.patching import AdaptivePatching
from step_dist.model.stats import compensate, time_mask


@dataclass
class EncoderOutput:
    tokens: torch.Tensor  # [B, N, D] masked mean over real channels
    channel_tokens: torch.Tensor  # [B, C, N, D]
    token_mask: torch.Tensor  # [B, N] True = real token
    pooled: torch.Tensor  # [B, D] masked mean over real tokens
    penalty: torch.Tensor  # scalar patching penalty (0 inside the bounds)
    stride: torch.Tensor  # [B] stride used, in samples
    n_tokens: torch.Tensor  # [B] real tokens per record


class STEPEncoder(nn.Module):
    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.stem = ConvStem(config.stem_width, config.stem_kernel)
        self.patching = AdaptivePatching(config)
        n_stats = 2 if config.stats_compensation else 0
        self.token_proj = nn.Linear(config.stem_width * config.sub_points + n_stats, d)
        # per-record context: log stride and log sampling rate (a learned vector stands in for an unknown rate)
        self.stride_proj = nn.Linear(1, d)
        self.rate_proj = nn.Linear(1, d)
        self.rate_unknown = nn.Parameter(torch.zeros(d))
        self.blocks = nn.ModuleList(
            AxialBlock(d, config.n_heads, config.mlp_ratio, config.dropout) for _ in range(config.n_layers)
        )
        self.norm = nn.LayerNorm(d)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- forward ------------------------------------------------------------------------------------------
    def forward(
        self,
        values: torch.Tensor,
        lengths: torch.Tensor,
        channel_mask: torch.Tensor | None = None,
        sampling_rate_hz: torch.Tensor | None = None,
        num_tokens: torch.Tensor | None = None,
    ) -> EncoderOutput:
        cfg = self.config
        values, lengths, channel_mask = self._check(values, lengths, channel_mask, num_tokens)
        b, c, length = values.shape
        dev = values.device

        # 1. statistics compensation (z-score per record and channel; the scale kept as features)
        z, stats = compensate(values, lengths, cfg.std_floor_rel, cfg.std_floor_abs)
        # 2. channel-independent stem on [B*C, 1, L]
        tmask = time_mask(lengths, length)
        feats = self.stem(z.reshape(b * c, 1, length), tmask.repeat_interleave(c, 0)[:, None, :])
        # 3. adaptive patching: [B, L, C*W] -> [B, N, K, C*W] -> [B, C, N, K*W]
        plan = self.patching.plan(lengths, num_tokens)
        feats = feats.view(b, c * cfg.stem_width, length).transpose(1, 2)
        tok = self.patching.pool(feats, lengths, plan)
        n = tok.shape[1]
        tok = tok.view(b, n, cfg.sub_points, c, cfg.stem_width).permute(0, 3, 1, 2, 4).reshape(b, c, n, -1)
        if cfg.stats_compensation:
            # scaled by 1/10 so log-magnitudes (|log std| up to ~50) enter at O(1)
            tok = torch.cat([tok, (stats / 10.0)[:, :, None, :].expand(b, c, n, 2)], dim=-1)
        x = self.token_proj(tok)
        # 4. positions: token centre in samples, log stride, log sampling rate
        token_mask = plan.token_mask()
        x = x + sinusoid(plan.centres(), cfg.d_model, cfg.max_period)[:, None]
        ctx = self.stride_proj(plan.stride.float().log()[:, None] / 5.0)
        if sampling_rate_hz is not None:
            rate = sampling_rate_hz.to(dev, torch.float32)
            known = torch.isfinite(rate) & (rate > 0)
            rate_emb = self.rate_proj(torch.where(known, rate, 1.0).log()[:, None] / 10.0)
            ctx = ctx + torch.where(known[:, None], rate_emb, self.rate_unknown)
        else:
            ctx = ctx + self.rate_unknown
        x = x + ctx[:, None, None, :]
        padded = not (bool(token_mask.all()) and bool(channel_mask.all()))
        valid = channel_mask[:, :, None, None] & token_mask[:, None, :, None]
        if padded:
            x = x * valid
        # 5. axial Transformer
        for block in self.blocks:
            if cfg.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, token_mask, channel_mask, padded, use_reentrant=False)
            else:
                x = block(x, token_mask, channel_mask, padded)
        x = self.norm(x) * valid
        # 6. outputs
        n_ch = channel_mask.sum(1).clamp_min(1).to(x.dtype)
        tokens = x.sum(1) / n_ch[:, None, None]
        n_tok = plan.n_tokens.clamp_min(1).to(x.dtype)
        pooled = tokens.sum(1) / n_tok[:, None]
        return EncoderOutput(tokens, x, token_mask, pooled, plan.penalty, plan.stride, plan.n_tokens)

    @staticmethod
    def _check(values, lengths, channel_mask, num_tokens):
        if values.ndim != 3:
            raise ValueError(f"values must be [batch, channels, length], got shape {tuple(values.shape)}")
        b, c, length = values.shape
        lengths = torch.as_tensor(lengths, device=values.device).long().reshape(-1)
        if lengths.shape[0] != b:
            raise ValueError(f"lengths has {lengths.shape[0]} entries for a batch of {b}")
        bad = ((lengths < 1) | (lengths > length)).nonzero().flatten()
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"record {i} in the batch has length {int(lengths[i])}, outside [1, {length}]")
        if channel_mask is None:
            channel_mask = torch.ones(b, c, dtype=torch.bool, device=values.device)
        channel_mask = channel_mask.to(values.device, torch.bool)
        if tuple(channel_mask.shape) != (b, c):
            raise ValueError(f"channel_mask must be [{b}, {c}], got {tuple(channel_mask.shape)}")
        empty = (~channel_mask.any(1)).nonzero().flatten()
        if len(empty):
            raise ValueError(f"record {int(empty[0])} in the batch has no real channel (channel_mask all False)")
        if num_tokens is not None:
            num_tokens = torch.as_tensor(num_tokens).reshape(-1)
            if num_tokens.shape[0] != b or bool((num_tokens < 1).any()):
                raise ValueError(f"num_tokens must hold {b} counts >= 1, got {num_tokens.tolist()}")
        # padded channels may hold anything; zero them so nothing non-finite reaches the stem
        values = torch.where(channel_mask[:, :, None], values, 0.0)
        return values, lengths, channel_mask

    # -- inference on raw arrays --------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, values, sampling_rate_hz=None, batch_size: int = 8, return_tokens: bool = False,
               pooling: str = "mean"):
        """Embed raw numpy records of any length and channel count.

        values: one array [C, L] (or [L]) -> pooled [F]; or a list of them -> [n, F]. sampling_rate_hz: one
        float for all, a list (one per record), or None. ``pooling`` (step_dist.model.pooling): mean (F = D),
        mean+std or mean+max (2D), channels (C*D; every record must then have the same channel count).
        Records are sorted by length and batched (``batch_size`` at a time) to limit padding. With
        return_tokens=True, returns (pooled, tokens) where tokens is [N, D] for one record or a list of
        [N_i, D] arrays.
        """
        from step_dist.model.pooling import check_pooling, pool_record_channels, pool_tokens

        check_pooling(pooling)
        single = not isinstance(values, (list, tuple))
        arrays = [as_record_array(v, f"record {i}") for i, v in enumerate([values] if single else values)]
        if isinstance(sampling_rate_hz, (list, tuple, np.ndarray)):
            rates = [float(r) for r in sampling_rate_hz]
            if len(rates) != len(arrays):
                raise ValueError(f"got {len(rates)} sampling rates for {len(arrays)} records")
        else:
            rates = [math.nan if sampling_rate_hz is None else float(sampling_rate_hz)] * len(arrays)
        was_training = self.training
        self.eval()
        try:
            order = sorted(range(len(arrays)), key=lambda i: (arrays[i].shape[1], arrays[i].shape[0]))
            pooled: list[np.ndarray | None] = [None] * len(arrays)
            tokens: list[np.ndarray | None] = [None] * len(arrays)
            for s in range(0, len(order), max(1, batch_size)):
                chunk = order[s : s + batch_size]
                vals, lens, cmask = collate([arrays[i] for i in chunk])
                rate = torch.tensor([rates[i] for i in chunk], dtype=torch.float32)
                cmask = cmask.to(self.device)
                out = self(vals.to(self.device), lens.to(self.device), cmask, rate.to(self.device))
                if pooling == "channels":
                    emb = pool_record_channels(out.channel_tokens, out.token_mask, cmask)
                else:
                    emb = pool_tokens(out.tokens, out.token_mask, pooling)
                for j, i in enumerate(chunk):
                    pooled[i] = emb[j].float().cpu().numpy()
                    if return_tokens:
                        tokens[i] = out.tokens[j, : int(out.n_tokens[j])].float().cpu().numpy()
        finally:
            self.train(was_training)
        if not single and len({p.shape for p in pooled}) > 1:
            counts = sorted({a.shape[0] for a in arrays})
            raise ValueError(f"pooling 'channels' needs one channel count for all records, got {counts}: "
                             "use another pooling or records with the same channels")
        emb = pooled[0] if single else np.stack(pooled)
        if return_tokens:
            return emb, (tokens[0] if single else tokens)
        return emb

    # -- export -------------------------------------------------------------------------------------------
    def save_pretrained(self, dir_or_uri: str) -> None:
        """Write config.json + model.safetensors to a local folder or an s3:// / gs:// prefix."""
        export.save(self, self.config, dir_or_uri)

    @classmethod
    def from_pretrained(cls, dir_or_uri: str, map_location: str | torch.device = "cpu") -> "STEPEncoder":
        """Load an export written by save_pretrained (local folder or object storage)."""
        config, state = export.load(dir_or_uri)
        # Built on the meta device first: the config alone must not decide how much memory is allocated (a
        # 1 KB config.json can ask for terabytes); only shapes that match the weights on disk are materialised.
        with torch.device("meta"):
            model = cls(config)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state.items()}
        if expected != found:
            missing = sorted(set(expected) - set(found))
            unexpected = sorted(set(found) - set(expected))
            wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
            raise export.ConfigError(
                f"weights at {dir_or_uri} do not match the config there (missing {missing[:5]}, unexpected "
                f"{unexpected[:5]}, other shapes {wrong[:5]}): the export is damaged or from another version"
            )
        model.load_state_dict(state, assign=True)
        return model.to(map_location)
