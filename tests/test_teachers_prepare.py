"""Input preparation: resampling keeps frequencies, channel handling, lengths and scaling, determinism."""
from __future__ import annotations

import numpy as np
import pytest

from step_dist.teachers import TeacherConfig, TeacherInputError, build_teacher
from step_dist.teachers.prepare import rational_ratio, resample, select_channels, standardize


def _peak_hz(x: np.ndarray, rate: float) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spec)])


@pytest.mark.parametrize("src,dst", [(44100, 16000), (100, 16000), (22050, 16000), (8000, 16000), (250, 16000)])
def test_when_a_sine_is_resampled_to_the_teacher_rate_then_its_frequency_is_kept(src, dst):
    f = src / 7.3  # below both Nyquist limits
    f = min(f, dst / 2.5)
    t = np.arange(int(2 * src)) / src
    x = np.sin(2 * np.pi * f * t).astype(np.float32)[None]
    y = resample(x, src, dst)
    assert abs(y.shape[1] - x.shape[1] * dst / src) <= 1
    assert abs(_peak_hz(y[0], dst) - f) < 2 * dst / y.shape[1]


def test_when_downsampling_then_tones_above_the_new_nyquist_are_filtered_not_aliased():
    src, dst = 48000, 16000
    t = np.arange(src) / src
    x = (np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 11000 * t)).astype(np.float32)[None]
    y = resample(x, src, dst)[0]
    spec = np.abs(np.fft.rfft(y))
    freqs = np.fft.rfftfreq(y.size, 1 / dst)
    alias = spec[np.argmin(np.abs(freqs - 5000))]  # 11 kHz would fold to 5 kHz without anti-aliasing
    assert alias < 1e-2 * spec[np.argmin(np.abs(freqs - 1000))]


def test_when_the_rate_ratio_is_irrational_then_a_close_rational_ratio_is_used():
    up, down = rational_ratio(44100.0, 16000.0)
    assert (up, down) == (160, 441)
    up, down = rational_ratio(1 / 3.0, 16000.0)
    assert abs(up / down - 48000.0) / 48000.0 < 1e-3


def test_when_channels_are_selected_then_modes_and_montage_follow_names():
    v = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert select_channels(v, "first", [], None, "w").shape == (1, 4)
    np.testing.assert_allclose(select_channels(v, "mean", [], None, "w")[0], v.mean(0))
    got = select_channels(v, "montage", ["cz", "Fp1"], ["Fp1", "Fp2", "Cz"], "w")
    np.testing.assert_array_equal(got, v[[2, 0]])
    with pytest.raises(TeacherInputError, match="O1"):
        select_channels(v, "montage", ["O1"], ["Fp1", "Fp2", "Cz"], "teacher eeg, record r7")


def test_when_standardized_then_each_channel_has_zero_mean_unit_std():
    x = (np.random.default_rng(0).normal(3, 5, size=(2, 1000))).astype(np.float32)
    y = standardize(x)
    np.testing.assert_allclose(y.mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(1), 1, atol=1e-3)


def test_when_a_record_is_shorter_than_the_minimum_then_direct_use_names_teacher_and_record():
    t = build_teacher(TeacherConfig(name="crepe", kind="crepe"))
    short = np.zeros((1, 50), np.float32)
    with pytest.raises(TeacherInputError, match=r"teacher crepe, record rec-9.*shorter than the teacher's minimum"):
        t.prepare(short, 16000, "rec-9")
    p = t.prepare(short, 16000, "rec-9", allow_short=True)
    assert p.shape == (1, 0)
    assert t.embed([p])[0].shape == (0, t.dim)


def test_when_context_policy_is_error_then_a_too_long_view_is_refused_with_the_view_limit():
    t = build_teacher(TeacherConfig(name="fc", kind="fracast", context_policy="error"))
    with pytest.raises(TeacherInputError, match=r"teacher fc, record r1.*context is 2048.*max_length <= 2048"):
        t.prepare(np.zeros((1, 3000), np.float32), 1.0, "r1")


def test_when_context_policy_is_crop_or_chunk_then_lengths_and_token_counts_follow():
    x = np.sin(np.arange(5000) / 7.0).astype(np.float32)[None]
    crop = build_teacher(TeacherConfig(name="a", kind="fracast", context_policy="crop"))
    chunk = build_teacher(TeacherConfig(name="b", kind="fracast", context_policy="chunk"))
    pc, pk = crop.prepare(x, 1.0), chunk.prepare(x, 1.0)
    assert pc.shape == (1, 2048) and pk.shape == (1, 5000)
    (ec,), (ek,) = crop.embed([pc]), chunk.embed([pk])
    assert ec.shape == (128, 64)
    assert ek.shape == (chunk.expected_tokens(5000), 64) == (128 + 128 + 57, 64)
    np.testing.assert_allclose(ek[:128], ec, atol=1e-5)  # the first chunk is the cropped view


def test_when_values_hold_nan_then_prepare_names_the_record():
    t = build_teacher(TeacherConfig(name="fc", kind="fracast"))
    x = np.ones((1, 100), np.float32)
    x[0, 5] = np.nan
    with pytest.raises(TeacherInputError, match="teacher fc, record bad-1.*NaN"):
        t.prepare(x, 10.0, "bad-1")


def test_when_the_same_view_is_prepared_twice_then_the_result_is_identical():
    t = build_teacher(TeacherConfig(name="crepe", kind="crepe", channel_mode="mean"))
    x = np.random.default_rng(1).normal(size=(3, 9000)).astype(np.float32)
    a, b = t.prepare(x, 22050, "r"), t.prepare(x.copy(), 22050, "r")
    assert a.shape == (1, round(9000 * 16000 / 22050))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("scale", [1e-21, 1e-9, 1.0, 1e9])
def test_when_a_signal_is_in_tiny_or_huge_units_then_standardizing_still_gives_unit_std(scale):
    """Strain (~1e-21), ground velocity in m/s and counts (~1e9) all reach the teacher at unit variance: an
    absolute epsilon on the variance (the audio extractors' 1e-7) would flatten the small ones towards zero."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 4000)) * scale + 3 * scale).astype(np.float32)
    x[1] = np.float32(5 * scale)  # a flat channel stays zeros, never NaN
    y = standardize(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[0].std(), 1.0, rtol=1e-4)
    np.testing.assert_allclose(y[0].mean(), 0.0, atol=1e-4)
    assert np.all(y[1] == 0)
