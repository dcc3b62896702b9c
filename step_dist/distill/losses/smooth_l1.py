import torch
import torch.nn.functional as F

from step_dist.distill.losses._masked import masked_mean


def smooth_l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Huber-style loss per token: robust to the occasional outlier target."""
    return masked_mean(F.smooth_l1_loss(pred, target, reduction="none", beta=beta).mean(-1), mask)
