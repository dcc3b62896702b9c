import torch
import torch.nn.functional as F

from step_dist.distill.losses._masked import masked_mean


def cosine_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity per token: insensitive to each teacher's feature scale."""
    return masked_mean(1.0 - F.cosine_similarity(pred, target, dim=-1, eps=1e-6), mask)
