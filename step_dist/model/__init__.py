"""The STEP student: adaptive patching, statistics compensation, axial Transformer, plain export."""
from step_dist.model.batching import collate
from step_dist.model.config import StudentConfig
from step_dist.model.encoder import EncoderOutput, STEPEncoder
from step_dist.model.patching import AdaptivePatching, PatchPlan

__all__ = ["AdaptivePatching", "EncoderOutput", "PatchPlan", "STEPEncoder", "StudentConfig", "collate"]
