"""PoolConfig: the fixed-size Ray actor pool that runs one teacher (one definition, used by recipes and stages)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PoolConfig:
    size: int = 1  # actors, fixed: GPU pools that grow and shrink starve each other
    num_gpus: float = 0.0  # per actor
    num_cpus: float = 1.0  # per actor
    batch_size: int = 16  # rows per actor call
    label_selector: dict[str, str] = field(default_factory=dict)  # e.g. {"step-dist/role": "teacher"}
    resources: dict[str, float] = field(default_factory=dict)  # e.g. {"teacher_gpu": 1}
    # fault tolerance: a crashed teacher actor (OOM, a lost node) is restarted up to max_restarts times and
    # the batches it held are re-run up to max_task_retries times, so no view is lost or emitted twice.
    # Bounded (not Ray Data's default -1) so that a teacher that dies on every batch fails the run instead
    # of looping forever.
    max_restarts: int = 3
    max_task_retries: int = 3

    def __post_init__(self) -> None:
        if self.size < 1 or self.batch_size < 1:
            raise ValueError(f"pool size and batch_size must be >= 1, got {self.size} and {self.batch_size}")
        if self.max_restarts < -1 or self.max_task_retries < -1:
            raise ValueError("pool max_restarts and max_task_retries must be >= -1 (-1: unlimited)")
