"""A downstream task: a labelled shard set split into train / test (and optionally val), held in memory.

Any shard set that ingest wrote with ``label`` and ``split`` columns is a task. Records that cannot take part
(no label, an unknown split, a missing requested channel, a test label never seen in training) are set aside
with their reason and counted in the report; nothing is dropped silently.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from step_dist import storage
from step_dist.evaluate.config import TaskConfig
from step_dist.signals.record import decode_values

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                  "dev": "val", "test": "test", "testing": "test", "eval": "test"}


class TaskError(ValueError):
    """A task cannot be evaluated as given; the message names the task and says what to do."""


@dataclass
class Split:
    ids: list[str] = field(default_factory=list)
    values: list[np.ndarray] = field(default_factory=list)  # float32 [C, L] each
    rates: list[float] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def y(self, classes: list[str]) -> np.ndarray:
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[lab] for lab in self.labels], dtype=np.int64)


@dataclass
class Task:
    name: str
    uri: str
    splits: dict[str, Split]
    classes: list[str]  # sorted labels seen in train; class i = classes[i]
    set_aside: Counter = field(default_factory=Counter)  # reason -> count of records left out
    repaired: Counter = field(default_factory=Counter)  # reason -> count of records kept after a repair
    config: TaskConfig | None = None

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def test(self) -> Split:
        return self.splits["test"]

    def summary(self) -> dict:
        return {
            "name": self.name,
            "uri": self.uri,
            "classes": self.classes,
            "records": {k: len(v) for k, v in self.splits.items()},
            "set_aside": dict(self.set_aside),
            "repaired": dict(self.repaired),
            "channels": sorted({int(v.shape[0]) for s in self.splits.values() for v in s.values}),
            "length_max": max((int(v.shape[1]) for s in self.splits.values() for v in s.values), default=0),
        }


def task_name(uri: str) -> str:
    return os.path.basename(storage.parse_uri(uri).path.rstrip("/")) or uri


def read_rows(uri: str):
    """Every row of a finished shard set (one with a manifest), in shard order; a task fits in memory."""
    from step_dist.signals.shards import iter_rows

    try:
        yield from iter_rows(uri)
    except FileNotFoundError as e:
        raise TaskError(f"task {uri}: {e}") from None


def _split_of(row: dict, cfg: TaskConfig) -> str | None:
    raw = (row.get("split") or "").strip().lower()
    if raw:
        return _SPLIT_ALIASES.get(raw)
    if cfg.holdout_fraction > 0:
        return holdout_split(row["id"], cfg.holdout_fraction)
    return None


def holdout_split(record_id: str, fraction: float) -> str:
    """'test' for about ``fraction`` of ids, else 'train': a hash of the id, the same in every run and tool."""
    h = int.from_bytes(hashlib.sha256(record_id.encode()).digest()[:8], "little") / 2**64
    return "test" if h < fraction else "train"


def prepare_values(values: np.ndarray, channel_names: list[str], cfg: TaskConfig) -> tuple[np.ndarray | None, str]:
    """Per-task preparation: channel selection by name, then a crop from the start. (None, reason) if impossible."""
    if cfg.channels:
        index = {n: i for i, n in enumerate(channel_names)}
        missing = [c for c in cfg.channels if c not in index]
        if missing:
            return None, f"missing channel(s) {missing} (record has {channel_names})"
        values = values[[index[c] for c in cfg.channels]]
    # a copy: values decoded from Parquet are read-only views of the shard's buffer
    return np.array(values[:, : cfg.max_length], dtype=np.float32, order="C"), ""


def load_task(spec: TaskConfig | str) -> Task:
    """Read a labelled shard set into memory, applying the task's preparation."""
    cfg = spec if isinstance(spec, TaskConfig) else TaskConfig(uri=spec)
    if not cfg.uri:
        raise TaskError("a task needs a uri (a labelled shard set)")
    name = cfg.name or task_name(cfg.uri)
    splits = {s: Split() for s in SPLITS}
    aside: Counter = Counter()
    repaired: Counter = Counter()
    for row in read_rows(cfg.uri):
        label = row.get("label")
        if label is None or str(label).strip() == "":
            aside["no label"] += 1
            continue
        split = _split_of(row, cfg)
        if split is None:
            aside[f"split {row.get('split')!r} is not train/val/test"] += 1
            continue
        try:
            values = decode_values(row)
        except ValueError as e:
            aside[f"undecodable values: {e}"] += 1
            continue
        values, reason = prepare_values(values, list(row["channel_names"]), cfg)
        if values is None:
            aside[reason] += 1
            continue
        if not np.all(np.isfinite(values)):
            values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)  # counted: models need finite input
            repaired["non-finite values replaced by 0"] += 1
        s = splits[split]
        s.ids.append(row["id"])
        s.values.append(values)
        s.rates.append(float(row["sampling_rate_hz"]))
        s.labels.append(str(label))
    for s in splits.values():  # a stable order whatever the shard layout
        order = sorted(range(len(s)), key=lambda i: s.ids[i])
        if cfg.max_records_per_split:
            order = order[: cfg.max_records_per_split]
        s.ids, s.values = [s.ids[i] for i in order], [s.values[i] for i in order]
        s.rates, s.labels = [s.rates[i] for i in order], [s.labels[i] for i in order]
    if not splits["train"] or not splits["test"]:
        raise TaskError(
            f"task {name} ({cfg.uri}) has {len(splits['train'])} train and {len(splits['test'])} test records: "
            "ingest with splits (the record's `split` column) or set holdout_fraction in the task config"
        )
    classes = sorted(set(splits["train"].labels))
    if len(classes) < 2:
        raise TaskError(f"task {name} ({cfg.uri}): the train split has only the label(s) {classes}; need at least 2")
    for key in ("val", "test"):  # a class the classifier never saw cannot be scored fairly
        s = splits[key]
        keep = [i for i, lab in enumerate(s.labels) if lab in classes]
        unseen = len(s) - len(keep)
        if unseen:
            aside[f"{key} label not in train"] += unseen
            s.ids, s.values = [s.ids[i] for i in keep], [s.values[i] for i in keep]
            s.rates, s.labels = [s.rates[i] for i in keep], [s.labels[i] for i in keep]
    if not splits["val"]:
        del splits["val"]
    return Task(name=name, uri=storage.parse_uri(cfg.uri).uri, splits=splits, classes=classes, set_aside=aside, repaired=repaired, config=cfg)
