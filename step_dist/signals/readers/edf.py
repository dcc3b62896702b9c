"""EDF / EDF+ / BDF through pyedflib.

Signals in one EDF file may have different sampling rates (EEG at 256 Hz next to SpO2 at 1 Hz). Rather than
resample (which alters values), the reader writes one record per distinct rate, channels of that rate together,
in order of first appearance; ``meta.rate_group`` says which group a record is and ``meta.rate_groups`` lists all.

The file's length is checked against what its header declares before pyedflib opens it: a truncated file is
refused with both counts (pyedflib would only say "not compliant"), and bytes beyond the declared data records
(a writer that never updated the record count) are flagged, since pyedflib ignores them. Each rate group's
declared size is checked before its samples are read.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from step_dist.signals.readers.base import Piece, ReaderError, ReaderOptions, rejected, size_problem


def _layout(path: str) -> tuple[int, int, int] | None:
    """(header bytes, declared data records, bytes per data record) from the EDF/BDF header; None when the
    header cannot be parsed (pyedflib then gives its own reason)."""
    with open(path, "rb") as f:
        fixed = f.read(256)
        try:
            ns = int(fixed[252:256].decode("ascii"))
            n_records = int(fixed[236:244].decode("ascii"))
            spr_bytes = f.read(ns * 256)[ns * 216: ns * 224]  # the 8-character samples-per-record fields
            per_record = sum(int(spr_bytes[i * 8:(i + 1) * 8].decode("ascii")) for i in range(ns))
        except (ValueError, UnicodeDecodeError):
            return None
    width = 3 if fixed[:1] == b"\xff" else 2  # BDF: 24-bit samples
    return 256 * (ns + 1), n_records, per_record * width


def read_edf(path: str, opts: ReaderOptions, uri: str = "") -> Iterator[Piece]:
    import pyedflib

    where = uri or path
    size = os.path.getsize(path)
    layout = _layout(path)
    extra = 0
    if layout and layout[1] >= 0 and layout[2] > 0:
        header, n_records, record_bytes = layout
        extra = size - header - n_records * record_bytes
        if extra < 0:
            held = max(0, size - header) // record_bytes
            raise ReaderError(
                f"{where}: truncated: the header declares {n_records} data records of {record_bytes} bytes, the file "
                f"holds {held} whole record(s) ({size} bytes, {header + n_records * record_bytes} expected); "
                "re-export or re-download it"
            )
    f = pyedflib.EdfReader(path)
    try:
        n = f.signals_in_file
        rates = [float(f.getSampleFrequency(i)) for i in range(n)]
        declared = f.getNSamples()
        groups: dict[float, list[int]] = {}
        for i, r in enumerate(rates):
            groups.setdefault(r, []).append(i)
        all_rates = list(groups)
        for g, (rate, chans) in enumerate(groups.items()):
            names = [f.getLabel(i).strip() or f"ch{i}" for i in chans]
            meta = {
                "rate_group": g,
                "rate_groups": all_rates,
                "units": [f.getPhysicalDimension(i).strip() for i in chans],
                "start": f.getStartdatetime().isoformat(),
            }
            reason = size_problem(opts, len(chans), max(int(declared[i]) for i in chans), f"rate group {rate:g} Hz")
            if reason:  # before readSignal allocates it
                yield rejected(reason, channels=names, **meta)
                continue
            signals = [f.readSignal(i) for i in chans]
            lengths = {len(s) for s in signals}
            if len(lengths) != 1:
                yield Piece(None, rate, names, meta=meta, error=f"mismatched channel lengths {sorted(lengths)} at {rate} Hz")
                continue
            piece = Piece(np.stack(signals), rate, names, meta=meta)
            if extra > 0:
                piece.flag("unread_bytes", {"bytes": int(extra), "file_bytes": int(size)})
            yield piece
    finally:
        f.close()
