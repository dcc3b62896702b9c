"""Small synthetic signal corpora for the tests, written as real shard sets through step-dist's own writer."""
from __future__ import annotations

import numpy as np

from step_dist.signals.record import SignalRecord


def synthetic_records(n: int, seed: int = 0, min_len: int = 200, max_len: int = 2500, label: bool = False,
                      split: str | None = None) -> list[SignalRecord]:
    """Sines at a few rates and scales (1e-3 to 1e3), 1-3 channels, noise: enough structure for teachers."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(min_len, max_len))
        channels = int(rng.integers(1, 4))
        rate = float(rng.choice([100.0, 250.0, 16000.0]))
        t = np.arange(length) / rate
        cls = i % 2
        freq = (3.0 if cls == 0 else 11.0) * (1 + rate / 1000.0)
        vals = np.stack(
            [np.sin(2 * np.pi * freq * (c + 1) * t) * 10 ** rng.uniform(-3, 3) + 0.1 * rng.standard_normal(length)
             for c in range(channels)]
        ).astype(np.float32)
        out.append(SignalRecord(id=f"syn-{seed}-{i}", source="synthetic", domain="test", sampling_rate_hz=rate,
                                values=vals, uri="generated://tests", index=i,
                                label=(f"class{cls}" if label else None), split=split))
    return out


def write_synthetic_shards(uri: str, n: int, seed: int = 0, **kw) -> str:
    from step_dist.signals.shards import write_records

    write_records(uri, synthetic_records(n, seed, **kw))
    return uri
