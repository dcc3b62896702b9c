"""Teachers: frozen foundation models turned into token targets, their Ray actor-pool stage and target cache."""
from step_dist.teachers.protocol import Teacher, TeacherConfig, TeacherError, TeacherInputError
from step_dist.teachers.registry import build_teacher

__all__ = [
    "Teacher", "TeacherConfig", "TeacherError", "TeacherInputError", "build_teacher",
    "TeacherTargetsUDF", "CachedTargetsUDF", "PoolConfig", "teacher_stage", "cached_stage", "expand_views",
]


def __getattr__(name: str):
    # the Ray-facing parts load lazily: building a teacher should not import Ray Data
    if name in ("TeacherTargetsUDF", "PoolConfig", "teacher_stage", "expand_views"):
        from step_dist.teachers import stage

        return getattr(stage, name)
    if name in ("CachedTargetsUDF", "cached_stage"):
        from step_dist.teachers import cache

        return getattr(cache, name)
    raise AttributeError(name)
