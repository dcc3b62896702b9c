"""Input preparation: turn a record view into what a teacher was trained on. Pure numpy, deterministic.

Order matters and is fixed: channels first (fewer samples to resample), then an anti-aliasing polyphase
resampler (scipy.signal.resample_poly with a rational approximation of the rate ratio), then the length
rules (minimum, context crop/chunk), then the scaling the teacher expects.
"""
from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
from scipy.signal import resample_poly

from step_dist.teachers.protocol import TeacherInputError

if TYPE_CHECKING:
    from step_dist.teachers.protocol import Teacher

MAX_DENOMINATOR = 1000  # rate ratios are approximated within 1e-3 relative; keeps polyphase filters small


def rational_ratio(src_hz: float, dst_hz: float) -> tuple[int, int]:
    """(up, down) with up/down ~= dst/src."""
    frac = Fraction(dst_hz / src_hz).limit_denominator(MAX_DENOMINATOR)
    if frac.numerator == 0:  # ratio below 1/MAX_DENOMINATOR: keep the exact-ish ratio with a big down factor
        frac = Fraction(1, int(round(src_hz / dst_hz)))
    return frac.numerator, frac.denominator


def resample(values: np.ndarray, src_hz: float, dst_hz: float) -> np.ndarray:
    """[C, L] at src_hz -> [C, L'] at dst_hz with a Kaiser-windowed anti-aliasing FIR (float32 out)."""
    if src_hz <= 0 or not np.isfinite(src_hz):
        raise TeacherInputError(f"sampling rate must be a positive number, got {src_hz}")
    if abs(src_hz - dst_hz) <= 1e-9 * dst_hz:
        return np.ascontiguousarray(values, dtype=np.float32)
    up, down = rational_ratio(src_hz, dst_hz)
    out = resample_poly(values.astype(np.float64, copy=False), up, down, axis=-1)
    return np.ascontiguousarray(out, dtype=np.float32)


def select_channels(values: np.ndarray, mode: str, montage: list[str], channel_names: list[str] | None,
                    where: str) -> np.ndarray:
    if mode == "per_channel":
        return values
    if mode == "first":
        return values[:1]
    if mode == "mean":
        return values.mean(axis=0, keepdims=True)
    # montage: the teacher's channel order, looked up by name (case-insensitive, as EEG labels vary in case)
    if not channel_names:
        raise TeacherInputError(f"{where}: channel_mode 'montage' needs the record's channel names, none given")
    index = {n.strip().lower(): i for i, n in enumerate(channel_names)}
    missing = [m for m in montage if m.strip().lower() not in index]
    if missing:
        raise TeacherInputError(
            f"{where}: montage channels {missing} not in the record's channels {list(channel_names)}; "
            "fix the montage in the teacher config or exclude this source from the teacher"
        )
    return values[[index[m.strip().lower()] for m in montage]]


def standardize(x: np.ndarray) -> np.ndarray:
    """Per-row zero mean, unit variance (what wav2vec2-style feature extractors do with do_normalize), whatever
    the unit: computed in float64 with no absolute epsilon. The extractors' 1e-7 on the variance is sized for
    audio in [-1, 1]; on strain (~1e-21), ground velocity in m/s or EEG in volts (variance ~1e-10) it would
    flatten the signal towards zero. A flat row stays all zeros."""
    x64 = np.asarray(x, dtype=np.float64)
    centred = x64 - x64.mean(axis=-1, keepdims=True)
    std = centred.std(axis=-1, keepdims=True)
    return np.ascontiguousarray(np.divide(centred, std, out=np.zeros_like(centred), where=std > 0), dtype=np.float32)


def prepare_for(t: "Teacher", values: np.ndarray, rate_hz: float, record_id: str,
                channel_names: list[str] | None, allow_short: bool) -> np.ndarray:
    where = f"teacher {t.name}, record {record_id}"
    x = np.asarray(values, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0:
        raise TeacherInputError(f"{where}: values must be [channels, length], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise TeacherInputError(f"{where}: values hold NaN/inf; clean the record (ingest applies a NaN policy)")
    x = select_channels(x, t.cfg.channel_mode, t.cfg.montage, channel_names, where)
    if t.native_rate_hz:
        try:
            x = resample(x, float(rate_hz), float(t.native_rate_hz))
        except TeacherInputError as e:
            raise TeacherInputError(f"{where}: {e}") from None
    n = x.shape[1]
    if n < t.min_length:
        if allow_short:
            return np.zeros((x.shape[0], 0), dtype=np.float32)
        rate = f" after resampling to {t.native_rate_hz:g} Hz" if t.native_rate_hz else ""
        raise TeacherInputError(
            f"{where}: {n} samples{rate} is shorter than the teacher's minimum {t.min_length}; "
            "use a longer view or let the pipeline mark the record as having no target"
        )
    ctx = t.effective_context
    if ctx and n > ctx:
        if t.cfg.context_policy == "crop":
            x = x[:, :ctx]  # the head of the view, like Time-MoE's 2,048-step cut
        elif t.cfg.context_policy == "error":
            raise TeacherInputError(
                f"{where}: the view has {n} samples at the teacher's rate but its context is {ctx}; "
                f"shorten views (views.max_length <= {max_view_length(t, rate_hz)} at {rate_hz:g} Hz) "
                "or set context_policy: crop / chunk"
            )
    if t.scaling == "standardize":
        x = standardize(x)
    return np.ascontiguousarray(x, dtype=np.float32)


def max_view_length(t: "Teacher", rate_hz: float) -> int:
    """The longest view (samples at ``rate_hz``) whose prepared form fits the teacher's context."""
    ctx = t.effective_context
    if not ctx:
        return 2**62
    if not t.native_rate_hz:
        return ctx
    return int(np.floor(ctx * float(rate_hz) / float(t.native_rate_hz)))
