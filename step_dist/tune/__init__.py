"""Ray Tune sweeps of pretraining runs (patching, loss types, teacher weights, learning rate) over one
target cache, with ASHA early stopping and an optional Optuna search."""
from step_dist.tune.config import SweepConfig
from step_dist.tune.driver import SweepResult, load_sweep, run_sweep

__all__ = ["SweepConfig", "SweepResult", "load_sweep", "run_sweep"]
