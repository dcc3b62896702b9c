"""The sweep's progress line: trials finished of those planned, as Tune's controller on the driver sees them.

A Tune callback, so it is given to the Tuner's RunConfig and may be pickled with the experiment: the line's
stream is made on first use and never pickled (a restored sweep makes its own).
"""
from __future__ import annotations

from ray.tune import Callback

from step_dist.progress import Progress

FINISHED = ("TERMINATED", "ERROR")  # ASHA's early stops end as TERMINATED too: they are finished trials


class TrialProgress(Callback):
    def __init__(self, total: int):
        self.total = int(total)
        self._bar: Progress | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_bar": None}

    def _update(self, trials) -> None:
        done = sum(t.status in FINISHED for t in trials)
        if self._bar is None:
            # trials a restored sweep had already finished count as done, not in the rate
            self._bar = Progress("sweep", total=self.total, unit="trials", start=done)
        running = sum(t.status == "RUNNING" for t in trials)
        self._bar.set(done, extra=f"{running} running")

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._update(trials)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._update(trials)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._update(trials)

    def on_experiment_end(self, trials, **info) -> None:
        self._update(trials)
        self._bar.close()
