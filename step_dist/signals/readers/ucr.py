"""UCR/UEA ``.ts`` files through aeon's loader: labels from the file, variable lengths supported.

The format has no sampling rate; ``--rate`` sets one, otherwise 1.0 Hz is written and ``meta.rate_known`` is
false (``rate_source`` "none") so nothing downstream mistakes it for a measured rate. The split is inferred
from a ``_TRAIN`` / ``_TEST`` file name unless --split is given.

Sizes: aeon parses the whole file itself, so what bounds its memory is the file-size limit checked first; each
series' shape is then checked against the record limits before it is handed on.
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from step_dist.signals.readers.base import Piece, ReaderError, ReaderOptions, check_file_size, rejected, size_problem


def split_from_name(path: str) -> str | None:
    stem = os.path.splitext(os.path.basename(path))[0].upper()
    if stem.endswith("_TRAIN"):
        return "train"
    if stem.endswith("_TEST"):
        return "test"
    return None


def read_ts(path: str, opts: ReaderOptions, uri: str = "") -> Iterator[Piece]:
    try:
        from aeon.datasets import load_from_ts_file
    except ImportError as e:  # pragma: no cover - aeon is in the [demo] extra
        raise ReaderError(f"{uri or path}: reading .ts files needs aeon; pip install 'step-dist[demo]'") from e
    check_file_size(opts, os.path.getsize(path), uri or path)
    try:
        X, y, info = load_from_ts_file(path, return_meta_data=True)
    except (OSError, ValueError, IndexError, TypeError, KeyError) as e:
        raise ReaderError(f"{uri or path}: not a valid UCR/UEA .ts file ({e}); check its @ header lines") from e
    rate = opts.rate_hz if opts.rate_hz is not None else 1.0
    meta = {"problem": info.get("problemname"), "rate_known": opts.rate_hz is not None}
    has_labels = bool(info.get("classlabel")) or bool(info.get("targetlabel"))
    split = opts.split or split_from_name(path)
    for i in range(len(X)):
        values = np.asarray(X[i])
        too_big = size_problem(opts, *values.shape, f"series {i}") if values.ndim == 2 else None
        if too_big:
            yield rejected(too_big, series=i)
            continue
        label = str(y[i]) if has_labels and y is not None and len(y) else None
        # "none": the .ts format has no rate and 1.0 is a placeholder (meta.rate_known false), not a measurement
        source = "--rate" if opts.rate_hz is not None else "none"
        yield Piece(values, float(rate), label=label, split=split, meta=dict(meta), rate_source=source)
