"""Align the student's token sequence to each teacher's.

Two ways, chosen per teacher:
- ``resample``: run the student once at its own adaptive stride and linearly resample its tokens to the
  teacher's token count (cheap; one student pass serves every teacher);
- ``forced``: run the student again with its stride forced so it emits exactly the teacher's token count
  (STEP's token-level alignment; one extra student pass per teacher).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def resample_tokens(tokens: torch.Tensor, token_mask: torch.Tensor, target_counts: torch.Tensor,
                    coverage: torch.Tensor | None = None) -> torch.Tensor:
    """tokens [B, N, D] with token_mask [B, N] -> [B, max(target_counts), D], record b resampled from its real
    tokens to target_counts[b] tokens (linear, align_corners=False: token centres map to token centres).

    ``coverage[b]`` in (0, 1]: the teacher saw only that leading fraction of the view, so only the student
    tokens of that span (the first ceil(coverage * n) real tokens) are resampled."""
    b, _, d = tokens.shape
    t_max = int(target_counts.max().item()) if b else 0
    out = tokens.new_zeros(b, max(t_max, 1), d)
    real = token_mask.sum(1)
    for i in range(b):
        t = int(target_counts[i])
        n = int(real[i])
        if coverage is not None:
            n = min(n, max(1, math.ceil(float(coverage[i]) * n - 1e-6)))
        if t == 0 or n == 0:
            continue
        seq = tokens[i, :n].transpose(0, 1).unsqueeze(0)  # [1, D, n]
        out[i, :t] = F.interpolate(seq, size=t, mode="linear", align_corners=False)[0].transpose(0, 1)
    return out


def count_mask(counts: torch.Tensor, width: int) -> torch.Tensor:
    """[B, width] bool, True for the first counts[b] positions."""
    return torch.arange(width, device=counts.device)[None, :] < counts[:, None]
