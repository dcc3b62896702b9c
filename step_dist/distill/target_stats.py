"""Per-dimension statistics of one teacher's targets, accumulated over training, to standardise them.

Why: a teacher's tokens share a large common part. On the demo corpus the mean token carries half of the
energy of fracast's per-token-LayerNormed targets and 45% of CREPE's, so predicting one constant vector already
reaches a cosine loss of 0.29 / 0.33, and that is where training stalled (jobs/diagnose_distillation.py).
Subtracting the corpus mean and dividing by the corpus spread of each dimension (what a teacher's features are
standardised with before a linear probe, too) leaves the student only what differs between and within
records: the constant prediction then scores ~1.0 and cannot be a plateau.

The statistics are exact running sums over every real target token seen (Chan et al.'s parallel update), in
float64, kept as buffers so they travel with DeepSpeed checkpoints and resume where they were. Each rank
accumulates its own batches: ranks see different records, so their estimates differ in the noise, not in
expectation, and only the targets (never the weights) depend on them.
"""
from __future__ import annotations

import torch
from torch import nn


class TargetStats(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))

    def _apply(self, fn, recurse=True):
        # sums over millions of tokens must stay float64 when the model is cast to bf16 for training; device
        # moves still apply
        super()._apply(fn, recurse)
        for name in ("count", "mean", "m2"):
            t = getattr(self, name)
            if t.dtype != torch.float64:
                setattr(self, name, t.to(torch.float64))
        return self

    @torch.no_grad()
    def update(self, target: torch.Tensor, mask: torch.Tensor) -> None:
        """Add the real tokens (mask [B, T] True) of target [B, T, D]."""
        x = target[mask].to(torch.float64)
        n = x.shape[0]
        if n == 0:
            return
        mean_b = x.mean(0)
        m2_b = ((x - mean_b) ** 2).sum(0)
        total = self.count + n
        delta = mean_b - self.mean
        self.mean += delta * (n / total)
        self.m2 += m2_b + delta.pow(2) * (self.count * n / total)
        self.count.copy_(total)

    def normalise(self, target: torch.Tensor) -> torch.Tensor:
        if float(self.count) < 2:
            return target
        var = self.m2 / (self.count - 1)
        # dimensions that never vary (dead units) are left centred, not blown up by 1/eps
        scale = torch.where(var > self.eps, var.sqrt(), torch.ones_like(var))
        return ((target.to(torch.float64) - self.mean) / scale).to(target.dtype)
