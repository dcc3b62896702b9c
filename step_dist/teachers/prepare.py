"""Input preparation: turn a record view into what a teacher was trained on. Pure numpy, deterministic.

Order matters and is fixed: channels first (fewer samples to resample), then the length rules (minimum,
context crop/chunk, the cap on prepared samples), worked out from the lengths alone before anything is
resampled, then an anti-aliasing polyphase resampler (scipy.signal.resample_poly with a rational
approximation of the rate ratio) run on only the source samples the kept output depends on, then the scaling
the teacher expects. Resampling first and cropping after gives the same values but can cost gigabytes: a
24-sample hourly record is 1.4 billion samples at 16 kHz, of which CREPE keeps 480,000.
"""
from __future__ import annotations

import functools
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
from scipy.signal import resample_poly
from scipy.special import i0

from step_dist.teachers.protocol import TeacherInputError

if TYPE_CHECKING:
    from step_dist.teachers.protocol import Teacher

MAX_DENOMINATOR = 1000  # rate ratios are approximated within 1e-3 relative; keeps polyphase filters small
# resample_poly designs a filter of 20 * max(up, down) + 1 taps whatever the record's length: above this factor
# (1.3 M taps, ~10 MB) the kept outputs are computed tap by tap instead (_resample_direct)
POLY_MAX_FACTOR = 2**16
# the most samples (channels x length) one prepared record may hold, checked before resampling: 256 MiB of
# float32, the readers' default record size; a teacher's options.max_prepared_samples changes it
MAX_PREPARED_SAMPLES = 2**26
KAISER_BETA = 5.0  # resample_poly's default window, ('kaiser', 5.0)


def rational_ratio(src_hz: float, dst_hz: float) -> tuple[int, int]:
    """(up, down) with up/down ~= dst/src."""
    frac = Fraction(dst_hz / src_hz).limit_denominator(MAX_DENOMINATOR)
    if frac.numerator == 0:  # ratio below 1/MAX_DENOMINATOR: keep the exact-ish ratio with a big down factor
        frac = Fraction(1, int(round(src_hz / dst_hz)))
    return frac.numerator, frac.denominator


def resample_factors(src_hz: float, dst_hz: float) -> tuple[int, int]:
    """(up, down) for resampling src_hz to dst_hz; (1, 1) when the rates already agree."""
    if src_hz <= 0 or not np.isfinite(src_hz):
        raise TeacherInputError(f"sampling rate must be a positive number, got {src_hz}")
    if abs(src_hz - dst_hz) <= 1e-9 * dst_hz:
        return 1, 1
    return rational_ratio(src_hz, dst_hz)


def resampled_length(n: int, up: int, down: int) -> int:
    """How many samples resample_poly gives for ``n`` (what the length rules are checked against)."""
    return -(-n * up // down)


def resample(values: np.ndarray, src_hz: float, dst_hz: float, keep: int | None = None) -> np.ndarray:
    """[C, L] at src_hz -> [C, L'] at dst_hz with a Kaiser-windowed anti-aliasing FIR (float32 out); only the
    first ``keep`` output samples when given, computed from the source samples they depend on alone."""
    up, down = resample_factors(src_hz, dst_hz)
    n_in = values.shape[-1]
    n_out = resampled_length(n_in, up, down)
    keep = n_out if keep is None else max(0, min(keep, n_out))
    if up == down == 1 or keep == 0:
        return np.ascontiguousarray(values[..., :keep], dtype=np.float32)
    if max(up, down) > POLY_MAX_FACTOR:
        return np.ascontiguousarray(_resample_direct(values, up, down, keep), dtype=np.float32)
    # output m weighs source samples j with |m * down - j * up| <= half: the last kept output needs up to here
    half = 10 * max(up, down)
    n_src = min(n_in, ((keep - 1) * down + half) // up + 1)
    out = resample_poly(values[..., :n_src].astype(np.float64, copy=False), up, down, axis=-1)[..., :keep]
    return np.ascontiguousarray(out, dtype=np.float32)


def _kernel(t: np.ndarray, rate: int) -> np.ndarray:
    """resample_poly's filter before normalisation, at integer offsets ``t`` from its centre: firwin's windowed
    sinc with cutoff 1/rate and a Kaiser(5) window over 20 * rate + 1 taps."""
    half = 10 * rate
    ratio = np.clip(t / half, -1.0, 1.0)
    return np.sinc(t / rate) / rate * i0(KAISER_BETA * np.sqrt(1.0 - ratio**2)) / i0(KAISER_BETA)


@functools.lru_cache(maxsize=8)
def _kernel_sum(rate: int) -> float:
    """Sum of every tap of _kernel (firwin scales its filter by it). It converges fast with the factor: the
    sums at 2**16 and 2**22 differ by 1.4e-13, so factors above POLY_MAX_FACTOR use the sum at it."""
    rate = min(rate, POLY_MAX_FACTOR)
    starts = range(-10 * rate, 10 * rate + 1, 2**18)
    return float(sum(np.sum(_kernel(np.arange(a, min(a + 2**18, 10 * rate + 1), dtype=np.float64), rate)) for a in starts))


def _resample_direct(values: np.ndarray, up: int, down: int, keep: int, block: int = 2**18) -> np.ndarray:
    """The first ``keep`` outputs of resample_poly(values, up, down), each the sum over the ~20 * max / up source
    samples in its filter's reach, without building the filter (1.15 billion taps for hourly data at 16 kHz).
    Memory stays at ``block`` products per channel at a time."""
    shape = values.shape[:-1]
    x = np.asarray(values, dtype=np.float64).reshape(-1, values.shape[-1])
    c, n_in = x.shape
    rate = max(up, down)
    half = 10 * rate
    gain = up / _kernel_sum(rate)
    width = 2 * half // up + 1  # source samples one output can reach
    cols = min(width, block)
    rows = max(1, block // cols)
    out = np.zeros((c, keep), dtype=np.float64)
    for m0 in range(0, keep, rows):
        m = np.arange(m0, min(m0 + rows, keep), dtype=np.int64)
        first = -((half - m * down) // up)  # the first source sample in reach: ceil((m * down - half) / up)
        for k0 in range(0, width, cols):
            j = first[:, None] + np.arange(k0, min(k0 + cols, width), dtype=np.int64)[None, :]
            t = m[:, None] * down - j * up
            inside = (j >= 0) & (j < n_in) & (np.abs(t) <= half)
            taps = np.where(inside, _kernel(t.astype(np.float64), rate), 0.0) * gain
            out[:, m0 : m0 + m.size] += np.einsum("cmk,mk->cm", x[:, np.clip(j, 0, n_in - 1)], taps)
    return out.reshape(*shape, keep)


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
    up = down = 1
    if t.native_rate_hz:
        try:
            up, down = resample_factors(float(rate_hz), float(t.native_rate_hz))
        except TeacherInputError as e:
            raise TeacherInputError(f"{where}: {e}") from None
    n = resampled_length(x.shape[1], up, down)  # the length at the teacher's rate, before resampling anything
    if not t.cfg.describes(float(rate_hz)):
        if allow_short:  # the pipeline: no target for this record, and no teacher time spent on it
            return np.zeros((x.shape[0], 0), dtype=np.float32)
        raise TeacherInputError(f"{where}: {float(rate_hz):g} Hz is outside the rates this teacher describes "
                                f"(min_rate_hz={t.cfg.min_rate_hz:g}, max_rate_hz={t.cfg.max_rate_hz:g})")
    if n < t.min_length:
        if allow_short:
            return np.zeros((x.shape[0], 0), dtype=np.float32)
        rate = f" after resampling to {t.native_rate_hz:g} Hz" if t.native_rate_hz else ""
        raise TeacherInputError(
            f"{where}: {n} samples{rate} is shorter than the teacher's minimum {t.min_length}; "
            "use a longer view or let the pipeline mark the record as having no target"
        )
    ctx = t.effective_context
    keep = n
    if ctx and n > ctx:
        if t.cfg.context_policy == "crop":
            keep = ctx  # the head of the view, like Time-MoE's 2,048-step cut
        elif t.cfg.context_policy == "error":
            raise TeacherInputError(
                f"{where}: the view has {n} samples at the teacher's rate but its context is {ctx}; "
                f"shorten views (views.max_length <= {max_view_length(t, rate_hz)} at {rate_hz:g} Hz) "
                "or set context_policy: crop / chunk"
            )
    cap = int(t.cfg.options.get("max_prepared_samples", MAX_PREPARED_SAMPLES))
    if keep * x.shape[0] > cap:
        rate = f" at the teacher's {t.native_rate_hz:g} Hz" if t.native_rate_hz else ""
        raise TeacherInputError(
            f"{where}: the view would be {x.shape[0]} x {keep} samples{rate}, over the cap of {cap} prepared "
            f"samples per record; shorten views (views.max_length <= {max(1, cap // x.shape[0]) * down // up} at "
            f"{rate_hz:g} Hz), use context_policy: crop, or raise the teacher's options.max_prepared_samples"
        )
    x = resample(x, float(rate_hz), float(t.native_rate_hz), keep) if t.native_rate_hz else x[:, :keep]
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
