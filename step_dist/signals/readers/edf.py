"""EDF / EDF+ / BDF through pyedflib.

Signals in one EDF file may have different sampling rates (EEG at 256 Hz next to SpO2 at 1 Hz). Rather than
resample (which alters values), the reader writes one record per distinct rate, channels of that rate together,
in order of first appearance; ``meta.rate_group`` says which group a record is and ``meta.rate_groups`` lists all.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from step_dist.signals.readers.base import Piece, ReaderOptions


def read_edf(path: str, opts: ReaderOptions) -> Iterator[Piece]:
    import pyedflib

    f = pyedflib.EdfReader(path)
    try:
        n = f.signals_in_file
        rates = [float(f.getSampleFrequency(i)) for i in range(n)]
        groups: dict[float, list[int]] = {}
        for i, r in enumerate(rates):
            groups.setdefault(r, []).append(i)
        all_rates = list(groups)
        for g, (rate, chans) in enumerate(groups.items()):
            signals = [f.readSignal(i) for i in chans]
            lengths = {len(s) for s in signals}
            names = [f.getLabel(i).strip() or f"ch{i}" for i in chans]
            meta = {
                "rate_group": g,
                "rate_groups": all_rates,
                "units": [f.getPhysicalDimension(i).strip() for i in chans],
                "start": f.getStartdatetime().isoformat(),
            }
            if len(lengths) != 1:
                yield Piece(None, rate, names, meta=meta, error=f"mismatched channel lengths {sorted(lengths)} at {rate} Hz")
                continue
            yield Piece(np.stack(signals), rate, names, meta=meta)
    finally:
        f.close()
