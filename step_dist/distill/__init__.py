"""Distillation: token alignment, losses (one file each), the student + heads + losses module."""
from step_dist.distill.align import resample_tokens
from step_dist.distill.losses import LOSSES, build_loss
from step_dist.distill.module import DistillationModule, DistillBatch, HeadConfig

__all__ = ["DistillBatch", "DistillationModule", "HeadConfig", "LOSSES", "build_loss", "resample_tokens"]
