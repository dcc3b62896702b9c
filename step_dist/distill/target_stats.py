"""Statistics of one teacher's targets, accumulated over training, to standardise or whiten them.

Why standardise: a teacher's tokens share a large common part. On the demo corpus the mean token carries half
of the energy of fracast's per-token-LayerNormed targets and 45% of CREPE's, so predicting one constant vector
already reaches a cosine loss of 0.29 / 0.33, and that is where training stalled
(jobs/diagnose_distillation.py). Subtracting the corpus mean and dividing by the corpus spread of each
dimension leaves the student only what differs between and within records.

Why whiten: standardising each dimension does not decorrelate them. fracast's standardised targets on the demo
corpus have an effective rank of ~27 of 64, but their first five principal directions hold half the variance,
and a token loss is then met by predicting those five: the distilled student's tokens fell to an effective
rank of ~5 while its task features lost what the teacher's smaller directions carry (a linear probe, which
standardises its inputs, weighs every direction alike). Whitening (``whiten=True``) maps the targets through
``V diag(1/sqrt(max(lambda, floor * mean lambda))) V^T`` (ZCA) of their running covariance, so every direction
the teacher varies along counts the same in the loss; ``floor`` keeps directions with almost no variance
(numerical noise) from being blown up.

The statistics are exact running sums over every real target token seen (Chan et al.'s parallel update), in
float64, kept as buffers so they travel with DeepSpeed checkpoints and resume where they were; the whitening
matrix is a buffer too, refreshed on a schedule of the update count alone, so a resumed run whitens exactly as
an uninterrupted one. Each rank accumulates its own batches: ranks see different records, so their estimates
differ in the noise, not in expectation, and only the targets (never the weights) depend on them.
"""
from __future__ import annotations

import torch
from torch import nn

_FLOAT64_BUFFERS = ("count", "mean", "m2", "comoment", "whitener", "updates")


class TargetStats(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5, whiten: bool = False, floor: float = 1e-2,
                 refresh_every: int = 10):
        super().__init__()
        self.eps = eps
        self.whiten = whiten
        self.floor = floor
        self.refresh_every = refresh_every
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))
        if whiten:
            self.register_buffer("comoment", torch.zeros(dim, dim, dtype=torch.float64))
            self.register_buffer("whitener", torch.eye(dim, dtype=torch.float64))
            self.register_buffer("updates", torch.zeros((), dtype=torch.float64))

    def _apply(self, fn, recurse=True):
        # sums over millions of tokens must stay float64 when the model is cast to bf16 for training; device
        # moves still apply
        super()._apply(fn, recurse)
        for name in _FLOAT64_BUFFERS:
            t = getattr(self, name, None)
            if t is not None and t.dtype != torch.float64:
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
        centred = x - mean_b
        m2_b = centred.pow(2).sum(0)
        total = self.count + n
        delta = mean_b - self.mean
        weight = self.count * n / total
        self.mean += delta * (n / total)
        self.m2 += m2_b + delta.pow(2) * weight
        if self.whiten:
            self.comoment += centred.T @ centred + torch.outer(delta, delta) * weight
        self.count.copy_(total)
        if self.whiten:
            self.updates += 1
            # early on the estimate moves fast: refresh every update for the first refreshes, then on a schedule
            u = int(self.updates)
            if u <= self.refresh_every or u % self.refresh_every == 0:
                self.whitener.copy_(self._whitener())

    def _whitener(self) -> torch.Tensor:
        """ZCA matrix of the correlation of the targets (standardised first, so a unit's scale does not decide
        which directions the floor damps)."""
        if float(self.count) < 2:
            return torch.eye(self.mean.shape[0], dtype=torch.float64, device=self.mean.device)
        cov = self.comoment / (self.count - 1)
        std = self._scale()
        corr = cov / torch.outer(std, std)
        lam, vec = torch.linalg.eigh((corr + corr.T) / 2)
        lam = lam.clamp_min(self.floor * float(lam.clamp_min(0).mean()) + 1e-12)
        return (vec * lam.rsqrt()) @ vec.T

    def _scale(self) -> torch.Tensor:
        var = self.m2 / (self.count - 1)
        # dimensions that never vary (dead units) are left centred, not blown up by 1/eps
        return torch.where(var > self.eps, var.sqrt(), torch.ones_like(var))

    def normalise(self, target: torch.Tensor) -> torch.Tensor:
        if float(self.count) < 2:
            return target
        z = (target.to(torch.float64) - self.mean) / self._scale()
        if self.whiten:
            z = z @ self.whitener
        return z.to(target.dtype)
