"""How a record's tokens become one embedding: the pooling modes of `STEPEncoder.encode`, `embed` and evaluate.

    mean       token mean over real tokens (of the channel-averaged tokens)            [D]
    mean+std   the mean and the spread over time of every feature                      [2D]
    mean+max   the mean and the maximum over time                                      [2D]
    channels   per-channel token means, concatenated in channel order                  [C*D]

A mean over time keeps what is constant in a record and loses how it changes; mean+std keeps how much each
feature moves. A mean over channels loses which channel carried what, which matters when a task has a fixed
set of channels (12 cepstral coefficients, 6 IMU axes): `channels` keeps them apart, at C times the width, so
it needs records with one channel count.

Every mode reads only a record's real tokens and real channels: zero padding, padded channels and the other
records of a batch never change a record's embedding.
"""
from __future__ import annotations

import torch

POOLING_MODES = ("mean", "mean+std", "mean+max", "channels")


def check_pooling(mode: str) -> str:
    if mode not in POOLING_MODES:
        raise ValueError(f"pooling {mode!r}: use one of {POOLING_MODES}")
    return mode


def pool_tokens(tokens: torch.Tensor, token_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """tokens [B, N, D] with token_mask [B, N] -> [B, D] or [B, 2D] for mean, mean+std, mean+max."""
    check_pooling(mode)
    if mode == "channels":
        raise ValueError("pooling 'channels' needs the per-channel tokens: use pool_record_channels")
    m = token_mask.to(tokens.dtype)[:, :, None]
    n = m.sum(1).clamp_min(1.0)
    mean = (tokens * m).sum(1) / n
    if mode == "mean":
        return mean
    if mode == "mean+std":
        var = (((tokens - mean[:, None]) * m) ** 2).sum(1) / n
        return torch.cat([mean, var.clamp_min(0).sqrt()], dim=-1)
    fill = torch.finfo(tokens.dtype).min
    mx = torch.where(token_mask[:, :, None], tokens, torch.full_like(tokens, fill)).amax(1)
    mx = torch.where(token_mask.any(1)[:, None], mx, torch.zeros_like(mx))
    return torch.cat([mean, mx], dim=-1)


def pool_record_channels(channel_tokens: torch.Tensor, token_mask: torch.Tensor, channel_mask: torch.Tensor) -> list[torch.Tensor]:
    """channel_tokens [B, C, N, D] -> one [C_b * D] vector per record (its real channels only, in order)."""
    m = token_mask.to(channel_tokens.dtype)[:, None, :, None]
    means = (channel_tokens * m).sum(2) / m.sum(2).clamp_min(1.0)  # [B, C, D]
    return [means[b, channel_mask[b]].reshape(-1) for b in range(means.shape[0])]
