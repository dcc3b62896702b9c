"""The sweep recipe: a base pretraining recipe, the search space over it, the search and the stopping rule.

    recipe: jobs/configs/tiny.yaml       # the pretraining recipe every trial starts from
    set: [train.max_steps=6]             # overrides applied to every trial (key=value, as `pretrain --set`)
    space:                               # dotted recipe keys -> a distribution
      student.s_max: {loguniform: [50, 800]}
      student.patching: {choice: [adaptive, fixed]}
      teachers.crepe.loss: {choice: [cosine, mse]}   # teachers.<name>.<field> addresses one teacher
      optim.lr: {loguniform: [1.0e-4, 3.0e-3]}
    teacher_weights: simplex             # sample a raw weight per teacher and normalise them to sum to 1
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from step_dist.config import ConfigError

OBJECTIVES = {"distill_loss": "min", "probe_f1": "max"}


@dataclass
class ObjectiveConfig:
    # distill_loss: the unweighted mean over teachers of the per-teacher distillation loss, averaged over the
    #   steps since the previous report, at the trial's last report (training views; comparable across teacher
    #   weights and patching, not across loss types: sweep loss types with probe_f1)
    # probe_f1: macro-F1 of a linear probe on the trial's exported student (a labelled task's train -> split)
    kind: str = "distill_loss"
    task: str = ""  # probe_f1: a labelled shard set (records with label and split)
    split: str = "val"  # probe_f1: scored on this split (falls back to test when the task has no val)
    max_records_per_split: int = 0  # probe_f1: 0 = all


@dataclass
class AshaConfig:
    enabled: bool = True
    grace_period: int = 2  # steps every trial runs before it can be stopped
    reduction_factor: int = 2  # keep the best 1/reduction_factor at each rung
    max_t: int = 0  # 0: the recipe's train.max_steps


@dataclass
class TrialResources:
    """What one trial (one Ray Train run) gets; overrides the recipe's train.* resources."""

    num_workers: int = 1
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    zero_stage: int = -1  # -1: keep the recipe's
    driver_cpus: float = 0.1  # the trial's driver (it only waits on the Train controller); must be > 0


@dataclass
class SweepConfig:
    name: str = "sweep"
    storage: str = "runs/sweeps"  # local path or s3:// / gs://; the sweep lives in {storage}/{name}
    recipe: str = ""  # the base pretraining recipe (YAML path or URI; relative to the cwd or to this file)
    data_train: str = ""  # the shard set every trial trains on ("" = the recipe's data.train, after `set`)
    set: list[str] = field(default_factory=list)
    space: dict[str, Any] = field(default_factory=dict)
    teacher_weights: str = "fixed"  # fixed: the recipe's (or the space's) | simplex: sampled, normalised
    num_samples: int = 4
    max_concurrent_trials: int = 2
    search: str = "random"  # random | optuna
    seed: int = 0
    report_every: int = 1  # steps between the metric reports the scheduler sees
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    asha: AshaConfig = field(default_factory=AshaConfig)
    trial: TrialResources = field(default_factory=TrialResources)

    def check(self) -> None:
        if not self.recipe:
            raise ConfigError("recipe: give the base pretraining recipe, e.g. jobs/configs/tiny.yaml")
        if self.objective.kind not in OBJECTIVES:
            raise ConfigError(f"objective.kind: one of {sorted(OBJECTIVES)}, got {self.objective.kind!r}")
        if self.objective.kind == "probe_f1" and not self.objective.task:
            raise ConfigError("objective.task: probe_f1 needs a labelled shard set URI (records with label and split)")
        if self.search not in ("random", "optuna"):
            raise ConfigError(f"search: random or optuna, got {self.search!r}")
        if self.teacher_weights not in ("fixed", "simplex"):
            raise ConfigError(f"teacher_weights: fixed or simplex, got {self.teacher_weights!r}")
        for key, v in (("num_samples", self.num_samples), ("max_concurrent_trials", self.max_concurrent_trials),
                       ("report_every", self.report_every), ("trial.num_workers", self.trial.num_workers),
                       ("asha.grace_period", self.asha.grace_period)):
            if v < 1:
                raise ConfigError(f"{key}: must be >= 1, got {v}")
        if not self.trial.driver_cpus > 0:
            raise ConfigError(f"trial.driver_cpus: must be > 0 (Tune needs a resource per trial), got {self.trial.driver_cpus}")
        if self.asha.reduction_factor < 2:
            raise ConfigError(f"asha.reduction_factor: must be >= 2, got {self.asha.reduction_factor}")

    @property
    def mode(self) -> str:
        return OBJECTIVES[self.objective.kind]

    @property
    def metric(self) -> str:
        return "distill_loss_avg" if self.objective.kind == "distill_loss" else "probe_f1"
