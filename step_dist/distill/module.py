"""The distillation meta-architecture: the student, one projection head per teacher, their losses.

Teachers themselves do not live here: their targets arrive with the batch (streamed from the actor pools or
read from the target cache), so this module is all that trains and all that DeepSpeed sees.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from step_dist.distill.align import count_mask, resample_tokens
from step_dist.distill.losses import build_loss


@dataclass
class HeadConfig:
    """How the student is matched to one teacher."""

    name: str
    dim: int  # teacher token width
    weight: float = 1.0
    loss: str = "cosine"  # cosine | mse | smooth_l1 | a sum such as cosine+mse
    align: str = "resample"  # resample | forced
    hidden: int = 0  # 0: a linear head; >0: a two-layer MLP head of that width
    target_norm: str = "layer"  # layer: LayerNorm the targets (no affine) so teachers' scales compare; none
    # What part of a view the teacher sees (filled from the teacher by the trainer): a teacher that crops its
    # input to its context sees only the head of a long view, so the student is aligned to that head only.
    teacher_rate_hz: float = 0.0  # the teacher's native rate (0: it takes samples as they come)
    teacher_context: int = 0  # samples at the teacher's rate it sees at most (0: everything)
    teacher_crops: bool = False  # context_policy == "crop"

    def coverage(self, length: int, rate_hz: float) -> float:
        """Fraction of a view of ``length`` samples at ``rate_hz`` that this teacher's targets describe."""
        if not self.teacher_crops or not self.teacher_context or length <= 0:
            return 1.0
        at_teacher = length * (self.teacher_rate_hz / rate_hz if self.teacher_rate_hz and rate_hz > 0 else 1.0)
        return min(1.0, self.teacher_context / max(at_teacher, 1e-9))

    def __post_init__(self) -> None:
        if self.align not in ("resample", "forced"):
            raise ValueError(f"teacher {self.name}: align must be 'resample' or 'forced', got {self.align!r}")
        if self.target_norm not in ("layer", "none"):
            raise ValueError(f"teacher {self.name}: target_norm must be 'layer' or 'none'")
        if self.weight < 0:
            raise ValueError(f"teacher {self.name}: weight must be >= 0")
        build_loss(self.loss)  # fails early, naming the loss


@dataclass
class DistillBatch:
    values: torch.Tensor  # [B, C, L]
    lengths: torch.Tensor  # [B]
    channel_mask: torch.Tensor  # [B, C]
    sampling_rate_hz: torch.Tensor  # [B]
    targets: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B, T, D]
    target_counts: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B] (0 = no target)
    coverage: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [B] fraction of the view the teacher saw

    def to(self, device: torch.device | str) -> "DistillBatch":
        return DistillBatch(
            self.values.to(device),
            self.lengths.to(device),
            self.channel_mask.to(device),
            self.sampling_rate_hz.to(device),
            {k: v.to(device) for k, v in self.targets.items()},
            {k: v.to(device) for k, v in self.target_counts.items()},
            {k: v.to(device) for k, v in self.coverage.items()},
        )


class DistillationModule(nn.Module):
    def __init__(self, student: nn.Module, heads: list[HeadConfig], penalty_weight: float = 1.0):
        super().__init__()
        self.student = student
        self.head_configs = {h.name: h for h in heads}
        d_model = student.config.d_model
        self.heads = nn.ModuleDict({h.name: self._make_head(d_model, h) for h in heads})
        self.losses = {h.name: build_loss(h.loss) for h in heads}
        self.penalty_weight = penalty_weight

    @staticmethod
    def _make_head(d_model: int, h: HeadConfig) -> nn.Module:
        if h.hidden > 0:
            return nn.Sequential(nn.Linear(d_model, h.hidden), nn.GELU(), nn.Linear(h.hidden, h.dim))
        return nn.Linear(d_model, h.dim)

    def forward(self, batch: DistillBatch) -> dict[str, torch.Tensor]:
        """Returns 'loss' (the weighted total) and each term: 'loss/<teacher>', 'penalty', plus
        'tokens/<teacher>' (real target tokens in the batch) for throughput figures."""
        out = self.student(batch.values, batch.lengths, batch.channel_mask, batch.sampling_rate_hz)
        terms: dict[str, torch.Tensor] = {"penalty": out.penalty}
        total = self.penalty_weight * out.penalty
        for name, h in self.head_configs.items():
            target = batch.targets[name]
            counts = batch.target_counts[name]
            width = target.shape[1]
            mask = count_mask(counts, width) if width else counts.new_zeros(counts.shape[0], 0, dtype=torch.bool)
            cover = batch.coverage.get(name)
            if h.align == "forced":
                # the student reads only the part of the view the teacher saw, at the teacher's token count;
                # a record without a target still needs a valid count for the pass and is masked out below
                lengths = batch.lengths
                if cover is not None:
                    lengths = torch.clamp(torch.ceil(lengths.to(cover.dtype) * cover).long(), min=1)
                forced = self.student(
                    batch.values, lengths, batch.channel_mask, batch.sampling_rate_hz,
                    num_tokens=counts.clamp_min(1),
                )
                student_tokens = forced.tokens[:, :width]
            else:
                student_tokens = resample_tokens(out.tokens, out.token_mask, counts, cover)[:, :width]
            if student_tokens.shape[1] < width:
                student_tokens = F.pad(student_tokens, (0, 0, 0, width - student_tokens.shape[1]))
            pred = self.heads[name](student_tokens)
            tgt = target.to(pred.dtype)
            if h.target_norm == "layer":
                tgt = F.layer_norm(tgt, (tgt.shape[-1],))
            loss = self.losses[name](pred, tgt, mask)
            terms[f"loss/{name}"] = loss
            terms[f"tokens/{name}"] = mask.sum()
            total = total + h.weight * loss
        terms["loss"] = total
        return terms
