"""Token-level distillation losses, one per file; `build_loss("cosine+mse")` sums several.

Every loss takes student predictions and teacher targets [B, T, D] plus a token mask [B, T] (True = real)
and returns (mean loss over real tokens, number of real tokens)."""
from __future__ import annotations

from typing import Callable

import torch

from step_dist.distill.losses.cosine import cosine_loss
from step_dist.distill.losses.mse import mse_loss
from step_dist.distill.losses.smooth_l1 import smooth_l1_loss

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

LOSSES: dict[str, LossFn] = {"cosine": cosine_loss, "mse": mse_loss, "smooth_l1": smooth_l1_loss}


def build_loss(spec: str) -> LossFn:
    """'cosine', 'mse', 'smooth_l1' or a sum of them written 'cosine+mse'."""
    names = [s.strip() for s in spec.split("+") if s.strip()]
    unknown = [n for n in names if n not in LOSSES]
    if not names or unknown:
        raise ValueError(f"unknown loss {spec!r}: choose from {sorted(LOSSES)} or a sum like 'cosine+mse'")
    fns = [LOSSES[n] for n in names]

    def total(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return sum(fn(pred, target, mask) for fn in fns)

    return total


__all__ = ["LOSSES", "build_loss", "cosine_loss", "mse_loss", "smooth_l1_loss"]
