"""NPY / NPZ (numpy) and HDF5 (h5py): arrays that carry samples but usually not a sampling rate.

Shapes: [L] and [C, L] are one record, [N, C, L] is N records. The rate comes from the file when it has one
(an HDF5 attribute, a scalar ``sampling_rate_hz`` / ``fs`` entry in an NPZ, a JSON sidecar ``<file>.json``
with ``{"sampling_rate_hz": ..., "channel_names": [...]}``), else from --rate; with neither the file is
quarantined rather than given a made-up rate.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterator

import numpy as np

from step_dist.signals.readers.base import (
    RATE_ATTRS,
    Piece,
    ReaderError,
    ReaderOptions,
    need_rate,
    split_from_stack,
)

LABEL_KEYS = ("labels", "label", "y")


def _sidecar(path: str) -> dict[str, Any]:
    side = path + ".json"
    if not os.path.exists(side):
        return {}
    try:
        with open(side) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ReaderError(f"sidecar {side} is not valid JSON ({e}); fix or remove it") from e


def _rate_from(mapping: Any) -> float | None:
    for k in RATE_ATTRS:
        if k in mapping:
            v = np.asarray(mapping[k])
            if v.size == 1:
                return float(v.reshape(()))
    return None


def _pieces(arr: np.ndarray, rate: float, names: list[str] | None, labels: Any, uri: str, meta: dict) -> Iterator[Piece]:
    stacks = split_from_stack(arr, uri)
    if labels is not None and len(labels) != len(stacks):
        raise ReaderError(f"{uri}: {len(labels)} labels for {len(stacks)} records; make them the same length")
    for i, values in enumerate(stacks):
        ch = list(names) if names and len(names) == values.shape[0] else None
        label = None if labels is None else str(labels[i])
        yield Piece(values, rate, ch or [], label=label, meta=dict(meta))


def read_npy(path: str, opts: ReaderOptions, uri: str = "") -> Iterator[Piece]:
    side = _sidecar(path)
    arr = np.load(path, allow_pickle=False, mmap_mode="r")
    rate = need_rate(opts, _rate_from(side), uri or path, "an NPY file carries none; a <file>.json sidecar can")
    yield from _pieces(np.asarray(arr), rate, side.get("channel_names"), side.get("labels"), uri or path, {"dtype": str(arr.dtype)})


def read_npz(path: str, opts: ReaderOptions, uri: str = "") -> Iterator[Piece]:
    side = _sidecar(path)
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.files)
        rate = need_rate(opts, _rate_from(z) or _rate_from(side), uri or path, "no sampling_rate_hz / fs entry in the NPZ")
        labels = next((z[k] for k in LABEL_KEYS if k in keys), side.get("labels"))
        data_keys = [k for k in keys if k not in RATE_ATTRS and k not in LABEL_KEYS and k != "channel_names"]
        names = [str(s) for s in z["channel_names"]] if "channel_names" in keys else side.get("channel_names")
        if not data_keys:
            raise ReaderError(f"{uri or path}: the NPZ holds no signal arrays (only {keys})")
        for k in data_keys:
            arr = z[k]
            use_labels = labels if len(data_keys) == 1 else None
            for p in _pieces(arr, rate, names, use_labels, uri or path, {"array": k, "dtype": str(arr.dtype)}):
                yield p


def read_hdf5(path: str, opts: ReaderOptions, uri: str = "") -> Iterator[Piece]:
    import h5py

    where = uri or path
    with h5py.File(path, "r") as f:
        name = opts.h5_dataset
        if name is None:
            found: list[str] = []
            f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
            signal_sets = [n for n in found if f[n].ndim >= 1 and f[n].size > 1]
            if len(signal_sets) != 1:
                raise ReaderError(
                    f"{where}: {len(signal_sets)} candidate datasets {signal_sets[:10]}; pass --h5-dataset PATH"
                )
            name = signal_sets[0]
        if name not in f or not isinstance(f[name], h5py.Dataset):
            raise ReaderError(f"{where}: no dataset {name!r}; pass --h5-dataset with one of the file's datasets")
        ds = f[name]
        rate = need_rate(opts, _rate_from(ds.attrs) or _rate_from(f.attrs), where, f"no rate attribute on {name}")
        names = [x.decode() if isinstance(x, bytes) else str(x) for x in ds.attrs.get("channel_names", [])]
        arr = ds[()]
        yield from _pieces(np.asarray(arr), rate, names, None, where, {"dataset": name, "dtype": str(ds.dtype)})
