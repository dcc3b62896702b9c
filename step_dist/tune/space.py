"""The search space: YAML distributions -> Ray Tune domains, and one trial's sample -> a pretraining recipe.

A key is a dotted path in the pretraining recipe (``student.n_max``, ``optim.lr``); ``teachers.<name>.<field>``
addresses one teacher by name. Keys that would change the teacher targets (data.*, teachers.*.model) are
refused: every trial must read the one target cache.
"""
from __future__ import annotations

import copy
import math
from typing import Any

from step_dist.config import ConfigError, from_dict

WEIGHT_PREFIX = "teacher_weight_raw:"  # no "/": Tune flattens search spaces on it (Optuna path)
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
# keys whose change would need new teacher targets (the cache is keyed on the views and the teacher config)
FROZEN = ("data.", "targets.", "name", "storage")


def _domain(key: str, spec: Any):
    from ray import tune

    if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise ConfigError(f"space.{key}: give one of {{{', '.join(f'{d}: [...]' for d in DISTRIBUTIONS)}}}, got {spec!r}")
    kind, args = next(iter(spec.items()))
    if not isinstance(args, list) or not args:
        raise ConfigError(f"space.{key}.{kind}: give a list, got {args!r}")
    if kind == "choice":
        return tune.choice(list(args))
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args) or args[0] >= args[1]:
        raise ConfigError(f"space.{key}.{kind}: give [low, high] numbers with low < high, got {args!r}")
    lo, hi = args
    if kind == "uniform":
        return tune.uniform(float(lo), float(hi))
    if kind == "loguniform":
        if lo <= 0:
            raise ConfigError(f"space.{key}.loguniform: bounds must be > 0, got {args!r}")
        return tune.loguniform(float(lo), float(hi))
    return tune.randint(int(lo), int(hi) + 1)  # inclusive of high, as a user reads [low, high]


def _example(spec: dict) -> Any:
    kind, args = next(iter(spec.items()))
    return args[0]


def build_space(space: dict[str, Any], teacher_names: list[str], weights: str) -> dict[str, Any]:
    """Tune's param_space for the sweep (flat: one entry per swept recipe key)."""
    out = {}
    for key, spec in space.items():
        if key.startswith(FROZEN) or (key.startswith("teachers.") and ".model" in key):
            raise ConfigError(f"space.{key}: sweeping this would need new teacher targets per trial; every trial "
                              "reads one target cache, so sweep student/optim/train/teacher loss and weight keys")
        if key.startswith("teachers.") and key.endswith(".weight") and weights == "simplex":
            raise ConfigError(f"space.{key}: teacher_weights=simplex already samples every teacher's weight")
        out[key] = _domain(key, spec)
    if weights == "simplex":
        from ray import tune

        # -log(U) normalised is uniform on the simplex (Dirichlet(1, ..., 1)); raw values keep Optuna's search flat
        for name in teacher_names:
            out[WEIGHT_PREFIX + name] = tune.uniform(1e-6, 1.0)
    return out


def simplex_weights(raw: dict[str, float]) -> dict[str, float]:
    e = {k: -math.log(max(float(v), 1e-12)) for k, v in raw.items()}
    total = sum(e.values()) or 1.0
    return {k: v / total for k, v in e.items()}


def _set(node: dict, parts: list[str], value: Any, key: str) -> None:
    for p in parts[:-1]:
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"space.{key}: '{p}' is not a section of the recipe")
        node = nxt
    node[parts[-1]] = value


def apply_params(recipe: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A copy of the recipe (a plain mapping) with one trial's sampled values put in place."""
    out = copy.deepcopy(recipe)
    teachers = {t.get("name"): t for t in out.get("teachers", [])}
    raw = {}
    for key, value in params.items():
        if key.startswith(WEIGHT_PREFIX):
            raw[key[len(WEIGHT_PREFIX):]] = value
            continue
        parts = key.split(".")
        if parts[0] == "teachers":
            if len(parts) < 3 or parts[1] not in teachers:
                raise ConfigError(f"space.{key}: write teachers.<name>.<field>; the recipe's teachers are {sorted(teachers)}")
            _set(teachers[parts[1]], parts[2:], value, key)
        else:
            _set(out, parts, value, key)
    for name, w in simplex_weights(raw).items():
        teachers[name]["weight"] = w
    return out


def params_of(config: dict[str, Any]) -> dict[str, Any]:
    """What a user reads in the results table: sampled values, simplex weights already normalised."""
    raw = {k[len(WEIGHT_PREFIX):]: v for k, v in config.items() if k.startswith(WEIGHT_PREFIX)}
    out = {k: v for k, v in config.items() if not k.startswith(WEIGHT_PREFIX)}
    out.update({f"teachers.{n}.weight": w for n, w in simplex_weights(raw).items()})
    return out


def check_space(recipe: dict[str, Any], space: dict[str, Any], teacher_names: list[str], weights: str) -> None:
    """Fail on the driver, naming the key, when a sampled value could not make a valid recipe."""
    from step_dist.train.config import PretrainConfig

    build_space(space, teacher_names, weights)
    for key, spec in space.items():
        trial = apply_params(recipe, {key: _example(spec)})
        cfg = from_dict(PretrainConfig, trial)
        try:
            cfg.student_config()
        except ConfigError as e:
            raise ConfigError(f"space.{key}: {e}") from None
