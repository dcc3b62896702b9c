"""The sweep driver: Ray Tune runs one driver function per trial; each builds and fits a TorchTrainer through
``step_dist.train.pretrain`` (the Ray 2.60 pattern: Tune never sees a Trainer), with Tune's
TuneReportCallback forwarding the workers' reports so ASHA can stop a trial early.

Teachers run once: the driver builds the target cache (if missing) before any trial starts, and every trial
runs with ``targets.mode=cache`` against it.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from step_dist import storage
from step_dist.config import ConfigError, apply_overrides, from_dict, load_yaml
from step_dist.tune.config import SweepConfig
from step_dist.tune.space import apply_params, build_space, check_space


@dataclass
class SweepResult:
    sweep_uri: str  # {storage}/{name}: Tune's experiment, trials' runs, table, plot, best recipe
    rows: list[dict[str, Any]]  # one per trial (see results.rows_of)
    best: dict[str, Any] | None  # the best row
    best_recipe_uri: str | None
    table_uri: str  # results.csv (results.json beside it)
    plot_uri: str | None
    cache_uri: str
    wall_s: float


def _resolve_recipe(path: str, sweep_file: str | None) -> str:
    if storage.exists(path) or not sweep_file:
        return path
    alt = os.path.join(os.path.dirname(sweep_file), path)
    return alt if storage.exists(alt) else path


def base_recipe(cfg: SweepConfig, sweep_file: str | None = None) -> dict[str, Any]:
    """The recipe every trial starts from, as a mapping: base file + `set` + the sweep's cache and resources."""
    data = apply_overrides(load_yaml(_resolve_recipe(cfg.recipe, sweep_file)), cfg.set)
    if cfg.data_train:
        data = apply_overrides(data, [f"data.train={cfg.data_train}"])
    # trials run in Tune's own working directories: relative local paths must be made absolute here
    section = dict(data.get("data") or {})
    if section.get("train"):
        section["train"] = storage.parse_uri(section["train"]).uri
        data["data"] = section
    sweep_uri = storage.parse_uri(cfg.storage).join(cfg.name).uri
    targets = dict(data.get("targets") or {})
    if targets.get("mode") != "cache" or not targets.get("cache"):
        targets["cache"] = storage.parse_uri(sweep_uri).join("targets").uri
    targets["mode"] = "cache"
    data["targets"] = targets
    train = dict(data.get("train") or {})
    t = cfg.trial
    train.update(num_workers=t.num_workers, use_gpu=t.use_gpu)
    if t.resources_per_worker:
        train["resources_per_worker"] = dict(t.resources_per_worker)
    if t.zero_stage >= 0:
        train["zero_stage"] = t.zero_stage
    train.pop("global_batch_size", None)  # the trial's worker count differs from the recipe's
    data["train"] = train
    data["storage"] = storage.parse_uri(sweep_uri).join("trials").uri
    return data


def run_trial(config: dict[str, Any], ctx: dict[str, Any]) -> None:
    """One trial (runs in Tune's trial actor): the recipe with this trial's values -> pretrain -> objective."""
    import ray.tune

    from step_dist.train.config import PretrainConfig
    from step_dist.train.trainer import pretrain
    from step_dist.tune.report import TrialReportCallback

    recipe = apply_params(ctx["recipe"], config)
    recipe["name"] = ray.tune.get_context().get_trial_id()  # stable across Tune's restore: the run resumes
    cfg = from_dict(PretrainConfig, recipe)
    probe = ctx["objective"]["kind"] == "probe_f1"
    # the workers' last report waits until the run has finished (ASHA stops a trial at its last step, which
    # would cut off the run's outputs and the probe); probe_f1 is NaN until measured (step_dist/tune/report.py)
    callback = TrialReportCallback({"probe_f1": float("nan")} if probe else None, hold_from_step=cfg.train.max_steps)
    result = pretrain(cfg, verbose=False, callbacks=[callback], report_every=ctx["report_every"])
    final = {**result.metrics, "step": int(result.metrics.get("step", cfg.train.max_steps))}
    if probe:
        from step_dist.tune.objective import probe_f1

        final["probe_f1"] = probe_f1(result.export_uri, **{k: v for k, v in ctx["objective"].items() if k != "kind"})
    ray.tune.report(final)


def _scheduler(cfg: SweepConfig, max_steps: int):
    if not cfg.asha.enabled:
        return None
    from ray.tune.schedulers import ASHAScheduler

    # ASHA always ranks trials by the distillation loss it sees at every report; with probe_f1 that stops
    # trials whose loss lags, and the probe decides among the ones that finish
    return ASHAScheduler(time_attr="step", metric="distill_loss_avg", mode="min",
                         max_t=cfg.asha.max_t or max_steps, grace_period=cfg.asha.grace_period,
                         reduction_factor=cfg.asha.reduction_factor)


def _search(cfg: SweepConfig, space: dict[str, Any]):
    """(search algorithm, the Tuner's param_space).

    OptunaSearch gets the space at construction, not from the Tuner's param_space: Tuner.restore brings back
    the searcher as pickled when the Tuner was made (tuner.pkl, which leaves param_space out), and only a
    resume from a saved experiment state also restores what it learned later. When Tune cannot resume (it
    logs "Failed to restore the run state" and restarts the experiment), a searcher that was given its space
    through param_space has none and OptunaSearch.suggest raises "no search space has been defined". The
    random search keeps its space in param_space, which build_tuner passes again on restore (without it a
    restarted BasicVariantGenerator samples empty configs).
    """
    if cfg.search != "optuna":
        from ray.tune.search import BasicVariantGenerator

        # the same seed samples the same trials; max_concurrent here, as Tune ignores max_concurrent_trials
        # for a search generator passed in
        return BasicVariantGenerator(random_state=cfg.seed, max_concurrent=cfg.max_concurrent_trials), space
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(space=OptunaSearch.convert_search_space(space), metric=cfg.metric, mode=cfg.mode,
                            seed=cfg.seed)
    return searcher, None  # Tune limits its concurrency (max_concurrent_trials)


def _has_experiment_state(fs, exp_path: str) -> bool:
    """Whether Tune saved the experiment's state there (trials, searcher): what Tuner.restore resumes from."""
    import fnmatch

    import pyarrow.fs as pafs

    names = [os.path.basename(f.path) for f in fs.get_file_info(pafs.FileSelector(exp_path, allow_not_found=True))]
    return bool(fnmatch.filter(names, "experiment_state-*.json"))


def build_tuner(cfg: SweepConfig, recipe: dict[str, Any], restore: bool = True):
    """A new Tuner, or the interrupted one at the same storage (its finished trials kept, the rest resumed)."""
    from ray import tune

    from step_dist.train.config import PretrainConfig
    from step_dist.tune.progress import TrialProgress

    pcfg = from_dict(PretrainConfig, recipe)
    names = [t.name for t in pcfg.teachers]
    sweep_uri = storage.parse_uri(cfg.storage).join(cfg.name).uri
    fs, root = storage.arrow_filesystem(cfg.storage)
    exp_path = storage.arrow_filesystem(sweep_uri)[1]
    ctx = {"recipe": recipe, "report_every": cfg.report_every,
           "objective": {"kind": cfg.objective.kind, "task": cfg.objective.task, "split": cfg.objective.split,
                         "max_records_per_split": cfg.objective.max_records_per_split}}
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), {"cpu": cfg.trial.driver_cpus})
    space = build_space(cfg.space, names, cfg.teacher_weights)
    searcher, param_space = _search(cfg, space)
    if restore and tune.Tuner.can_restore(exp_path, storage_filesystem=fs):
        if _has_experiment_state(fs, exp_path):
            print(f"[step-dist] resuming the sweep at {sweep_uri}", flush=True)
            # trials, searcher and scheduler come back from the saved state; param_space as first given
            return tune.Tuner.restore(exp_path, trainable=trainable, param_space=param_space,
                                      resume_unfinished=True, resume_errored=True, storage_filesystem=fs)
        # tuner.pkl is written when the Tuner is made, the experiment state at its first step: Tune would
        # "restore" this one by restarting it, with the searcher as pickled and no param_space
        print(f"[step-dist] the sweep at {sweep_uri} stopped before Tune saved any trial: starting it afresh",
              flush=True)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            num_samples=cfg.num_samples,
            max_concurrent_trials=cfg.max_concurrent_trials,
            scheduler=_scheduler(cfg, pcfg.train.max_steps),
            search_alg=searcher,
        ),
        run_config=tune.RunConfig(name=cfg.name, storage_path=root, storage_filesystem=fs, verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0),
                                  callbacks=[TrialProgress(cfg.num_samples)]),
    )


def run_sweep(cfg: SweepConfig, sweep_file: str | None = None, verbose: bool = True) -> SweepResult:
    import ray

    from step_dist.train.config import PretrainConfig
    from step_dist.train.trainer import ensure_target_cache
    from step_dist.tune.results import write_outputs, write_plan

    t0 = time.time()
    cfg.check()
    recipe = base_recipe(cfg, sweep_file)
    pcfg = from_dict(PretrainConfig, recipe)
    pcfg.check()
    check_space(recipe, cfg.space, [t.name for t in pcfg.teachers], cfg.teacher_weights)
    if not ray.is_initialized():
        from step_dist.train.trainer import local_ray_cpus

        from step_dist.ray_session import init_ray

        # a local Ray must fit the teacher pools (cache build) and every concurrent trial at once
        init_ray(local_ray_cpus(pcfg) * max(1, cfg.max_concurrent_trials))
    # the plan first, so `step-dist status` knows the folder for a sweep while its target cache is built
    write_plan(cfg, storage.parse_uri(cfg.storage).join(cfg.name).uri, pcfg.train.max_steps)
    # the teachers run here, once, before any trial (a no-op when the cache already holds their targets)
    ensure_target_cache(pcfg, verbose)
    tuner = build_tuner(cfg, recipe)
    if verbose:
        print(f"[step-dist] sweep {cfg.name}: {cfg.num_samples} trial(s), {cfg.max_concurrent_trials} at a time, "
              f"{cfg.search} search, objective {cfg.objective.kind} ({cfg.mode}), targets {pcfg.targets.cache}", flush=True)
    grid = tuner.fit()
    sweep_uri = storage.parse_uri(cfg.storage).join(cfg.name).uri
    out = write_outputs(grid, cfg, recipe, sweep_uri, pcfg.train.max_steps)
    return SweepResult(sweep_uri=sweep_uri, cache_uri=pcfg.targets.cache, wall_s=time.time() - t0, **out)


def load_sweep(path: str, overrides: list[str] | None = None) -> SweepConfig:
    from step_dist.config import load

    cfg = load(SweepConfig, path, overrides)
    if not isinstance(cfg.space, dict):
        raise ConfigError(f"{path}: space must be a mapping of recipe keys to distributions")
    return cfg
