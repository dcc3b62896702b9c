"""When a worker validates, reports and checkpoints: one decision after each optimizer step.

Every rank asks at the same steps and gets the same answer (nothing here depends on the rank), which matters:
a Ray Train report is a barrier, and validation and checkpoint saves are collectives.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass
class Plan:
    """What to do after one optimizer step, in this order: validate, report metrics, checkpoint."""

    validate: bool = False
    report: bool = False  # report metrics without a checkpoint (sweeps: Tune's schedulers see progress)
    checkpoint: bool = False
    preempted: bool = False  # the checkpoint is a just-in-time one: a node of the run is being reclaimed
    distill_loss_avg: float | None = None  # mean training distill loss since the last report (sweeps only)


class StepPolicy:
    """Checkpoints every ``checkpoint_every`` steps and at the last; validation every ``validate_every`` steps
    and at the last (0: no validation slice); with ``report_every`` > 0, a metrics report every N steps,
    carrying the mean distill loss since the previous report or checkpoint. ``preempted(step)`` asks whether a
    just-in-time checkpoint is due (train/faults.py PreemptionWatch); it is asked only at steps without a
    scheduled checkpoint."""

    def __init__(self, max_steps: int, checkpoint_every: int, validate_every: int = 0, report_every: int = 0,
                 preempted: Callable[[int], bool] | None = None):
        self.max_steps = int(max_steps)
        self.checkpoint_every = int(checkpoint_every)
        self.validate_every = int(validate_every)
        self.report_every = int(report_every)
        self.preempted = preempted or (lambda step: False)
        self._losses: list[float] = []  # distill losses since the last report

    def scheduled_checkpoint(self, step: int) -> bool:
        return step % self.checkpoint_every == 0 or step == self.max_steps

    def plan(self, step: int, distill_loss: float) -> Plan:
        p = Plan(checkpoint=self.scheduled_checkpoint(step))
        p.validate = self.validate_every > 0 and (step % self.validate_every == 0 or step == self.max_steps)
        if self.report_every:
            self._losses.append(distill_loss)
            if p.checkpoint or step % self.report_every == 0:
                p.distill_loss_avg = sum(self._losses) / len(self._losses)
                self._losses = []
                p.report = not p.checkpoint  # a checkpoint's report carries the metrics already
        if not p.checkpoint and self.preempted(step):
            p.checkpoint = p.preempted = True
        return p
