"""Training: the recipe, the per-worker trainer (DeepSpeed), checkpoints, and the Ray Train driver."""
from step_dist.train.config import PretrainConfig
from step_dist.train.trainer import PretrainResult, load_config, pretrain

__all__ = ["PretrainConfig", "PretrainResult", "load_config", "pretrain"]
