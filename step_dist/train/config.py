"""The pretraining recipe: one dataclass per component, composed, loaded from YAML + overrides.

Impossible combinations fail in `check()` on the driver, before any Ray worker starts, naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from step_dist.config import ConfigError
from step_dist.data.views import ViewConfig
from step_dist.teachers.pool import PoolConfig


@dataclass
class TeacherEntry:
    name: str = ""
    model: dict[str, Any] = field(default_factory=dict)  # step_dist.teachers.TeacherConfig fields (kind, checkpoint, ...)
    weight: float = 1.0
    loss: str = "cosine"
    align: str = "resample"  # resample | pool | forced (step_dist.distill.align)
    hidden: int = 0
    target_norm: str = "dataset"  # whiten | dataset | layer | none (step_dist.distill.module.HeadConfig)
    whiten_floor: float = 1e-2  # target_norm whiten: eigenvalue floor, a fraction of the mean eigenvalue
    pooled_weight: float = 0.0  # weight of the record-level term (HeadConfig.pooled_weight)
    pool: PoolConfig = field(default_factory=PoolConfig)

    def teacher_config(self, where: str):
        """The teacher itself (step_dist.teachers.TeacherConfig) from ``model``; errors name ``where`` + key."""
        from step_dist.config import from_dict
        from step_dist.teachers import TeacherConfig

        return from_dict(TeacherConfig, {"name": self.name, **self.model}, where=where)

    def head_config(self, teacher: dict[str, Any]):
        """How the student is matched to this teacher (step_dist.distill.module.HeadConfig). ``teacher``: what
        the teacher says of itself (dim, teacher_rate_hz, teacher_context, teacher_crops; trainer._teacher_dims)."""
        from step_dist.distill.module import HeadConfig

        return HeadConfig(name=self.name, weight=self.weight, loss=self.loss, align=self.align, hidden=self.hidden,
                          target_norm=self.target_norm, whiten_floor=self.whiten_floor,
                          pooled_weight=self.pooled_weight,
                          # the teacher's rate range (TeacherConfig.min/max_rate_hz) gates its head too, so a
                          # record outside it never weighs in, whatever the source of the targets
                          min_rate_hz=float(self.model.get("min_rate_hz", 0.0)),
                          max_rate_hz=float(self.model.get("max_rate_hz", 0.0)), **teacher)


@dataclass
class DataConfig:
    train: str = ""  # URI of a shard set (folder with _manifest.json) from `step-dist ingest` / `demo-data`
    view: ViewConfig = field(default_factory=ViewConfig)
    batch_size: int = 8  # micro-batch per worker
    bucket_rows: int = 64  # rows sorted by length together before micro-batches are cut (length buckets)
    shuffle_buffer: int = 0  # views mixed in a seeded buffer before bucketing (0: corpus order)
    validation: dict[str, Any] = field(default_factory=dict)  # step_dist.signals.validate.ValidationConfig fields
    # records held out (by a hash of their id, data/split.py) to measure distillation on unseen data: the
    # validation loss per teacher and the student's effective ranks every train.validate_every steps
    validation_fraction: float = 0.0
    validation_max_views: int = 64  # views of that slice scored each time (their targets travel to every worker)


@dataclass
class TargetsConfig:
    mode: str = "online"  # online: teacher actor pools stream targets | cache: read a target cache
    cache: str = ""  # URI of the target cache (mode=cache)
    build_if_missing: bool = True  # mode=cache: run cache-targets first when the cache is absent


@dataclass
class OptimConfig:
    lr: float = 3e-4
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio at max_steps
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    num_workers: int = 2
    use_gpu: bool = False
    resources_per_worker: dict[str, float] = field(default_factory=dict)
    label_selector: dict[str, str] = field(default_factory=dict)  # e.g. {"step-dist/role": "trainer"}
    zero_stage: int = 2
    offload_optimizer: bool = False  # ZeRO-Offload of optimizer state to CPU (stage >= 1)
    precision: str = "auto"  # auto: bf16 on GPU, fp32 on CPU | fp32 | bf16
    grad_accum: int = 1
    global_batch_size: int = 0  # 0: batch_size x grad_accum x num_workers; else must equal it
    max_steps: int = 100
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0
    max_failures: int = 0  # Ray Train restarts from the last checkpoint this many times (worker/node lost)
    preemption_check_every: int = 10  # ask Ray Train about spot preemption every N steps (0: never); a notice
    # triggers a just-in-time checkpoint. The ask is a cross-rank broadcast, so not every step; keep N steps
    # well inside the cloud's reclaim notice (AWS 2 min, GCP 30 s)
    trusted_pickle_globals: list[str] = field(default_factory=list)  # "module.name" a resumed checkpoint may
    # import besides torch/DeepSpeed tensors (explicit opt-in; anything else is refused before unpickling)
    account_records: bool = True  # exactly-once ledger of (record id, view id) per epoch, checked at the end
    penalty_weight: float = 1.0
    validate_every: int = 50  # steps between validation passes (data.validation_fraction > 0), and at the end
    deterministic: bool = False  # torch deterministic algorithms (exact repeatability; slower on GPU)


@dataclass
class PretrainConfig:
    name: str = "step-dist-run"
    storage: str = "runs"  # where checkpoints, metrics and plots go: a local path or s3:// / gs:// URI
    data: DataConfig = field(default_factory=DataConfig)
    student: dict[str, Any] = field(default_factory=lambda: {"size": "tiny"})  # size + StudentConfig overrides
    teachers: list[TeacherEntry] = field(default_factory=list)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracker: str = "tensorboard"  # tensorboard | mlflow | none (metrics.jsonl is always written)

    def student_config(self):
        """The student the recipe asks for: ``student.size`` (tiny, small, base) with any StudentConfig field
        overridden; a bad key or value fails naming it (student.<key>)."""
        from step_dist.model import StudentConfig

        return StudentConfig.from_recipe(self.student, where="student.")

    def teacher_configs(self) -> list:
        """Every teacher's TeacherConfig, errors naming teachers[i].model.<key>."""
        return [te.teacher_config(f"teachers[{i}].model.") for i, te in enumerate(self.teachers)]

    def check(self) -> None:
        """Reject impossible recipes before any worker starts."""
        t = self.train
        if not self.data.train:
            raise ConfigError("data.train: give the URI of a shard set (see `step-dist ingest` / `step-dist demo-data`)")
        if not self.teachers:
            raise ConfigError("teachers: at least one teacher is needed to distil from")
        names = [x.name for x in self.teachers]
        if any(not n for n in names) or len(set(names)) != len(names):
            raise ConfigError(f"teachers[*].name: every teacher needs a unique name, got {names}")
        if t.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"train.zero_stage: must be 0, 1, 2 or 3, got {t.zero_stage}")
        if t.offload_optimizer and t.zero_stage == 0:
            raise ConfigError("train.offload_optimizer: needs train.zero_stage >= 1")
        if t.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"train.precision: auto, fp32 or bf16, got {t.precision!r}")
        if t.precision == "bf16" and not t.use_gpu:
            raise ConfigError("train.precision=bf16 needs train.use_gpu=true (CPU training runs in fp32)")
        for key, v in (("train.num_workers", t.num_workers), ("data.batch_size", self.data.batch_size),
                       ("train.grad_accum", t.grad_accum), ("train.max_steps", t.max_steps),
                       ("train.checkpoint_every", t.checkpoint_every), ("train.log_every", t.log_every)):
            if v < 1:
                raise ConfigError(f"{key}: must be >= 1, got {v}")
        derived = self.data.batch_size * t.grad_accum * t.num_workers
        if t.global_batch_size and t.global_batch_size != derived:
            raise ConfigError(
                f"train.global_batch_size={t.global_batch_size} does not divide into data.batch_size "
                f"({self.data.batch_size}) x train.grad_accum ({t.grad_accum}) x train.num_workers ({t.num_workers}) "
                f"= {derived}: change one of them"
            )
        if t.max_failures < -1 or t.preemption_check_every < 0:
            raise ConfigError("train.max_failures must be >= -1 (-1: unlimited) and train.preemption_check_every >= 0")
        from step_dist.signals.validate import ValidationConfig

        try:
            ValidationConfig(**self.data.validation)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"data.validation: {e} (keys: nan_policy, min_length, max_length, max_channels, "
                              "max_bytes, allow_constant)") from None
        if not 0.0 <= self.data.validation_fraction < 1.0:
            raise ConfigError(f"data.validation_fraction: must be in [0, 1), got {self.data.validation_fraction}")
        if self.data.validation_max_views < 1 or t.validate_every < 1:
            raise ConfigError("data.validation_max_views and train.validate_every: must be >= 1")
        if self.data.bucket_rows < self.data.batch_size:
            raise ConfigError("data.bucket_rows: must be >= data.batch_size")
        if self.targets.mode not in ("online", "cache"):
            raise ConfigError(f"targets.mode: online or cache, got {self.targets.mode!r}")
        if self.targets.mode == "cache" and not self.targets.cache:
            raise ConfigError("targets.cache: give a URI for the target cache when targets.mode=cache")
        if self.tracker not in ("tensorboard", "mlflow", "none"):
            raise ConfigError(f"tracker: tensorboard, mlflow or none, got {self.tracker!r}")
        self.student_config()
        self.teacher_configs()
        for i, te in enumerate(self.teachers):
            if te.pool.size < 1:
                raise ConfigError(f"teachers[{i}].pool.size: must be >= 1")
            if te.align not in ("resample", "pool", "forced"):
                raise ConfigError(f"teachers[{i}].align: resample, pool or forced, got {te.align!r}")
