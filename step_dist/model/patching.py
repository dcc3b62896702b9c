"""Learnable adaptive patching: Gaussian windows whose stride is a learned function of the record length.

Stride. ``S = 1 + exp(f(log T))`` with T the real length of the record. ``f`` is an MLP with a linear skip,
``f(u) = a·u + b + mlp(u)``, initialised at a = 1, b = -log(init_tokens), mlp = 0, i.e. S = 1 + T/init_tokens,
so a fresh model already makes a sensible number of tokens for any T. Tokens per channel N = ceil(T/S),
clamped to [1, token_cap] (a hard cap keeps attention memory flat in T). When clamped, the effective stride
is T/N; it is used through a straight-through estimator so gradients still reach the MLP.

Windows. Token n is centred at c_n = (n + 0.5)·S samples (sample t sits at t + 0.5) and reads only the samples
with |t + 0.5 - c_n| <= max(window_ratio·S/2, 1), i.e. a window of about 2S. Inside it, ``sub_points`` Gaussian
kernels (centres spread evenly over one stride, sigma = S / (2·sub_points), floored at half a sample) resample
the window to a fixed number of points; weights are a masked softmax of the Gaussian log-densities, so they
sum to one over the real samples, padding gets weight zero, and no weight underflows to 0/0. Centres and
sigmas depend on S, so the task loss reaches the MLP through them.

Cost. Windows are gathered (one index tensor [B, N, W], W ~ window_ratio·S_max-in-batch), never a dense
T x N matrix: memory and time are ~ window_ratio · T · features per record-channel, linear in T.

Penalty. Soft Huber penalties on log-ratio excesses (scale-free, so a stride 40x too large costs about as much
as 40x too few tokens): huber(relu(log(S/s_max))) + huber(relu(log(lo/N'))) + huber(relu(log(N'/n_max))),
with N' = T/S the continuous token count and lo = min(n_min, T/2) (a record shorter than 2·n_min cannot
hold n_min tokens of stride > 2). Exactly zero inside the bounds; mean over records.

Forcing. ``num_tokens`` [B] fixes N exactly with stride T/N (distillation: the student's output length equals
a teacher's). Forcing ignores the token cap and adds no penalty.

Fixed mode (ablation). No MLP: a constant stride ``fixed_stride`` (N = ceil(T/S) within the cap), or a constant
token count ``fixed_tokens``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from step_dist.model.config import StudentConfig


@dataclass
class PatchPlan:
    stride: torch.Tensor  # [B] float, differentiable in adaptive mode
    n_tokens: torch.Tensor  # [B] long
    penalty: torch.Tensor  # scalar

    @property
    def max_tokens(self) -> int:
        return int(self.n_tokens.max())

    def token_mask(self) -> torch.Tensor:
        n = torch.arange(self.max_tokens, device=self.n_tokens.device)
        return n[None, :] < self.n_tokens[:, None]

    def centres(self) -> torch.Tensor:
        """Token centres in samples, [B, N]."""
        n = torch.arange(self.max_tokens, device=self.stride.device, dtype=self.stride.dtype)
        return (n[None, :] + 0.5) * self.stride[:, None]


def huber(x: torch.Tensor, delta: float) -> torch.Tensor:
    return torch.where(x.abs() <= delta, 0.5 * x.square(), delta * (x.abs() - 0.5 * delta))


class AdaptivePatching(nn.Module):
    """Decides the stride per record (``plan``) and pools stem features into tokens (``pool``)."""

    def __init__(self, config: StudentConfig):
        super().__init__()
        self.config = config
        self.adaptive = config.patching == "adaptive"
        if self.adaptive:
            self.mlp = nn.Sequential(nn.Linear(1, config.patch_hidden), nn.GELU(), nn.Linear(config.patch_hidden, 1))
            nn.init.zeros_(self.mlp[2].weight)
            nn.init.zeros_(self.mlp[2].bias)
            # shape [1], not a 0-dim scalar: DeepSpeed's parameter broadcast cannot view 0-dim tensors as bytes
            self.skip_scale = nn.Parameter(torch.ones(1))
            self.skip_bias = nn.Parameter(torch.full((1,), -math.log(config.init_tokens)))

    # -- stride -------------------------------------------------------------------------------------------
    def proposed_stride(self, lengths: torch.Tensor) -> torch.Tensor:
        """S = 1 + exp(f(log T)) per record (adaptive mode), float32 [B]."""
        # always float32, also under autocast: a bf16 stride would put token centres of a 1e6-sample record
        # on a 4096-sample grid
        with torch.autocast(device_type=lengths.device.type, enabled=False):
            log_t = lengths.float().clamp_min(1).log()[:, None]
            # the MLP sees log T centred and scaled to O(1) (log T runs from ~3 to ~14)
            u = (log_t - 7.0) / 4.0
            raw = self.skip_scale * log_t + self.skip_bias + self.mlp(u)
            return 1.0 + raw.float().squeeze(-1).clamp(max=30.0).exp()

    def plan(self, lengths: torch.Tensor, num_tokens: torch.Tensor | None = None) -> PatchPlan:
        cfg = self.config
        t = lengths.float()
        zero = t.new_zeros(())
        if num_tokens is not None:
            n = num_tokens.to(device=lengths.device, dtype=torch.long)
            return PatchPlan(t / n.float(), n, zero)
        if not self.adaptive:
            if cfg.fixed_tokens is not None:
                n = torch.full_like(lengths, cfg.fixed_tokens)
                return PatchPlan(t / n.float(), n, zero)
            stride = torch.full_like(t, cfg.fixed_stride)
            n = torch.ceil(t / stride).long().clamp(1, cfg.token_cap)
            return PatchPlan(torch.where(n * stride < t, t / n.float(), stride), n, zero)
        stride = self.proposed_stride(lengths)
        n_cont = t / stride
        n = torch.ceil(n_cont.detach() - 1e-6).long().clamp(1, cfg.token_cap)
        clamped = n.float() * stride.detach() < t  # the cap cut tokens off: stretch the stride to cover T
        used = torch.where(clamped, stride + (t / n.float() - stride).detach(), stride)
        lo = torch.minimum(torch.full_like(t, float(cfg.n_min)), t / 2)
        d = cfg.huber_delta
        pen = (
            huber(F.relu(torch.log(stride / cfg.s_max)), d)
            + huber(F.relu(torch.log(lo / n_cont)), d)
            + huber(F.relu(torch.log(n_cont / cfg.n_max)), d)
        )
        return PatchPlan(used, n, pen.mean())

    # -- pooling ------------------------------------------------------------------------------------------
    def window_weights(self, plan: PatchPlan, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sample index [B, N, W] long, clamped into range; weights [B, N, K, W], rows summing to 1 on real
        tokens and 0 on padded ones)."""
        cfg = self.config
        stride = plan.stride.float()  # positions up to ~1e6 samples need float32 whatever the autocast
        half = torch.clamp(cfg.window_ratio * stride / 2, min=1.0)  # [B]
        width = int(math.ceil(2 * float(half.detach().max()))) + 2
        centres = plan.centres()  # [B, N]
        start = torch.floor(centres.detach() - half.detach()[:, None]).long()
        idx = start[..., None] + torch.arange(width, device=start.device)  # [B, N, W]
        pos = idx.to(stride.dtype) + 0.5
        valid = (idx >= 0) & (idx < lengths[:, None, None])
        valid &= (pos - centres[..., None]).abs() <= half[:, None, None]
        valid &= plan.token_mask()[..., None]
        k = cfg.sub_points
        offsets = (torch.arange(k, device=stride.device, dtype=stride.dtype) + 0.5) / k - 0.5  # in strides
        sub = centres[..., None] + offsets * stride[:, None, None]  # [B, N, K]
        sigma = torch.clamp(stride / (2 * k), min=0.5)[:, None, None, None]
        logit = -0.5 * ((pos[:, :, None, :] - sub[..., None]) / sigma).square()  # [B, N, K, W]
        valid_k = valid[:, :, None, :]
        any_valid = valid_k.any(-1, keepdim=True)
        logit = torch.where(valid_k, logit, float("-inf"))
        logit = torch.where(any_valid, logit, 0.0)  # all-masked rows: softmax of zeros, then zeroed below
        weights = torch.softmax(logit, dim=-1) * any_valid
        return idx.clamp(0, max(int(lengths.max()) - 1, 0)), weights

    def pool(self, features: torch.Tensor, lengths: torch.Tensor, plan: PatchPlan) -> torch.Tensor:
        """features [B, L, F] (channels last, zero beyond each length) -> tokens [B, N, K, F].

        Channels-last so that gathering a window is a copy of whole feature rows (index_select) and the
        window sum is one batched matmul per token ([K, W] @ [W, F]) with no transposed copy of the windows.
        """
        b, length, f = features.shape
        idx, weights = self.window_weights(plan, lengths)
        _, n, w = idx.shape
        flat = idx + (torch.arange(b, device=idx.device) * length)[:, None, None]
        gathered = features.reshape(b * length, f).index_select(0, flat.reshape(-1)).view(b * n, w, f)
        return torch.bmm(weights.reshape(b * n, -1, w), gathered).view(b, n, -1, f)
