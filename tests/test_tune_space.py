"""The sweep's search space and recipe: YAML distributions, teacher addressing, simplex weights, refusals."""
from __future__ import annotations

import pytest

from step_dist.config import ConfigError
from step_dist.tune.config import SweepConfig
from step_dist.tune.space import WEIGHT_PREFIX, apply_params, build_space, check_space, params_of, simplex_weights

RECIPE = {
    "name": "r", "data": {"train": "/tmp/none"},
    "student": {"size": "tiny"},
    "teachers": [{"name": "a", "model": {"kind": "fracast"}, "weight": 1.0, "loss": "cosine"},
                 {"name": "b", "model": {"kind": "crepe"}, "weight": 0.5, "loss": "cosine"}],
}


def test_when_raw_weights_are_sampled_then_the_teacher_weights_lie_on_the_simplex():
    w = simplex_weights({"a": 0.3, "b": 0.9, "c": 0.01})
    assert sum(w.values()) == pytest.approx(1.0)
    assert all(v > 0 for v in w.values())
    assert w["c"] > w["a"] > w["b"]  # -log(U): a small raw draw is a large share


def test_when_a_trial_is_applied_then_teacher_fields_are_set_by_name_and_the_base_is_untouched():
    params = {"student.n_max": 64, "teachers.b.loss": "mse", "optim.lr": 1e-3,
              WEIGHT_PREFIX + "a": 0.5, WEIGHT_PREFIX + "b": 0.5}
    out = apply_params(RECIPE, params)
    assert out["student"] == {"size": "tiny", "n_max": 64}
    assert out["optim"]["lr"] == 1e-3
    assert [t["loss"] for t in out["teachers"]] == ["cosine", "mse"]
    assert [t["weight"] for t in out["teachers"]] == pytest.approx([0.5, 0.5])
    assert RECIPE["teachers"][1]["loss"] == "cosine" and "optim" not in RECIPE
    shown = params_of(params)
    assert shown["teachers.a.weight"] == pytest.approx(0.5) and WEIGHT_PREFIX + "a" not in shown


def test_when_the_space_names_an_unknown_teacher_or_a_target_changing_key_then_it_fails_naming_the_key():
    with pytest.raises(ConfigError, match="teachers.zz.loss"):
        apply_params(RECIPE, {"teachers.zz.loss": "mse"})
    with pytest.raises(ConfigError, match="data.view.max_length"):
        build_space({"data.view.max_length": {"choice": [512, 1024]}}, ["a", "b"], "fixed")
    with pytest.raises(ConfigError, match="optim.lr"):
        build_space({"optim.lr": {"loguniform": [0, 1]}}, ["a", "b"], "fixed")
    with pytest.raises(ConfigError, match="student.n_max"):
        build_space({"student.n_max": [32, 64]}, ["a", "b"], "fixed")


def test_when_a_sampled_value_cannot_make_a_student_then_the_check_names_the_key():
    check_space(RECIPE, {"student.n_max": {"choice": [32, 64]}}, ["a", "b"], "simplex")
    with pytest.raises(ConfigError, match="space.student.n_min"):
        check_space(RECIPE, {"student.n_min": {"choice": [500]}}, ["a", "b"], "fixed")
    with pytest.raises(ConfigError, match="student.bogus"):
        check_space(RECIPE, {"student.bogus": {"choice": [1]}}, ["a", "b"], "fixed")


def test_when_the_sweep_config_is_impossible_then_check_names_the_key():
    for kw, key in (({"recipe": ""}, "recipe"), ({"recipe": "x", "search": "grid"}, "search"),
                    ({"recipe": "x", "max_concurrent_trials": 0}, "max_concurrent_trials")):
        with pytest.raises(ConfigError, match=key):
            SweepConfig(**kw).check()
    cfg = SweepConfig(recipe="x")
    cfg.objective.kind = "probe_f1"
    with pytest.raises(ConfigError, match="objective.task"):
        cfg.check()


class _Trial:  # what TrialProgress reads of Tune's Trial: its status
    def __init__(self, status: str):
        self.status = status


def test_when_trials_finish_then_the_sweep_line_counts_them_and_survives_pickling_with_the_experiment(capsys):
    import pickle

    from step_dist.tune.progress import TrialProgress

    cb = TrialProgress(3)
    cb.on_trial_start(0, [_Trial("RUNNING"), _Trial("PENDING"), _Trial("PENDING")], None)
    cb = pickle.loads(pickle.dumps(cb))  # Tune may pickle its callbacks with the experiment
    cb.on_trial_complete(1, [_Trial("TERMINATED"), _Trial("RUNNING"), _Trial("RUNNING")], None)
    cb.on_trial_error(2, [_Trial("TERMINATED"), _Trial("ERROR"), _Trial("RUNNING")], None)
    cb.on_experiment_end([_Trial("TERMINATED"), _Trial("ERROR"), _Trial("TERMINATED")])
    lines = [l for l in capsys.readouterr().out.splitlines() if l]
    assert lines[-1].startswith("[step-dist] sweep: 3/3 trials (100%)"), lines
    assert all("\x1b" not in l for l in lines) and len(lines) == len(set(lines))
