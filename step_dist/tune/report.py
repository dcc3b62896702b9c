"""What a trial reports to Tune while its Ray Train run trains.

Two Tune rules shape the reports:
- ASHA stops a trial as soon as it reports its last step (max_t), in the middle of the Ray Train run's own
  last report: the run's outputs (summary, loss curve) would never be written, and a probe_f1 objective never
  measured. The workers' report of the last step is held back; the trial reports it itself once the run has
  finished, with the probe's score when that is the objective.
- Tune checks every result for the searcher's metric (OptunaSearch also reads it from each one), and
  probe_f1 exists only at the end: the workers' reports carry ``probe_f1 = NaN`` (not measured yet).
Runs in the Ray Train controller, so it lives in an importable module.
"""
from __future__ import annotations

from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback


class TrialReportCallback(TuneReportCallback):
    """Tune's TuneReportCallback, with ``defaults`` under every forwarded report (a report's own keys win);
    reports at or after step ``hold_from_step`` (> 0) are not forwarded."""

    def __init__(self, defaults: dict[str, Any] | None = None, hold_from_step: int = 0):
        super().__init__()
        self._defaults = dict(defaults or {})
        self._hold_from_step = int(hold_from_step)

    def after_report(self, run_context, metrics, checkpoint):
        if metrics and self._hold_from_step > 0 and metrics[0].get("step", 0) >= self._hold_from_step:
            return
        if self._defaults and metrics:
            metrics = [{**self._defaults, **metrics[0]}, *metrics[1:]]
        super().after_report(run_context, metrics, checkpoint)
