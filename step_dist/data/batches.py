"""From Ray Data rows to padded training tensors, packing records of similar length together.

Rows arrive in chunks of ``bucket_rows``; each chunk is sorted by view length and cut into micro-batches, so
a batch pads a 30-sample light curve next to other short records, not next to a 16k-sample seismogram.
Rows left over at the end of a chunk wait for the next one; the epoch's remainder is dropped so every rank
cuts whole micro-batches (ranks also agree on the step count in the loop, see train/loop.py).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch


def _rows(chunk: dict[str, np.ndarray]) -> list[dict]:
    n = len(chunk["id"])
    return [{k: v[i] for k, v in chunk.items()} for i in range(n)]


def bucketed_micro_batches(chunks: Iterable[dict[str, np.ndarray]], batch_size: int) -> Iterator[list[dict]]:
    pending: list[dict] = []
    for chunk in chunks:
        pending += _rows(chunk)
        pending.sort(key=lambda r: (int(r["length"]), str(r["id"]), str(r["view_id"])))
        while len(pending) >= batch_size:
            # cut from the sorted list in fixed positions so the order is deterministic given the chunk order
            yield pending[:batch_size]
            pending = pending[batch_size:]


def collate(rows: list[dict], teacher_names: list[str], heads: dict | None = None):
    """Rows -> DistillBatch with zero padding and masks (values [B, C, L], targets [B, T, D]); with the
    HeadConfigs by name, also the fraction of each view each teacher saw (see HeadConfig.coverage)."""
    from step_dist.distill.module import DistillBatch

    b = len(rows)
    cs = [int(r["n_channels"]) for r in rows]
    ls = [int(r["length"]) for r in rows]
    values = torch.zeros(b, max(cs), max(ls))
    for i, r in enumerate(rows):
        values[i, : cs[i], : ls[i]] = torch.from_numpy(np.frombuffer(r["values"], dtype="<f4").reshape(cs[i], ls[i]).copy())
    lengths = torch.tensor(ls, dtype=torch.long)
    channel_mask = torch.arange(max(cs))[None, :] < torch.tensor(cs)[:, None]
    rates = torch.tensor([float(r["sampling_rate_hz"]) for r in rows], dtype=torch.float32)
    targets, counts = {}, {}
    for name in teacher_names:
        t = [int(r[f"t_{name}_tokens"]) for r in rows]
        d = max(int(r[f"t_{name}_dim"]) for r in rows)
        tgt = torch.zeros(b, max(max(t), 1), d)
        for i, r in enumerate(rows):
            if t[i]:
                tgt[i, : t[i]] = torch.from_numpy(np.frombuffer(r[f"t_{name}"], dtype="<f4").reshape(t[i], -1).copy())
        targets[name] = tgt
        counts[name] = torch.tensor(t, dtype=torch.long)
    coverage = {}
    for name, h in (heads or {}).items():
        if h.teacher_crops and h.teacher_context:
            coverage[name] = torch.tensor([h.coverage(ls[i], float(rates[i])) for i in range(b)], dtype=torch.float32)
    return DistillBatch(values, lengths, channel_mask, rates, targets, counts, coverage)
