import torch

from step_dist.distill.losses._masked import masked_mean


def mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per token, averaged over the feature dimension."""
    return masked_mean((pred - target).pow(2).mean(-1), mask)
