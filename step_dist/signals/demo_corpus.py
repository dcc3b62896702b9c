"""The offline demo corpus, built only from signals that ship inside PyPI packages (no network).

pretrain/ (unlabelled): real seismograms (obspy's bundled example and the traces in its test-data folders),
physiological simulations (neurokit2 ECG/PPG/respiration/EDA/EMG), synthetic audio-like calls (chirps,
harmonics with vibrato, amplitude-modulated noise: no real audio ships in a wheel), synthetic EEG-like
rhythms, and multi-rate EDF/BDF files from pyedflib's test data (one record per rate group).
tasks/<name>/ (labelled, split train/test): UCR/UEA data bundled with aeon, read through the .ts reader.

Long traces are cut into consecutive windows of at most ``max_length`` samples; ``meta.window`` records
which part of the source a record is, so nothing is altered silently.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from step_dist import storage
from step_dist.signals.readers import ReaderOptions, read_records
from step_dist.signals.readers.seismic import stream_pieces
from step_dist.signals.record import SignalRecord
from step_dist.signals.shards import ShardWriter
from step_dist.signals.validate import ValidationConfig, check

SEISMIC_DIRS = ("io/mseed", "io/sac", "io/gse2", "io/sh", "io/seisan", "core")
TASK_RATES = {"BasicMotions": 10.0, "GunPoint": 30.0}  # documented sampling rates; the others have none


@dataclass
class DemoSize:
    seismic: int  # records
    physio: int
    audio: int
    eeg: int
    edf: int
    tasks: tuple[str, ...]
    task_cases: int  # per split; 0 = all
    max_length: int = 20_000
    windows: int = 16  # windows cut from one long trace at most (EDF rate groups: a fifth of it)


SIZES = {
    "small": DemoSize(seismic=220, physio=150, audio=60, eeg=40, edf=60,
                      tasks=("GunPoint", "ArrowHead", "BasicMotions", "JapaneseVowels"), task_cases=0),
    "tiny": DemoSize(seismic=6, physio=5, audio=3, eeg=2, edf=3, tasks=("GunPoint", "BasicMotions"), task_cases=12, max_length=4000, windows=2),
}


def _windows(rec: SignalRecord, max_length: int, limit: int) -> Iterator[SignalRecord]:
    n = rec.length
    for k, start in enumerate(range(0, n, max_length)):
        if k >= limit:
            return
        stop = min(n, start + max_length)
        if stop - start < min(64, n):
            return
        meta = dict(rec.meta, window=[start, stop], source_length=n) if n > max_length else rec.meta
        yield SignalRecord(id=f"{rec.id}@{start}" if n > max_length else rec.id, source=rec.source, domain=rec.domain,
                           sampling_rate_hz=rec.sampling_rate_hz, values=rec.values[:, start:stop],
                           channel_names=rec.channel_names, uri=rec.uri, index=rec.index, meta=meta)


def _site_dir(module: str) -> str:
    import importlib

    return os.path.dirname(importlib.import_module(module).__file__)


def seismic(size: DemoSize) -> Iterator[SignalRecord]:
    import obspy

    for i, p in enumerate(stream_pieces(obspy.read())):
        yield SignalRecord(id=f"seismic:obspy-example#{i}", source="seismic", domain="seismic", sampling_rate_hz=p.rate_hz,
                           values=p.values, channel_names=p.channel_names, uri="obspy.read()", index=i, meta=p.meta)
    root = _site_dir("obspy")
    files = sorted(f for d in SEISMIC_DIRS for f in glob.glob(os.path.join(root, d, "tests", "data", "*")) if os.path.isfile(f))
    for f in files:
        if f.endswith((".py", ".txt", ".xml", ".json", ".pz", ".sacpz", ".png", ".html", ".gz", ".zip", ".bz2")):
            continue
        try:
            # obspy.read's format sniffing is refused for user files (readers/seismic.py: it unpickles and
            # unpacks); these are the test files inside the installed obspy wheel, read as before
            st = obspy.read(f)
            try:
                st.merge(method=1, fill_value=None)
            except Exception:  # noqa: BLE001 - differing dtypes/rates for one id: keep the traces as read
                pass
            for i, p in enumerate(stream_pieces(st)):
                if p.error:
                    continue
                rec = SignalRecord(id=f"seismic:{os.path.relpath(f, root)}#{i}", source="seismic", domain="seismic",
                                   sampling_rate_hz=p.rate_hz, values=p.values, channel_names=p.channel_names,
                                   uri=f"obspy/{os.path.relpath(f, root)}", index=i, meta=p.meta)
                yield from _windows(rec, size.max_length, limit=size.windows)
        except Exception:  # noqa: BLE001 - obspy's test folders hold deliberately broken files and non-waveforms
            continue


def physio(size: DemoSize, rng: np.random.Generator) -> Iterator[SignalRecord]:
    import neurokit2 as nk

    kinds = [
        ("ecg", lambda s: nk.ecg_simulate(duration=20, sampling_rate=250, heart_rate=int(rng.integers(50, 110)), random_state=s), 250.0),
        ("ppg", lambda s: nk.ppg_simulate(duration=30, sampling_rate=100, heart_rate=int(rng.integers(50, 110)), random_state=s), 100.0),
        ("rsp", lambda s: nk.rsp_simulate(duration=120, sampling_rate=50, respiratory_rate=int(rng.integers(10, 25)), random_state=s), 50.0),
        ("eda", lambda s: nk.eda_simulate(duration=120, sampling_rate=50, scr_number=int(rng.integers(1, 6)), random_state=s), 50.0),
        ("emg", lambda s: nk.emg_simulate(duration=10, sampling_rate=1000, burst_number=int(rng.integers(1, 5)), random_state=s), 1000.0),
    ]
    for i in range(size.physio):
        name, fn, rate = kinds[i % len(kinds)]
        x = np.asarray(fn(i), dtype=np.float32)[: size.max_length]
        yield SignalRecord(id=f"physio:{name}#{i}", source="physio", domain=f"physiology/{name}", sampling_rate_hz=rate,
                           values=x, channel_names=[name], uri=f"neurokit2.{name}_simulate", index=i, meta={"simulated": True, "seed": i})


def audio_like(size: DemoSize, rng: np.random.Generator) -> Iterator[SignalRecord]:
    for i in range(size.audio):
        rate = (8000.0, 16000.0)[i % 2]
        n = min(size.max_length, int(rate * rng.uniform(0.5, 1.2)))
        t = np.arange(n) / rate
        kind = ("chirp", "harmonic", "am-noise")[i % 3]
        if kind == "chirp":
            f0, f1 = rng.uniform(200, 1000), rng.uniform(1500, 3500)
            x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1])))
        elif kind == "harmonic":
            f = rng.uniform(100, 400) * (1 + 0.02 * np.sin(2 * np.pi * 5 * t))
            ph = 2 * np.pi * np.cumsum(f) / rate
            x = sum(np.sin(k * ph) / k for k in range(1, 6))
        else:
            x = rng.standard_normal(n) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 12) * t))
        x = x * np.hanning(n) + 0.01 * rng.standard_normal(n)
        yield SignalRecord(id=f"audio:{kind}#{i}", source="audio", domain="audio", sampling_rate_hz=rate,
                           values=x.astype(np.float32), channel_names=["mono"], uri="synthetic", index=i, meta={"synthetic": kind})


def eeg_like(size: DemoSize, rng: np.random.Generator) -> Iterator[SignalRecord]:
    rate, n, c = 256.0, min(size.max_length, 256 * 16), 8
    for i in range(size.eeg):
        pink = np.cumsum(rng.standard_normal((c, n)), axis=1)
        pink -= pink.mean(axis=1, keepdims=True)
        t = np.arange(n) / rate
        alpha = np.sin(2 * np.pi * rng.uniform(8, 12) * t + rng.uniform(0, 6, (c, 1))) * rng.uniform(2, 10, (c, 1))
        x = 0.2 * pink + alpha + rng.standard_normal((c, n))
        yield SignalRecord(id=f"eeg:synthetic#{i}", source="eeg", domain="eeg", sampling_rate_hz=rate, values=x.astype(np.float32),
                           channel_names=[f"E{k}" for k in range(c)], uri="synthetic", index=i, meta={"synthetic": "1/f + alpha"})


def edf_files(size: DemoSize) -> Iterator[SignalRecord]:
    root = _site_dir("pyedflib")
    files = sorted(set(glob.glob(os.path.join(root, "tests", "data", "*.edf")) + glob.glob(os.path.join(root, "tests", "data", "*.bdf"))
                       + glob.glob(os.path.join(root, "data", "*.edf"))))
    opts = ReaderOptions(source="edf", domain="multi-rate-edf")
    for f in files:
        try:
            for rec in read_records(f, opts, name=os.path.relpath(f, root)):
                if isinstance(rec, SignalRecord):
                    yield from _windows(rec, size.max_length, limit=max(1, size.windows // 5))
        except Exception:  # noqa: BLE001 - a legacy test file pyedflib itself refuses
            continue


def task_records(name: str, size: DemoSize) -> Iterator[SignalRecord]:
    folder = os.path.join(_site_dir("aeon.datasets"), "data", name)
    opts = ReaderOptions(source=name, domain="task", rate_hz=TASK_RATES.get(name))
    for split in ("TRAIN", "TEST"):
        recs = [r for r in read_records(os.path.join(folder, f"{name}_{split}.ts"), opts) if isinstance(r, SignalRecord)]
        if size.task_cases:  # a few of every class, so tiny tasks still have all labels
            by_label: dict[str, list] = {}
            for r in recs:
                by_label.setdefault(r.label, []).append(r)
            per = max(1, size.task_cases // len(by_label))
            recs = [r for rs in by_label.values() for r in rs[:per]]
        yield from recs


def _write(out_uri: str, groups: list[tuple[int, Iterator[SignalRecord]]], vcfg: ValidationConfig) -> dict:
    """Validate and write each group's records until the group has ``limit`` good ones (0: no limit)."""
    import warnings

    with ShardWriter(out_uri, shard_mb=8, extra={"built_by": "step-dist demo-data"}) as w, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # obspy warns about rounding in its own test files
        for limit, records in groups:
            kept = 0
            for rec in records:
                good, bad = check(rec, vcfg)
                if bad:
                    w.quarantine(bad)
                    continue
                w.add(good)
                kept += 1
                if limit and kept >= limit:
                    break
    return w.manifest


def build(out_uri: str, size: str = "small", seed: int = 0, say=print) -> dict:
    """Write pretrain/ and tasks/<name>/ under ``out_uri`` plus demo_index.json; return the index."""
    if size not in SIZES:
        raise ValueError(f"unknown demo size {size!r}; choose one of {sorted(SIZES)}")
    s = SIZES[size]
    root = storage.parse_uri(out_uri)
    rng = np.random.default_rng(seed)
    vcfg = ValidationConfig(min_length=64)  # a few samples of a test trace are no pretraining signal
    groups = [(s.seismic, seismic(s)), (s.physio, physio(s, rng)), (s.audio, audio_like(s, rng)),
              (s.eeg, eeg_like(s, rng)), (s.edf, edf_files(s))]
    m = _write(root.join("pretrain").uri, groups, vcfg)
    say(f"demo-data: pretrain {m['n_records']} records, {m['total_samples']} samples -> {root.join('pretrain').uri}")
    index = {"pretrain": root.join("pretrain").uri, "tasks": {}}
    for name in s.tasks:
        uri = root.join("tasks", name).uri
        tm = _write(uri, [(0, task_records(name, s))], ValidationConfig(allow_constant=True))
        splits = tm["sources"].get(name, {}).get("splits", {})
        say(f"demo-data: task {name}: {tm['n_records']} records {splits} -> {uri}")
        index["tasks"][name] = uri
    storage.write_bytes(root.join("demo_index.json").uri, json.dumps(index, indent=1).encode())
    return index
