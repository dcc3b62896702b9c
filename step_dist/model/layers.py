"""Building blocks of the student trunk: the channel-independent stem, positions, axial Transformer blocks."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ConvStem(nn.Module):
    """Two 1-D convolutions shared by all channels, run on [B·C, 1, L] at stride 1.

    Stride 1 because records as short as ~30 samples must keep every sample; a small width keeps memory at
    ~width x L per channel. Activations are re-masked after each layer so samples past a record's end stay
    zero: the real part then sees exactly what it would see with no padding (conv zero padding).
    """

    def __init__(self, width: int, kernel: int):
        super().__init__()
        self.conv1 = nn.Conv1d(1, width, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(width, width, 3, padding=1)

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """z [N, 1, L], mask [N, 1, L] bool -> [N, width, L]."""
        h = torch.where(mask, F.gelu(self.conv1(z)), 0.0)
        return torch.where(mask, F.gelu(self.conv2(h)), 0.0)


def sinusoid(positions: torch.Tensor, dim: int, max_period: float) -> torch.Tensor:
    """positions [...] (any real values) -> [..., dim] sin/cos features, periods from 2π to max_period."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period / (2 * math.pi)) * torch.arange(half, device=positions.device) / half)
    angle = positions.float()[..., None] * freqs
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention over the second-to-last axis with a key-padding mask.

    The mask is only passed to scaled_dot_product_attention when something is padded, so unpadded batches
    get the fused GPU kernels. Every row handed in has at least one real key (a record has >= 1 token and
    >= 1 real channel), so no softmax row is fully masked.
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """x [M, S, D]; key_mask [M, S] bool (True = real) or None."""
        m, s, d = x.shape
        if s == 1 and not (self.training and self.dropout > 0):
            # One key (e.g. attention across the channels of a single-channel batch): its softmax weight is
            # exactly 1, so the output is the value projection and queries and keys get no gradient. Skipping
            # the kernel matters on GPU: fused attention over millions of length-1 rows cost more than every
            # matmul of the base student together (jobs/bench_gpu.py --profile base:64).
            return self.out(F.linear(x, self.qkv.weight[2 * d:], self.qkv.bias[2 * d:]))
        q, k, v = self.qkv(x).view(m, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(m, s, d))


class AxialBlock(nn.Module):
    """Pre-norm block: attention over time within each channel, then over channels at each token, then MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = int(round(dim * mlp_ratio))
        self.norm_t = nn.LayerNorm(dim)
        self.attn_t = Attention(dim, heads, dropout)
        self.norm_c = nn.LayerNorm(dim)
        self.attn_c = Attention(dim, heads, dropout)
        self.norm_m = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(
        self, x: torch.Tensor, token_mask: torch.Tensor, channel_mask: torch.Tensor, padded: bool
    ) -> torch.Tensor:
        """x [B, C, N, D]; token_mask [B, N]; channel_mask [B, C]; padded: whether any mask has a False."""
        b, c, n, d = x.shape
        t_mask = token_mask[:, None, :].expand(b, c, n).reshape(b * c, n) if padded else None
        x = x + self.attn_t(self.norm_t(x).reshape(b * c, n, d), t_mask).view(b, c, n, d)
        xc = self.norm_c(x).transpose(1, 2).reshape(b * n, c, d)
        c_mask = channel_mask[:, None, :].expand(b, n, c).reshape(b * n, c) if padded else None
        x = x + self.attn_c(xc, c_mask).view(b, n, c, d).transpose(1, 2)
        x = x + self.mlp(self.norm_m(x))
        if padded:  # keep padding at exactly zero so nothing non-finite can leak through a masked key
            x = x * (channel_mask[:, :, None, None] & token_mask[:, None, :, None])
        return x
