"""collate: ragged numpy records -> one zero-padded batch with its masks."""
from __future__ import annotations

import numpy as np
import torch


def as_record_array(values, where: str) -> np.ndarray:
    """A float32 [C, L] array from a [C, L] or [L] array-like; clear errors for anything else."""
    arr = np.asarray(values)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(f"{where}: expected values shaped [channels, length] or [length], got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{where}: empty record (shape {arr.shape}); drop it before encoding")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{where}: values must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(
            f"{where}: non-finite value at channel {bad[0]}, sample {bad[1]}; "
            "interpolate or crop gaps (NaN/inf) before encoding"
        )
    return arr


def collate(arrays) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """list of float32 [C_i, L_i] arrays -> (values [B, Cmax, Lmax], lengths Long [B], channel_mask Bool [B, Cmax]).

    Padding is zeros; the encoder never reads it (masks), so its value does not matter.
    """
    arrays = [as_record_array(a, f"record {i}") for i, a in enumerate(arrays)]
    if not arrays:
        raise ValueError("collate got no records")
    c_max = max(a.shape[0] for a in arrays)
    l_max = max(a.shape[1] for a in arrays)
    values = torch.zeros(len(arrays), c_max, l_max, dtype=torch.float32)
    lengths = torch.empty(len(arrays), dtype=torch.long)
    channel_mask = torch.zeros(len(arrays), c_max, dtype=torch.bool)
    for i, a in enumerate(arrays):
        values[i, : a.shape[0], : a.shape[1]] = torch.from_numpy(np.ascontiguousarray(a))
        lengths[i] = a.shape[1]
        channel_mask[i, : a.shape[0]] = True
    return values, lengths, channel_mask
