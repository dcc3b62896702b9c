"""The distillation meta-architecture: the student, one projection head per teacher, their losses.

Teachers themselves do not live here: their targets arrive with the batch (streamed from the actor pools or
read from the target cache), so this module is all that trains and all that DeepSpeed sees.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from step_dist.distill.align import count_mask, pool_tokens_to, resample_tokens
from step_dist.distill.losses import build_loss
from step_dist.distill.target_stats import TargetStats


ALIGNS = ("resample", "pool", "forced")
TARGET_NORMS = ("whiten", "dataset", "layer", "none")


@dataclass
class HeadConfig:
    """How the student is matched to one teacher."""

    name: str
    dim: int  # teacher token width
    weight: float = 1.0
    loss: str = "cosine"  # cosine | mse | smooth_l1 | a sum such as cosine+mse
    align: str = "resample"  # resample | pool | forced (distill/align.py)
    hidden: int = 0  # 0: a linear head; >0: a two-layer MLP head of that width
    # whiten: standardise, then decorrelate the target dimensions with running corpus statistics
    # (distill/target_stats.py), so every direction the teacher varies along counts alike in the loss, not only
    # its few largest; dataset: standardise each dimension only, so the part every token shares is not what the
    # student learns; layer: LayerNorm each token (no affine); none: as the teacher gives them
    target_norm: str = "dataset"
    # whiten: eigenvalues below this fraction of the mean are raised to it (directions of almost no variance
    # are numerical noise, not something to amplify)
    whiten_floor: float = 1e-2
    # weight of a record-level term: the mean of the student's predictions over a record against the mean of
    # its (normalised) targets, so what a pooled embedding keeps is trained directly, not only token by token
    pooled_weight: float = 0.0
    # sampling rates (Hz) of the records this teacher describes; outside them a record has no target for it
    # (0: no bound). An audio model fed a 50 Hz trace upsampled to 16 kHz hears one second of it: its targets
    # are nearly one constant for the whole view (jobs/diagnose_distillation.py, per domain)
    min_rate_hz: float = 0.0
    max_rate_hz: float = 0.0
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

    def describes(self, rate_hz: torch.Tensor) -> torch.Tensor:
        """[B] bool: records whose rate lies in this teacher's range (an unknown rate is always in it)."""
        keep = torch.ones_like(rate_hz, dtype=torch.bool)
        known = torch.isfinite(rate_hz) & (rate_hz > 0)
        if self.min_rate_hz:
            keep &= ~known | (rate_hz >= self.min_rate_hz)
        if self.max_rate_hz:
            keep &= ~known | (rate_hz <= self.max_rate_hz)
        return keep

    def __post_init__(self) -> None:
        if self.align not in ALIGNS:
            raise ValueError(f"teacher {self.name}: align must be one of {ALIGNS}, got {self.align!r}")
        if self.target_norm not in TARGET_NORMS:
            raise ValueError(f"teacher {self.name}: target_norm must be one of {TARGET_NORMS}, got {self.target_norm!r}")
        if not 0 < self.whiten_floor <= 1:
            raise ValueError(f"teacher {self.name}: whiten_floor must be in (0, 1], got {self.whiten_floor}")
        if self.weight < 0 or self.pooled_weight < 0:
            raise ValueError(f"teacher {self.name}: weight and pooled_weight must be >= 0")
        if self.min_rate_hz < 0 or self.max_rate_hz < 0 or (self.max_rate_hz and self.max_rate_hz < self.min_rate_hz):
            raise ValueError(f"teacher {self.name}: need 0 <= min_rate_hz <= max_rate_hz (0: no bound), "
                             f"got {self.min_rate_hz}, {self.max_rate_hz}")
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
        self.target_stats = nn.ModuleDict({
            h.name: TargetStats(h.dim, whiten=h.target_norm == "whiten", floor=h.whiten_floor)
            for h in heads if h.target_norm in ("dataset", "whiten")
        })
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
            if h.min_rate_hz or h.max_rate_hz:
                counts = torch.where(h.describes(batch.sampling_rate_hz.to(counts.device)), counts, 0)
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
            elif h.align == "pool":
                student_tokens = pool_tokens_to(out.tokens, out.token_mask, counts, cover)[:, :width]
            else:
                student_tokens = resample_tokens(out.tokens, out.token_mask, counts, cover)[:, :width]
            if student_tokens.shape[1] < width:
                student_tokens = F.pad(student_tokens, (0, 0, 0, width - student_tokens.shape[1]))
            pred = self.heads[name](student_tokens)
            tgt = target.to(pred.dtype)
            if h.target_norm == "layer":
                tgt = F.layer_norm(tgt, (tgt.shape[-1],))
            elif h.target_norm in ("dataset", "whiten"):
                stats = self.target_stats[name]
                if self.training:
                    stats.update(tgt, mask)
                tgt = stats.normalise(tgt)
            loss = self.losses[name](pred, tgt, mask)
            terms[f"loss/{name}"] = loss
            terms[f"tokens/{name}"] = mask.sum()
            total = total + h.weight * loss
            if h.pooled_weight:
                pooled = record_cosine_loss(pred, tgt, mask)
                terms[f"loss_pooled/{name}"] = pooled
                total = total + h.weight * h.pooled_weight * pooled
        terms["loss"] = total
        return terms


def record_cosine_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - cos(mean prediction, mean target) per record over its real tokens, averaged over the records that
    have any: the record-level summary a pooled embedding is probed on."""
    m = mask.to(pred.dtype)[:, :, None]
    n = m.sum(1)
    has = n[:, 0] > 0
    if not bool(has.any()):
        return (pred * 0).sum()
    p = (pred * m).sum(1) / n.clamp_min(1)
    t = (target * m).sum(1) / n.clamp_min(1)
    return (1 - F.cosine_similarity(p[has], t[has], dim=-1, eps=1e-6)).mean()
