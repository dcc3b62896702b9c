"""Align the student's token sequence to each teacher's.

Three ways, chosen per teacher:
- ``pool``: run the student once and average its tokens over each teacher token's span (area weights: the
  overlap of the spans on the view's time axis); where the student has fewer tokens than the teacher, a
  teacher token takes the student token(s) it lies in. A teacher token that summarises 16 samples is then
  matched with the mean of the student tokens over those 16 samples, not with an interpolation between the
  two nearest ones (which sees a few samples of them and aliases the rest);
- ``resample``: run the student once at its own adaptive stride and linearly resample its tokens to the
  teacher's token count (cheap; one student pass serves every teacher);
- ``forced``: run the student again with its stride forced so it emits exactly the teacher's token count
  (STEP's token-level alignment; one extra student pass per teacher).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def resample_tokens(tokens: torch.Tensor, token_mask: torch.Tensor, target_counts: torch.Tensor,
                    coverage: torch.Tensor | None = None) -> torch.Tensor:
    """tokens [B, N, D] with token_mask [B, N] -> [B, max(target_counts), D], record b resampled from its real
    tokens to target_counts[b] tokens (linear, align_corners=False: token centres map to token centres).

    ``coverage[b]`` in (0, 1]: the teacher saw only that leading fraction of the view, so only the student
    tokens of that span (the first ceil(coverage * n) real tokens) are resampled.

    The whole batch at once, with F.interpolate's arithmetic (source = (j + 0.5) * n / t - 0.5, clamped at 0,
    blended with the next token): a loop of per-record interpolate calls cost a GPU sync and two kernels per
    record, the largest device time of the base student's step after attention (jobs/bench_gpu.py --profile)."""
    b, n_max, d = tokens.shape
    t_max = int(target_counts.max().item()) if b else 0
    width = max(t_max, 1)
    real = token_mask.sum(1).to(torch.float64)
    if coverage is not None:
        covered = torch.ceil(coverage.to(torch.float64).clamp(max=1.0) * real - 1e-6).clamp_min(1.0)
        real = torch.minimum(real, covered)
    counts = target_counts.to(torch.float64)
    j = torch.arange(width, device=tokens.device, dtype=torch.float64)[None, :]
    scale = real[:, None] / counts.clamp_min(1.0)[:, None]
    src = ((j + 0.5) * scale - 0.5).clamp_min(0.0)
    i0 = src.floor().clamp(max=(real[:, None] - 1).clamp_min(0.0))
    frac = (src - i0).to(tokens.dtype)
    i0 = i0.long()
    i1 = torch.minimum(i0 + 1, (real[:, None] - 1).clamp_min(0).long())
    pick = lambda idx: tokens.gather(1, idx.clamp(0, max(n_max - 1, 0))[:, :, None].expand(b, width, d))  # noqa: E731
    out = pick(i0) * (1 - frac)[:, :, None] + pick(i1) * frac[:, :, None]
    keep = (j < counts[:, None]) & (real[:, None] > 0)
    return out * keep[:, :, None].to(out.dtype)


def count_mask(counts: torch.Tensor, width: int) -> torch.Tensor:
    """[B, width] bool, True for the first counts[b] positions."""
    return torch.arange(width, device=counts.device)[None, :] < counts[:, None]


def pool_tokens_to(tokens: torch.Tensor, token_mask: torch.Tensor, target_counts: torch.Tensor,
                   coverage: torch.Tensor | None = None) -> torch.Tensor:
    """tokens [B, N, D] with token_mask [B, N] -> [B, max(target_counts), D]: target token j of record b is the
    mean of the student's real tokens weighted by how much of each one's span [i, i+1) overlaps the target
    token's span [j*s, (j+1)*s), s = n_real / count (both measured in student tokens). ``coverage`` as in
    ``resample_tokens``: only the leading fraction of the view the teacher saw is split among its tokens."""
    b, n_max, d = tokens.shape
    t_max = int(target_counts.max().item()) if b else 0
    width = max(t_max, 1)
    real = token_mask.sum(1).to(torch.float64)
    if coverage is not None:
        real = real * coverage.to(torch.float64).clamp(0.0, 1.0)
    counts = target_counts.to(torch.float64)
    s = (real / counts.clamp_min(1.0))[:, None, None]  # [B, 1, 1] student tokens per target token
    j = torch.arange(width, device=tokens.device, dtype=torch.float64)[None, :, None]
    i = torch.arange(n_max, device=tokens.device, dtype=torch.float64)[None, None, :]
    overlap = (torch.minimum((j + 1) * s, i + 1) - torch.maximum(j * s, i)).clamp_min(0.0)  # [B, T, N]
    overlap = overlap * token_mask[:, None, :].to(torch.float64)
    weights = overlap / overlap.sum(-1, keepdim=True).clamp_min(1e-12)
    keep = (j[..., 0] < counts[:, None]) & (real[:, None] > 0)
    weights = weights * keep[..., None].to(torch.float64)
    return torch.bmm(weights.to(tokens.dtype), tokens)
