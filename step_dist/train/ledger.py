"""Exactly-once accounting: which (record id, view id) each rank trained on, per epoch, checked at the end.

Worker side, every rank keeps the views of the micro-batches it trained on since the last checkpoint and
writes them next to the checkpoint, as one segment per rank named by the checkpoint's step:

    outputs/ledger/rank_0000/upto_00000006.jsonl     lines: [epoch, record id, view id]

A segment is written just before its checkpoint is reported. If the run dies before that checkpoint is
registered, the resumed run trains the same micro-batches again and rewrites segments past the resume step
(stale ones are deleted on resume), so the ledger always describes the registered history, nothing twice.

Driver side, ``account`` compares the ledger with the views the data holds (the same validated pipeline,
without teachers) and reports, per epoch, views trained, duplicated and never seen.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

LEDGER_DIR = "ledger"
_SEGMENT = re.compile(r"rank_(\d+)/upto_(\d+)\.jsonl$")


class Ledger:
    """One rank's record of the views it trained on (a no-op when disabled)."""

    def __init__(self, outputs_uri: str, rank: int, enabled: bool = True):
        self.root = outputs_uri.rstrip("/") + "/" + LEDGER_DIR
        self.rank = rank
        self.enabled = enabled
        self._pending: list[tuple[int, str, str]] = []

    def add(self, epoch: int, rows: Iterable[dict[str, Any]]) -> None:
        if self.enabled:
            self._pending += [(int(epoch), str(r["id"]), str(r["view_id"])) for r in rows]

    def flush(self, step: int) -> None:
        """Write what was trained since the last flush as the segment of the checkpoint at ``step``."""
        if not self.enabled:
            return
        from step_dist import storage

        body = "".join(json.dumps(list(e)) + "\n" for e in self._pending).encode()
        storage.write_bytes(f"{self.root}/rank_{self.rank:04d}/upto_{step:08d}.jsonl", body)
        self._pending = []

    def forget_after(self, step: int) -> int:
        """On resume (rank 0, before any rank trains): delete every rank's segments past the resumed step, left
        by checkpoints that were written but never registered. Returns how many were removed."""
        if not self.enabled:
            return 0
        from step_dist import storage

        stale = [u for u, (_, upto) in _segments(self.root).items() if upto > step]
        for uri in stale:
            storage.delete(uri)
        return len(stale)


def _segments(root: str) -> dict[str, tuple[int, int]]:
    from step_dist import storage

    try:
        files = storage.list_files(root, suffixes=(".jsonl",))
    except FileNotFoundError:
        return {}
    out = {}
    for f in files:
        m = _SEGMENT.search(f)
        if m:
            out[f] = (int(m.group(1)), int(m.group(2)))
    return out


def read_ledger(outputs_uri: str, upto_step: int | None = None) -> list[tuple[int, str, str]]:
    """Every (epoch, id, view id) trained, from segments up to ``upto_step`` (the last registered checkpoint)."""
    from step_dist import storage

    rows: list[tuple[int, str, str]] = []
    for uri, (_, upto) in sorted(_segments(outputs_uri.rstrip("/") + "/" + LEDGER_DIR).items()):
        if upto_step is not None and upto > upto_step:
            continue
        for line in storage.read_bytes(uri).decode().splitlines():
            if line.strip():
                e, rid, vid = json.loads(line)
                rows.append((int(e), str(rid), str(vid)))
    return rows


@dataclass
class EpochAccount:
    epoch: int
    complete: bool  # a later epoch started, or every expected view was trained
    expected: int  # views the validated data holds
    trained: int  # micro-batch rows trained (all ranks)
    distinct: int
    duplicated: int  # rows trained more than once in this epoch (should be 0)
    unseen: int  # expected views never trained in this epoch (complete epochs: at most the tail allowance)
    unexpected: int  # trained views that are not in the data (should be 0)
    tail_allowance: int  # views an epoch may drop so every rank cuts whole micro-batches and runs the same steps
    unseen_examples: list[str] = field(default_factory=list)
    duplicated_examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        lost_ok = self.unseen <= self.tail_allowance if self.complete else True
        return self.duplicated == 0 and self.unexpected == 0 and lost_ok


@dataclass
class Accounting:
    epochs: list[EpochAccount]

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.epochs)

    @property
    def duplicated(self) -> int:
        return sum(e.duplicated for e in self.epochs)

    @property
    def lost(self) -> int:
        """Views unseen in complete epochs (including the tail allowance)."""
        return sum(e.unseen for e in self.epochs if e.complete)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "duplicated": self.duplicated, "lost": self.lost,
                "epochs": [{**asdict(e), "ok": e.ok} for e in self.epochs]}


def account(trained: list[tuple[int, str, str]], expected: Iterable[tuple[str, str]], tail_allowance: int) -> Accounting:
    """Compare the ledger with the views the data holds, epoch by epoch."""
    want = set(expected)
    by_epoch: dict[int, Counter] = {}
    for e, rid, vid in trained:
        by_epoch.setdefault(e, Counter())[(rid, vid)] += 1
    last = max(by_epoch, default=-1)
    out = []
    for e in sorted(by_epoch):
        c = by_epoch[e]
        seen = set(c)
        dup = {k: n for k, n in c.items() if n > 1}
        unseen = want - seen
        complete = e < last or not unseen
        out.append(EpochAccount(
            epoch=e, complete=complete, expected=len(want), trained=sum(c.values()), distinct=len(seen),
            duplicated=sum(n - 1 for n in dup.values()), unseen=len(unseen) if complete else 0,
            unexpected=len(seen - want), tail_allowance=tail_allowance,
            unseen_examples=[f"{r} ({v})" for r, v in sorted(unseen)[:5]] if complete else [],
            duplicated_examples=[f"{r} ({v}) x{n}" for (r, v), n in sorted(dup.items())[:5]],
        ))
    return Accounting(out)


def expected_views(data_cfg) -> list[tuple[str, str]]:
    """(id, view id) of every view the validated data yields: the training pipeline up to the views, run
    again without teachers and without writing to the quarantine (it was written by the run)."""
    from step_dist.data.pipeline import build_view_dataset

    ds = build_view_dataset(data_cfg, None).select_columns(["id", "view_id"])
    return [(str(r["id"]), str(r["view_id"])) for r in ds.iter_rows()]
