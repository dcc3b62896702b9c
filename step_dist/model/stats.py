"""Statistics compensation: z-score every channel of every record, keep its scale as two features.

Scientific values run from 1e-21 (strain) to 1e9 and beyond, so a network that sees raw values cannot be
trained, and one that sees only z-scored values cannot tell a quake from a tremor. STEP z-scores each
channel per record and feeds the log-scaled mean and std back as features after the stem.

Numerics, so both 1e9-scale and 1e-21-scale channels come out right in float32:
  * sums are accumulated in float64 over real samples only (padding excluded by the length mask);
  * the variance is computed on the deviations from the mean, rescaled by their per-channel maximum, so the
    squares neither overflow (1e20² > float32 max) nor underflow (1e-21² < float32 min);
  * the std is floored at ``floor_rel * |mean| + floor_abs``: a constant channel gives z = 0, not NaN.
Multiplying a record by a power of two leaves the z-scored values bit-identical (every step commutes with
it), which is what makes "compensation off means scale-blind" exact.
"""
from __future__ import annotations

import torch


def time_mask(lengths: torch.Tensor, length: int) -> torch.Tensor:
    """Bool [B, L]: True on real samples."""
    return torch.arange(length, device=lengths.device)[None, :] < lengths[:, None]


def sign_log1p(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * log1p(|x|): defined for any sign, ~x near 0, ~log|x| for large |x|."""
    return torch.sign(x) * torch.log1p(x.abs())


def compensate(
    values: torch.Tensor,
    lengths: torch.Tensor,
    floor_rel: float = 1e-6,
    floor_abs: float = 1e-30,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-score ``values`` [B, C, L] per record and channel over the first ``lengths[b]`` samples.

    Returns (z [B, C, L] float32, zero on padding; features [B, C, 2] float32 = (sign_log1p(mean), log(std))).
    """
    b, c, length = values.shape
    mask = time_mask(lengths, length)[:, None, :]  # [B, 1, L]
    x = torch.where(mask, values.float(), 0.0)
    count = lengths.to(torch.float64)[:, None]  # [B, 1]
    mean = x.sum(-1, dtype=torch.float64) / count  # [B, C]
    dev = torch.where(mask, x - mean.float()[..., None], 0.0)
    scale = dev.abs().amax(-1)  # [B, C] float32
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    dev = dev / scale[..., None]  # in [-1, 1]
    # mean of the rescaled deviations is ~0 but not exactly (mean was rounded to float32): correct for it
    dmean = dev.sum(-1, dtype=torch.float64) / count
    var = (dev.square().sum(-1, dtype=torch.float64) / count - dmean.square()).clamp_min(0.0)
    scale64 = scale.double()
    std = var.sqrt() * scale64
    mean = mean + dmean * scale64
    std = torch.maximum(std, floor_rel * mean.abs() + floor_abs)
    z = (dev - dmean.float()[..., None]) * (scale64 / std).float()[..., None]
    z = torch.where(mask, z, 0.0)
    feats = torch.stack([sign_log1p(mean), std.log()], dim=-1).float()
    return z, feats
