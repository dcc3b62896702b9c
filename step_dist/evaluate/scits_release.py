"""A SciTS release (or some of its JSONL files) -> one labelled shard set per task + one pretraining corpus.

The release layout (the dataset card, and TimeOmni's scripts that read ``Release_v1``)::

    ROOT/meta_data.jsonl                      every row of the benchmark
    ROOT/<Task folder>/raw_input_data/...     the signal files rows point at, paths relative to ROOT
    ROOT/<Task folder>/<Task folder>-test-1200.jsonl   (Release_v1) the task's rows, one file per split

Which JSONL files are read: a ROOT given is searched for .jsonl files; when its task folders hold their own,
those are read and ``meta_data.jsonl`` is not (it repeats their rows: reading both would count every row
twice); else ``meta_data.jsonl`` is. A .jsonl given by name is read as it is; its dataset root is ``--root``,
else the folder above it when it sits in its task's folder (``T/T-test-12.jsonl``), else its own folder.

A row's task: the task folder its JSONL sits in; for a JSONL at the root (``meta_data.jsonl``), the first
folder of the row's signal path (``T/raw_input_data/x.npy`` -> ``T``), else ``<dataset_name>-<scene>-<task>``.
Names are cut to letters, digits and ``._-`` (they become folder names).

Splits: a split token of the JSONL's name (``-train-``, ``-test-``) or the row's ``split``; ``meta_data.jsonl``
has none (the release is one test set). ``holdout`` (``--holdout F``) replaces them all: a hash of each record
id puts about F of every task in test and the rest in train, the same in every run (evaluate's own
``holdout_fraction`` does the same for rows left without a split).

What is written under OUT:
  ``tasks/<task>/``  each task with at least one labelled record: ``step-dist evaluate --task OUT/tasks/<task>``.
  ``corpus/``        every record not in a test or val split, labelled or not (forecasting inputs too): the
                     pretraining corpus (``data.train``); test signals never reach pretraining.
  ``scits_summary.json``  per task: rows, records, classes, splits, set aside by kind, and every set-aside row.
"""
from __future__ import annotations

import json
import os
import posixpath
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

from step_dist import storage
from step_dist.evaluate.scits import (
    DEFAULT_MAX_JSONL_BYTES,
    DEFAULT_MAX_LINE_BYTES,
    RowOptions,
    ScitsResult,
    _jsonl_rows,
    jsonl_files,
    read_jsonl,
    write_shard_set,
)
from step_dist.evaluate.scits_files import ScitsError
from step_dist.evaluate.scits_rows import signal_path
from step_dist.evaluate.tasks import holdout_split

META_JSONL = "meta_data.jsonl"
UNASSIGNED = "(no task)"  # lines that are not rows at all: no task can be told
SUMMARY = "scits_summary.json"


@dataclass
class Source:
    """JSONL files to read and the dataset root their paths are relative to."""

    root: str
    jsonl: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def task_slug(name: str) -> str:
    """A task name safe as one folder name (it comes from someone else's files)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._")
    return slug[:120] or "task"


def _rel(uri: str, root: str) -> str:
    return storage.parse_uri(uri).uri[len(storage.parse_uri(root).uri.rstrip("/")) + 1:]


def _inside(uri: str, root: str) -> bool:
    loc, r = storage.parse_uri(uri), storage.parse_uri(root)
    if loc.scheme != "file":
        return True  # listed under the prefix
    real_root = os.path.realpath(r.path)
    return os.path.commonpath([real_root, os.path.realpath(loc.path)]) == real_root


def discover(srcs: list[str], root: str | None = None) -> list[Source]:
    """Where each SRC's rows are and what root their paths are relative to (see the module doc)."""
    out: list[Source] = []
    for src in srcs:
        loc = storage.parse_uri(src)
        if loc.uri.lower().endswith(".jsonl"):
            if not storage.exists(loc.uri):
                raise ScitsError(f"{loc.uri} does not exist: check the path")
            folder = loc.uri.rsplit("/", 1)[0]
            in_task_folder = posixpath.basename(loc.path).startswith(posixpath.basename(folder.rstrip("/")) + "-")
            out.append(Source(root=root or (folder.rsplit("/", 1)[0] if in_task_folder else folder), jsonl=[loc.uri]))
            continue
        base = storage.parse_uri(root).uri if root else loc.uri.rstrip("/")
        try:
            found = jsonl_files(loc.uri)
        except FileNotFoundError:
            raise ScitsError(f"{loc.uri} does not exist: give a SciTS release folder or its .jsonl files") from None
        source = Source(root=base)
        for uri in found:
            rel = _rel(uri, loc.uri)
            if any(part.startswith(".") for part in rel.split("/")):
                source.notes.append(f"skipped hidden file {uri}")
            elif not _inside(uri, loc.uri):
                source.notes.append(f"skipped {uri}: a symbolic link to a file outside {loc.uri}")
            else:
                source.jsonl.append(uri)
        in_folders = [u for u in source.jsonl if "/" in _rel(u, loc.uri)]
        meta = [u for u in source.jsonl if _rel(u, loc.uri) == META_JSONL]
        if in_folders and meta:
            source.jsonl = [u for u in source.jsonl if u not in meta]
            source.notes.append(f"{meta[0]} not read: the task folders hold their own JSONL files (the same rows)")
        if not source.jsonl:
            raise ScitsError(f"no .jsonl files under {loc.uri}: give a SciTS release folder (meta_data.jsonl at "
                             "the top, or one folder per task with its JSONL files) or the .jsonl files")
        out.append(source)
    return out


def _row_task(row: dict | None, jsonl: str, root: str) -> str:
    rel = _rel(jsonl, root) if storage.parse_uri(jsonl).uri.startswith(storage.parse_uri(root).uri.rstrip("/") + "/") else ""
    if "/" in rel:  # the JSONL sits in its task's folder
        return task_slug(rel.split("/", 1)[0])
    if row is None:
        return UNASSIGNED
    path = signal_path(row)
    if isinstance(path, str) and "/" in path.strip("/"):
        first = path.strip("/").split("/", 1)[0]
        if first not in (".", ".."):
            return task_slug(first)
    parts = [str(row[k]) for k in ("dataset_name", "scene", "task") if row.get(k)]
    return task_slug("-".join(parts)) if parts else task_slug(posixpath.splitext(posixpath.basename(jsonl))[0])


def _lookup(table: dict[str, Any], task: str) -> Any:
    """A per-task table's entry: the task's own name, else the one key that is a '-' token of it."""
    if task in table:
        return table[task]
    hits = [k for k in table if k in task.split("-")]
    return table[hits[0]] if len(hits) == 1 else None


def _wanted(task: str, only: list[str]) -> bool:
    return not only or task in only or any(o in task.split("-") for o in only)


@dataclass
class ReleaseResult:
    tasks: dict[str, ScitsResult] = field(default_factory=dict)
    rows: Counter = field(default_factory=Counter)  # task -> rows seen (lines, good or not)
    notes: list[str] = field(default_factory=list)


def read_release(srcs: list[str], *, root: str | None = None, rate_hz: float | None = None,
                 rates: dict[str, float] | None = None, holdout: float = 0.0, only: list[str] | None = None,
                 reader=None, max_jsonl_bytes: int = DEFAULT_MAX_JSONL_BYTES,
                 max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> ReleaseResult:
    """Every row of the SRCs, grouped by task, read into records (see the module doc)."""
    from step_dist.signals.readers.base import ReaderOptions

    rates, only = rates or {}, only or []
    out = ReleaseResult()
    seen: dict[str, set[str]] = defaultdict(set)
    for source in discover(srcs, root):
        out.notes += source.notes
        for jsonl in source.jsonl:
            groups: dict[str, list] = defaultdict(list)
            for line, row, problem in _jsonl_rows(jsonl, max_jsonl_bytes, max_line_bytes):
                groups[_row_task(row, jsonl, source.root)].append((line, row, problem))
            for task, rows in groups.items():
                if not _wanted(task, only) and task != UNASSIGNED:
                    continue
                out.rows[task] += len(rows)
                opts = RowOptions(root_uri=source.root, rate_hz=rate_hz, table_rate_hz=_lookup(rates, task),
                                  source="scits", keep_unlabelled=True, id_prefix=f"{task}/",
                                  reader=reader or ReaderOptions())
                result = read_jsonl(jsonl, opts, seen[task], rows=rows)
                out.tasks.setdefault(task, ScitsResult()).extend(result)
    if holdout:
        for result in out.tasks.values():
            for r in result.records:
                r.split = holdout_split(r.id, holdout)
    return out


def task_summary(task: str, result: ScitsResult, rows: int) -> dict[str, Any]:
    labelled = [r for r in result.records if r.label is not None]
    rates = sorted({r.sampling_rate_hz for r in result.records})
    return {
        "task": task,
        "rows": rows,
        "records": len(result.records),
        "labelled": len(labelled),
        "kinds": dict(Counter(r.meta.get("kind", "") for r in result.records)),
        "classes": dict(sorted(Counter(r.label for r in labelled).items())),
        "splits": dict(sorted(Counter(r.split or "none" for r in result.records).items())),
        "rate_hz": [rates[0], rates[-1]] if rates else [],
        "set_aside": dict(result.kinds().most_common()),
        "set_aside_rows": result.set_aside,
    }


def ingest_release(srcs: list[str], out_uri: str, **kwargs: Any) -> dict[str, Any]:
    """Read a SciTS release and write ``OUT/tasks/<task>/``, ``OUT/corpus/`` and ``OUT/scits_summary.json``;
    returns that summary."""
    release = read_release(srcs, **kwargs)
    out = storage.parse_uri(out_uri)
    summary: dict[str, Any] = {"out": out.uri, "tasks": [], "notes": release.notes, "task_uris": {}}
    corpus, corpus_aside = [], []
    for task in sorted(release.tasks):
        result = release.tasks[task]
        info = task_summary(task, result, release.rows[task])
        if info["labelled"] and task != UNASSIGNED:
            uri = out.join(f"tasks/{task}").uri
            write_shard_set(uri, result.records, result.set_aside, extra={"scits_task": task})
            summary["task_uris"][task] = info["uri"] = uri
        else:
            corpus_aside += result.set_aside  # no task set to list them in: the corpus's manifest does
        corpus += [r for r in result.records if r.split not in ("test", "val")]
        summary["tasks"].append(info)
    corpus_uri = out.join("corpus").uri
    if corpus:
        write_shard_set(corpus_uri, corpus, corpus_aside, extra={"scits_corpus": True})
        summary["corpus"] = {"uri": corpus_uri, "records": len(corpus)}
    else:
        summary["corpus"] = {"uri": None, "records": 0}
    summary["set_aside"] = sum(len(t["set_aside_rows"]) for t in summary["tasks"])
    storage.write_bytes(out.join(SUMMARY).uri, json.dumps(summary, indent=1, default=str).encode())
    return summary


def load_rates(uri: str) -> dict[str, float]:
    """A per-task rate table: YAML or JSON mapping task name (or a '-' token of it, e.g. STEAD) -> Hz, at the
    top level or under ``rates:``."""
    from step_dist.config import ConfigError, load_yaml

    data = load_yaml(uri)
    table = data.get("rates", data) if isinstance(data.get("rates"), dict) else data
    out = {}
    for k, v in table.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"rate table {uri}: {k}: {v!r} is not a number of Hz") from None
        if not out[str(k)] > 0:
            raise ConfigError(f"rate table {uri}: {k}: {v!r} must be > 0 Hz")
    return out


def with_reader(**limits: Any):
    """ReaderOptions for the release's signal files (ingest's limits)."""
    from step_dist.signals.readers.base import ReaderOptions

    return replace(ReaderOptions(), **limits)
