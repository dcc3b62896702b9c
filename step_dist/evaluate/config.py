"""What an evaluation run is made of: tasks, protocols, baselines, seeds. Loaded from YAML (strict keys).

A recipe looks like::

    tasks:
      - {uri: s3://bucket/tasks/sleepedf, channels: [Fpz-Cz], max_length: 240000}
    protocols: [probe, finetune]
    seeds: [0, 1, 2]
    baselines: [random, teachers, minirocket, fixed]
    teachers:                      # TeacherConfig mappings (step_dist.teachers), used by the 'teachers' baseline
      - {name: fracast, kind: fracast, checkpoint: builtin}
    finetune: {stage_epochs: [1, 1, 2], lr: [1e-3, 1e-3, 3e-4]}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROTOCOLS = ("probe", "finetune")
BASELINES = ("random", "teachers", "minirocket", "fixed")


@dataclass
class TaskConfig:
    uri: str = ""  # a labelled shard set (records with `label` and `split`)
    name: str = ""  # shown in reports; default: the last part of the URI
    channels: list[str] = field(default_factory=list)  # keep only these channels, in this order (SleepEDF: [Fpz-Cz])
    max_length: int = 240_000  # samples kept from the start of each record (SciTS caps at 240k)
    max_records_per_split: int = 0  # 0 = all; else the first N of each split by id (quick looks at big tasks)
    holdout_fraction: float = 0.0  # records with no split go to test with this probability (hash of id); 0 = set aside

    def __post_init__(self) -> None:
        if self.max_length < 1:
            raise ValueError(f"task {self.uri}: max_length must be >= 1")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"task {self.uri}: holdout_fraction must be in [0, 1)")


@dataclass
class ProbeConfig:
    C: float = 1.0  # inverse L2 strength of the logistic regression
    max_iter: int = 2000
    batch_size: int = 16  # records per encoder forward when embedding
    # how a record's tokens become its feature vector, for the student and for every teacher alike
    # (step_dist.model.pooling): mean | mean+std | mean+max | channels (per-channel concatenation; a task
    # whose records have different channel counts falls back to mean+std, said in the report)
    pooling: str = "mean+std"

    def __post_init__(self) -> None:
        from step_dist.model.pooling import check_pooling

        check_pooling(self.pooling)


@dataclass
class FinetuneConfig:
    # STEP's staged fine-tune: 1 = patching module only, 2 = patching + head, 3 = everything
    stage_epochs: list[int] = field(default_factory=lambda: [1, 1, 2])
    lr: list[float] = field(default_factory=lambda: [1e-3, 1e-3, 3e-4])
    batch_size: int = 16
    weight_decay: float = 0.01
    max_length: int = 8192  # crop (deterministic view) per record while fine-tuning, to bound memory
    penalty_weight: float = 1.0  # weight of the patching penalty added to the cross-entropy
    max_steps_per_stage: int = 0  # 0 = no cap; tests and quick looks cap the steps

    def __post_init__(self) -> None:
        if len(self.stage_epochs) != 3 or len(self.lr) != 3:
            raise ValueError("finetune.stage_epochs and finetune.lr need one value per stage (3)")


@dataclass
class MiniRocketConfig:
    n_kernels: int = 10_000
    max_length: int = 4096  # records are cropped / zero-padded to one length (MiniRocket needs equal lengths)


@dataclass
class EvaluateConfig:
    tasks: list[TaskConfig] = field(default_factory=list)
    protocols: list[str] = field(default_factory=lambda: ["probe"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    teachers: list[dict[str, Any]] = field(default_factory=list)  # TeacherConfig mappings
    fixed_checkpoint: str = ""  # a student distilled with fixed patching (the paper's ablation); empty = random init
    fixed_stride: int = 0  # stride of the fixed-patching student; 0 = the model's default for fixed patching
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    minirocket: MiniRocketConfig = field(default_factory=MiniRocketConfig)
    num_cpus_per_run: float = 1.0  # Ray resources of each (task, model[, seed]) run
    num_gpus_per_run: float = 0.0
    device: str = ""  # "" = cuda when the run has a GPU, else cpu

    def __post_init__(self) -> None:
        bad = sorted(set(self.protocols) - set(PROTOCOLS))
        if bad or not self.protocols:
            raise ValueError(f"unknown protocol(s) {bad}: choose from {list(PROTOCOLS)}")
        bad = sorted(set(self.baselines) - set(BASELINES))
        if bad:
            raise ValueError(f"unknown baseline(s) {bad}: choose from {list(BASELINES)}")
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
