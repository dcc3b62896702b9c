"""Teacher inputs are bounded before anything is resampled: a 24-sample hourly record given to a 16 kHz teacher
is cropped at its own rate to what the teacher keeps (1.4 billion samples at 16 kHz, of which CREPE keeps
480,000), and ordinary records give exactly the inputs they gave before.

The hourly cases run in a fresh process under a 6 GiB address-space limit, so that code that resamples the
whole record first (a 1.15-billion-tap filter, ~20 GB in all) fails there with MemoryError instead of taking the
machine down; the peak memory of prepare itself is measured with tracemalloc and printed.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from fractions import Fraction

import numpy as np
import pytest
from scipy.signal import resample_poly

from step_dist.teachers import TeacherConfig, TeacherInputError, build_teacher
from step_dist.teachers.prepare import resample

HOURLY = 1 / 3600
CHILD_LIMIT_BYTES = 6 * 2**30
SMALL_PEAK_BYTES = 256 * 2**20

CHILD = textwrap.dedent("""
    import json, resource, sys, tracemalloc
    import numpy as np
    spec = json.loads(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (spec["limit"], spec["limit"]))
    from step_dist.teachers import TeacherConfig, TeacherInputError, build_teacher
    import step_dist.teachers.prepare  # its imports (scipy) are not what is measured
    t = build_teacher(TeacherConfig(**spec["config"]))
    x = (500 + 100 * np.sin(np.arange(spec["length"]) / 3.0)).astype(np.float32)
    x = np.stack([x * (c + 1) for c in range(spec["channels"])])
    tracemalloc.start()
    out = {"context": t.effective_context, "rate": t.native_rate_hz}
    try:
        p = t.prepare(x, spec["rate"], "hourly-1", spec.get("names"))
        out.update(shape=list(p.shape), finite=bool(np.isfinite(p).all()))
    except (TeacherInputError, MemoryError) as e:
        out["error"] = f"{type(e).__name__}: {e}"
    out["peak"] = tracemalloc.get_traced_memory()[1]
    print("RESULT " + json.dumps(out))
""")


def _prepare_in_child(config: dict, rate: float = HOURLY, length: int = 24, channels: int = 1, names=None) -> dict:
    spec = {"config": config, "rate": rate, "length": length, "channels": channels, "names": names,
            "limit": CHILD_LIMIT_BYTES}
    run = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, timeout=600)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def _hf_audio(kind: str, folder) -> dict:
    from tests.test_teachers_hf_audio import save_tiny

    return {"name": kind, "kind": "hf_audio", "checkpoint": save_tiny(kind, folder)}


def _hf_remote(folder) -> dict:
    from tests.test_teachers_hf_remote import save_counting_encoder

    return {"name": "remote", "kind": "hf_remote", "checkpoint": save_counting_encoder(folder), "trust_remote_code": True,
            "options": {"rate_hz": 100.0, "context_length": 256, "min_length": 8}}


def _cbramod(folder) -> dict:
    pytest.importorskip("braindecode")
    from tests.test_teachers_braindecode import save_tiny

    return {"name": "cbramod", "kind": "braindecode", "variant": "CBraMod", "checkpoint": save_tiny("CBraMod", folder)}


# every kind of teacher that upsamples: to 16 kHz (audio), to 100 Hz (a remote-code model), to 200 Hz (EEG)
TEACHERS = {
    "crepe": (lambda tmp: {"name": "crepe", "kind": "crepe"}, 1),
    "wav2vec2": (lambda tmp: _hf_audio("wav2vec2", tmp / "w2v"), 1),
    "whisper": (lambda tmp: _hf_audio("whisper", tmp / "whisper"), 1),
    "hf_remote": (lambda tmp: _hf_remote(tmp / "remote"), 1),
    "cbramod": (lambda tmp: _cbramod(tmp / "cbramod"), 4),
}


@pytest.mark.parametrize("teacher", sorted(TEACHERS))
def test_when_an_hourly_record_goes_to_an_upsampling_teacher_then_prepare_keeps_its_context_in_little_memory(teacher, tmp_path):
    make, channels = TEACHERS[teacher]
    got = _prepare_in_child(make(tmp_path), channels=channels)
    print(f"{teacher}: 24 samples at 1/3600 Hz -> {got.get('shape')} at {got['rate']:g} Hz, "
          f"prepare peak {got['peak'] / 2**20:.1f} MiB")
    assert "error" not in got, got["error"]
    assert got["shape"][1] == got["context"] and got["finite"]
    assert got["peak"] < SMALL_PEAK_BYTES


@pytest.mark.parametrize("policy,why", [("chunk", r"over the cap of \d+ prepared samples per record"),
                                        ("error", r"context is 480000")])
def test_when_an_hourly_record_would_exceed_what_crepe_keeps_then_it_is_refused_before_resampling(policy, why):
    got = _prepare_in_child({"name": "crepe", "kind": "crepe", "context_policy": policy})
    assert got.get("error", "").startswith("TeacherInputError") and "teacher crepe, record hourly-1" in got["error"], got
    assert re.search(why, got["error"]), got["error"]
    assert got["peak"] < SMALL_PEAK_BYTES


# ---- ordinary records: the same teacher inputs as before ------------------------------------------------------

def _old_prepare(t, values, rate_hz):
    """step_dist/teachers/prepare.py before inputs were bounded (its prepare_for and resample, verbatim in what
    they compute): resample the whole view, then crop to the context, then scale."""
    x = np.asarray(values, dtype=np.float32)
    if t.native_rate_hz and abs(rate_hz - t.native_rate_hz) > 1e-9 * t.native_rate_hz:
        frac = Fraction(t.native_rate_hz / rate_hz).limit_denominator(1000)
        if frac.numerator == 0:
            frac = Fraction(1, int(round(rate_hz / t.native_rate_hz)))
        x = np.ascontiguousarray(resample_poly(x.astype(np.float64), frac.numerator, frac.denominator, axis=-1),
                                 dtype=np.float32)
    ctx = t.effective_context
    if ctx and x.shape[1] > ctx and t.cfg.context_policy == "crop":
        x = x[:, :ctx]
    if t.scaling == "standardize":
        x64 = x.astype(np.float64)
        centred = x64 - x64.mean(axis=-1, keepdims=True)
        std = centred.std(axis=-1, keepdims=True)
        x = np.divide(centred, std, out=np.zeros_like(centred), where=std > 0)
    return np.ascontiguousarray(x, dtype=np.float32)


@pytest.fixture(scope="module")
def ordinary_teachers(tmp_path_factory):
    from tests.test_teachers_hf_audio import save_tiny

    folder = save_tiny("wav2vec2", tmp_path_factory.mktemp("w2v"))
    return {"crepe": build_teacher(TeacherConfig(name="crepe", kind="crepe")),
            "crepe-chunk": build_teacher(TeacherConfig(name="crepe", kind="crepe", context_policy="chunk")),
            "wav2vec2": build_teacher(TeacherConfig(name="w2v", kind="hf_audio", checkpoint=folder)),
            "fracast": build_teacher(TeacherConfig(name="fc", kind="fracast"))}


# (teacher, rate, seconds, channels): fits the context, is cropped to it, upsampled, downsampled, rate-free
ORDINARY = [("crepe", 8000, 1.0, 1), ("crepe", 44100, 31.0, 1), ("crepe", 22050, 40.0, 2), ("crepe", 100, 12.0, 3),
            ("crepe", 1.0, 40.0, 1), ("crepe-chunk", 44100, 45.0, 1), ("crepe", 16000, 31.0, 1),
            ("wav2vec2", 48000, 35.0, 1), ("wav2vec2", 250, 5.0, 2), ("fracast", 1.0, 5000, 1), ("fracast", 0.01, 300, 2)]


@pytest.mark.parametrize("teacher,rate,seconds,channels", ORDINARY)
def test_when_an_ordinary_record_is_prepared_then_the_teacher_input_is_bit_identical_to_before(
        teacher, rate, seconds, channels, ordinary_teachers):
    t = ordinary_teachers[teacher]
    n = int(seconds if teacher == "fracast" else seconds * rate)
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((channels, n)) * 3 + np.sin(np.arange(n) / 5.0)).astype(np.float32)
    np.testing.assert_array_equal(t.prepare(x, rate, "r"), _old_prepare(t, x, rate))


def test_when_the_ratio_is_too_large_for_one_polyphase_filter_then_the_outputs_equal_resample_polys():
    """Above 2**16 the kept outputs are summed tap by tap instead of through resample_poly's filter: same values
    (compared where resample_poly still fits in memory: 1 Hz to 100 kHz, a 2-million-tap filter)."""
    x = np.random.default_rng(3).standard_normal((2, 9)).astype(np.float32)
    want = resample_poly(x.astype(np.float64), 100000, 1, axis=-1).astype(np.float32)
    got = resample(x, 1.0, 100000.0)
    assert got.shape == want.shape == (2, 900000)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * np.abs(want).max())
    np.testing.assert_allclose(resample(x, 1.0, 100000.0, keep=1234), want[:, :1234], rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_when_a_teacher_sets_a_lower_cap_then_a_longer_view_is_refused_with_what_to_change():
    t = build_teacher(TeacherConfig(name="fc", kind="fracast", context_policy="chunk", options={"max_prepared_samples": 4096}))
    assert t.prepare(np.ones((2, 2048), np.float32), 1.0).shape == (2, 2048)
    with pytest.raises(TeacherInputError, match=r"teacher fc, record r2: .*2 x 3000 samples.*cap of 4096.*max_length <= 2048"):
        t.prepare(np.ones((2, 3000), np.float32), 1.0, "r2")
