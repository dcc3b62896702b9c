"""`step-dist <verb>`: thin; each verb's module parses its own arguments and calls the library.

Verbs are imported lazily so `step-dist inspect` does not pay for importing torch, DeepSpeed or Ray Train.
Each verb module defines ``add_arguments(parser)`` and ``run(args) -> int`` (the exit code).
"""
from __future__ import annotations

import argparse
import importlib
import sys

VERBS: dict[str, tuple[str, str]] = {
    "ingest": ("step_dist.signals.commands_ingest", "read raw signal files (local or object storage) into Parquet shards"),
    "ingest-scits": ("step_dist.evaluate.commands_ingest_scits", "read a SciTS release into one labelled task per SciTS task and a pretraining corpus"),
    "demo-data": ("step_dist.signals.commands_demo_data", "build the offline demo corpus from signals shipped in PyPI packages"),
    "inspect": ("step_dist.signals.commands_inspect", "summarise a shard set (records, sources, lengths, rates, labels)"),
    "cache-targets": ("step_dist.teachers.commands", "run the teacher pools once over a shard set and write a target cache"),
    "pretrain": ("step_dist.train.commands", "distil the STEP student from the teachers (Ray Train + DeepSpeed)"),
    "evaluate": ("step_dist.evaluate.commands_evaluate", "linear probe / staged fine-tune on labelled tasks, with baselines"),
    "embed": ("step_dist.evaluate.commands_embed", "write embeddings of a shard set as Parquet"),
    "sweep": ("step_dist.tune.commands", "Ray Tune sweep over patching and loss weights"),
    "status": ("step_dist.status.commands", "where a run, sweep, target cache or shard set stands, from its storage alone"),
    "demo": ("step_dist.demo", "the local default end to end: demo corpus, distillation, evaluation table"),
}


def _usage() -> str:
    lines = ["usage: step-dist <verb> [options]", "", "verbs:"]
    lines += [f"  {name:<14} {help_}" for name, (_, help_) in VERBS.items()]
    lines += ["", "step-dist <verb> --help for a verb's options"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"step-dist: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(VERBS[verb][0])
    parser = argparse.ArgumentParser(prog=f"step-dist {verb}", description=VERBS[verb][1])
    module.add_arguments(parser)
    parser.add_argument("--verbose", action="store_true",
                        help="also show Ray's and Ray Data's own progress bars, worker output and notices "
                             "(by default they go to the Ray session's log folder, named once)")
    args = parser.parse_args(rest)
    from step_dist import console

    console.set_verbose(args.verbose)
    try:
        return int(module.run(args) or 0)
    except Exception as e:  # noqa: BLE001 - re-raised unless it is an error the user can fix
        message = user_error(e)
        if message is None:
            raise
        print(f"step-dist {verb}: {message}", file=sys.stderr)
        return 2


def user_error(e: BaseException) -> str | None:
    """The message of an error the user fixes (a bad recipe, an unusable storage location, a task or teacher
    that cannot be loaded, a refused checkpoint), shown without a traceback; None for anything else, which is
    a bug and keeps its traceback."""
    for module, name in USER_ERRORS:
        mod = sys.modules.get(module)  # only errors of modules the verb imported can have been raised
        cls = getattr(mod, name, None) if mod is not None else None
        if cls is not None and isinstance(e, cls):
            return str(e)
    return None


# Errors whose message already says what was wrong, where, and what to do.
USER_ERRORS = (
    ("step_dist.config", "ConfigError"),
    ("step_dist.storage", "StorageError"),
    ("step_dist.teachers.protocol", "TeacherError"),
    ("step_dist.evaluate.tasks", "TaskError"),
    ("step_dist.evaluate.scits_files", "ScitsError"),
    ("step_dist.train.safety", "UnsafeCheckpointError"),
    ("step_dist.signals.readers.base", "ReaderError"),
    ("builtins", "FileNotFoundError"),  # step-dist's own say which path and what to give instead
)

if __name__ == "__main__":
    sys.exit(main())
