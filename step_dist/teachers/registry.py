"""kind -> adapter class; ``build_teacher(cfg)`` is the one way the rest of step-dist gets a teacher.

Adapters are imported on first use so that a teacher family whose extra is not installed only fails for
the configs that ask for it, with the pip command that fixes it.
"""
from __future__ import annotations

import importlib
from typing import Any

from step_dist.teachers.protocol import Teacher, TeacherConfig, TeacherError

# kind -> (module, class, extra that provides its dependencies, modules that extra must make importable)
ADAPTERS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "fracast": ("step_dist.teachers.adapters.fracast", "FracastTeacher", "demo", ("fracast",)),
    "crepe": ("step_dist.teachers.adapters.crepe", "CrepeTeacher", "demo", ()),
    "hf_audio": ("step_dist.teachers.adapters.hf_audio", "HFAudioTeacher", "hf", ("transformers",)),
    "hf_remote": ("step_dist.teachers.adapters.hf_remote", "HFRemoteTeacher", "hf", ("transformers",)),
    "chronos": ("step_dist.teachers.adapters.chronos", "ChronosTeacher", "chronos", ("chronos",)),
    "ast": ("step_dist.teachers.adapters.hf_ast", "HFASTTeacher", "hf", ("transformers",)),
    "hf_timeseries": ("step_dist.teachers.adapters.hf_timeseries", "HFTimeSeriesTeacher", "hf", ("transformers",)),
    "moment": ("step_dist.teachers.adapters.moment", "MomentTeacher", "moment", ("momentfm",)),
    "braindecode": ("step_dist.teachers.adapters.braindecode", "BraindecodeTeacher", "eeg", ("braindecode",)),
}


def _missing(modules: tuple[str, ...]) -> str | None:
    for m in modules:
        if importlib.util.find_spec(m) is None:
            return m
    return None


def teacher_class(kind: str) -> type[Teacher]:
    if kind not in ADAPTERS:
        raise TeacherError(f"unknown teacher kind {kind!r}; known kinds: {sorted(ADAPTERS)}")
    module, cls, extra, needs = ADAPTERS[kind]
    gone = _missing(needs)
    if gone:
        raise TeacherError(f"teacher kind {kind!r} needs the {gone!r} package: pip install 'step-dist[{extra}]'")
    return getattr(importlib.import_module(module), cls)


def build_teacher(cfg: TeacherConfig | dict[str, Any], load: bool = True) -> Teacher:
    """A ready teacher; ``load=False`` gives one that only knows its checkpoint files and fingerprint."""
    if isinstance(cfg, dict):
        from step_dist.config import from_dict

        cfg = from_dict(TeacherConfig, cfg, where="teacher.")
    return teacher_class(cfg.kind)(cfg, load=load)


def fingerprint(cfg: TeacherConfig | dict[str, Any]) -> str:
    """The teacher's fingerprint without building its model (hashes the checkpoint files)."""
    return build_teacher(cfg, load=False).fingerprint
