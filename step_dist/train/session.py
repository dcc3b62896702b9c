"""A worker's view of the others and of Ray Train: its rank, cross-rank agreement, the data shard, the
checkpoint to resume from, reports. The per-worker trainer (train/loop.py) reaches Ray Train only through
``RayTrainSession``, so its parts can run in a test with a stand-in."""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist


def say(message: str) -> None:
    """A worker's line, written once. Ray Train V2 replaces print() on its workers with a version that both
    echoes the line and logs it through the root logger, which printed every step line twice; writing to the
    stream directly keeps one copy (in the worker's log file, or the console with --verbose)."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


@dataclass
class Ranks:
    """This worker's place among the ranks, and the tiny all-reduces that keep them in step."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def _alone(self) -> bool:
        return not dist.is_initialized() or dist.get_world_size() == 1

    def agree(self, flag: bool) -> bool:
        """True only if every rank says True (ranks must run the same number of steps)."""
        if self._alone():
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item() > 0.5)

    def sum(self, values: list[float]) -> list[float]:
        if self._alone():
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def mean(self, values: list[float]) -> list[float]:
        if self._alone():
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return (t / dist.get_world_size()).tolist()


class RayTrainSession:
    """What a worker asks of Ray Train (call inside a Ray Train worker)."""

    def __init__(self, use_gpu: bool):
        import ray.train

        ctx = ray.train.get_context()
        use_cuda = use_gpu and torch.cuda.is_available()
        device = torch.device("cuda", ctx.get_local_rank()) if use_cuda else torch.device("cpu")
        if use_cuda:
            torch.cuda.set_device(device)
        self.ranks = Ranks(ctx.get_world_rank(), ctx.get_world_size(), device)
        self._shard = None

    @contextlib.contextmanager
    def resume_folder(self) -> Iterator[str | None]:
        """The latest registered checkpoint as a local folder, or None on a first start."""
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            yield None
            return
        with ckpt.as_directory() as d:
            yield d

    def iter_batches(self, **kw) -> Iterator[dict[str, Any]]:
        """This rank's share of the training data, one pass (one epoch)."""
        import ray.train

        if self._shard is None:
            self._shard = ray.train.get_dataset_shard("train")
        return self._shard.iter_batches(**kw)

    def report(self, metrics: dict[str, Any], folder: str | None = None, name: str | None = None) -> None:
        """Report metrics (a barrier: every rank reports at the same steps), with a checkpoint folder when given."""
        import ray.train

        if folder is None:
            ray.train.report(metrics)
            return
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder), checkpoint_dir_name=name)
        # report() returns once this rank's files are uploaded, but the controller registers the checkpoint
        # later: a worker killed in between would restart from the previous one and lose two intervals.
        # Wait until it is committed, so a failure after a checkpoint costs at most one interval.
        ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
