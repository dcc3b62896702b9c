"""Tiny labelled tasks for the evaluate tests: two well-separated signal classes in a real shard set."""
from __future__ import annotations

import numpy as np

from step_dist.signals.record import SignalRecord
from step_dist.signals.shards import write_records


def two_class_records(n_per_class: int = 12, length: int = 256, rate: float = 100.0, seed: int = 0,
                      channels: int = 1, prefix: str = "r") -> list[SignalRecord]:
    """'slow' = a 2 Hz sine, 'fast' = a 20 Hz sine, random phase and amplitude, light noise; 2/3 train, 1/3 test."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / rate
    out = []
    for label, f in (("slow", 2.0), ("fast", 20.0)):
        for i in range(n_per_class):
            phase = rng.uniform(0, 2 * np.pi, size=(channels, 1))
            amp = rng.uniform(0.5, 2.0)
            x = amp * np.sin(2 * np.pi * f * t[None] + phase) + 0.05 * rng.standard_normal((channels, length))
            split = "test" if i % 3 == 0 else "train"
            out.append(SignalRecord(
                id=f"{prefix}-{label}-{i:03d}", source="toy", domain="synthetic", sampling_rate_hz=rate,
                values=x.astype(np.float32), channel_names=[f"c{k}" for k in range(channels)],
                label=label, split=split, uri="memory://toy", index=i,
            ))
    return out


def write_two_class_task(uri: str, **kw) -> str:
    write_records(uri, two_class_records(**kw))
    return uri
