"""One SciTS signal file -> values [channels, time], as SciTS's own loader reads it before its scaling.

SciTS (OpenTSLab/TimeOmni, ``data_provider/dataset.py``, ``Dataset_Unified.load_ts_data``) reads a file into
[time, channels] and then, for every format alike: keeps the first 240,000 samples, turns inf into NaN, fills
NaN with the channel's mean (scikit-learn's SimpleImputer, which also drops a channel that is all NaN) and
z-scores per sample. Here values are the same up to, not including, the z-score (the student's statistics
compensation does its own), and the record keeps its whole length (the 240k cap is the task's
``max_length`` at evaluation time; the fill mean is taken over the first 240k samples as SciTS does).

Per format:
  .wav .flac .mp3  soundfile, float in [-1, 1) (torchaudio.load's default scaling, which SciTS uses); the
                   file's rate is the record's. libsndfile's MP3 decoder may place the first sample a few
                   hundred samples from where FFmpeg does; .wav/.flac are exact.
  .m4a             not readable here (AAC in MP4 needs an FFmpeg decoder, which step-dist does not install):
                   the row is set aside with that reason; convert the file to FLAC.
  .csv             no header, one column per channel; 'X' or 'x' marks a missing sample. When a file holds
                   any 'X', every gap (an 'X' or a blank) is filled by linear interpolation, ends held, as
                   SciTS does; else blanks are NaN and get the channel mean. A non-numeric first row is taken
                   as channel names (SciTS would fail on it); any other non-numeric cell sets the row aside
                   (SciTS would silently turn it into a filled gap).
  .npy             [time] or [time, channels] (never transposed), read without pickle.
  .fif             mne, Volts as mne returns them; the file's rate and channel names.

Hostile files (the dataset is someone else's): the caller first confines the path to the dataset root
(``resolve_path``); sizes are checked against what a header declares before anything is allocated (the
frames x channels of an audio header, an .npy header's shape, a CSV's lines x fields, a .fif's samples x
channels); only regular files are opened (not FIFOs); audio reaches libsndfile as a stream after its first
bytes were checked (given bytes it does not recognise, libsndfile probes for a Mac resource fork beside the
file); a .fif that names another file (a split set) is refused before MNE follows the name.
"""
from __future__ import annotations

import io
import os
import posixpath
from pathlib import Path
from typing import Any

import numpy as np

from step_dist import storage
from step_dist.signals.readers.arrays import check_npy_complete, npy_layout
from step_dist.signals.readers.base import ReaderError, ReaderOptions, check_size, local_path

SUFFIXES = (".wav", ".flac", ".mp3", ".m4a", ".csv", ".npy", ".fif")
SCITS_MAX_LENGTH = 240_000  # SciTS keeps the first 240k samples of every record (its fill mean is taken there)


class ScitsError(ValueError):
    """The SciTS set cannot be read as given (not a record-level problem): the message says what to do."""


class SetAside(ValueError):
    """One row cannot become a record; the message is the reason, naming the path."""


def resolve_path(path: Any, root_uri: str) -> str:
    """The URI of a row's signal file, which must lie inside the dataset root; else SetAside, nothing opened."""
    if not isinstance(path, str) or "\0" in path:
        raise SetAside(f"signal path {path!r} is not a file name")
    if "://" in path:
        raise SetAside(f"signal path {path!r} is a URI; a row must name a file relative to the dataset root")
    if os.path.isabs(path):
        raise SetAside(f"signal path {path!r} is absolute; a row must name a file relative to the dataset root")
    rel = posixpath.normpath(path)
    if rel in (".", "..") or rel.startswith("../"):
        raise SetAside(f"signal path {path!r} leads out of the dataset root; a row must name a file inside it")
    root = storage.parse_uri(root_uri)
    uri = storage.parse_uri(root.uri.rstrip("/") + "/" + rel).uri
    if root.scheme == "file":  # the path's own links must not lead out either
        real_root, real = os.path.realpath(root.path), os.path.realpath(uri)
        if os.path.commonpath([real_root, real]) != real_root:
            raise SetAside(f"signal path {path!r} is a symbolic link (or lies under one) to {real}, outside "
                           f"the dataset root {root.uri}; copy the file into the root instead")
    return uri


# ---- per-format readers: (values [C, L] any float dtype, rate from the file or None, channel names, flags) --

def _read_csv(data: bytes) -> tuple[np.ndarray, list[str], dict]:
    import pandas as pd

    # keep_default_na: blanks and pandas' NA words ('NA', 'nan'...) are missing, as SciTS's read_csv makes them
    df = pd.read_csv(io.BytesIO(data), header=None, dtype=str, keep_default_na=True)
    names: list[str] = []
    first = df.iloc[0].tolist() if len(df) else []
    if first and not all(_is_number_or_x(v) for v in first):  # a header row: take its names
        names, df = [str(v).strip() for v in first], df.iloc[1:].reset_index(drop=True)
    df = df.apply(lambda col: col.str.strip())
    is_x = df.isin(["X", "x"])
    num = df.mask(is_x).apply(pd.to_numeric, errors="coerce")
    bad = num.isna() & df.notna() & ~is_x
    if bad.any().any():
        r, c = np.argwhere(bad.to_numpy())[0]
        raise ValueError(f"non-numeric value {df.iat[r, c]!r} at row {r}, column {c}")
    flags = {}
    if is_x.any().any():  # SciTS: any 'X' in the file -> every gap filled by linear interpolation, ends held
        flags["x_interpolated"] = int(is_x.to_numpy().sum())
        num = num.interpolate(method="linear", limit_direction="both")
    return num.to_numpy(dtype=np.float64).T, names, flags


def _is_number_or_x(v: Any) -> bool:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return True  # a blank cell
    s = str(v).strip()
    if s in ("X", "x", ""):
        return True
    try:
        float(s)
        return True
    except ValueError:
        return False


def _audio_magic_ok(f: Any) -> bool:
    """A WAV (RIFF/RIFX/RF64), FLAC or MP3 header (FLAC/MP3 after an optional ID3v2 tag). libsndfile probes for a
    Mac resource fork (``._<name>``, ``.AppleDouble/``: siblings of a path, the working folder for a stream) only
    when it does not recognise the bytes; a FIFO there would block it, a link there it would follow."""
    head = f.read(12)
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return True
    if head[:3] == b"ID3" and len(head) >= 10:  # a 10-byte header whose last 4 bytes are a 28-bit size
        f.seek(10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F)))
        head = f.read(4)
    if head[:4] == b"fLaC":
        return True
    return len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0  # an MPEG audio frame sync


def _audio(path: str, opts: ReaderOptions, uri: str) -> tuple[np.ndarray, float | None, list[str], dict]:
    import soundfile as sf

    with open(path, "rb") as f:  # a stream, not a path: libsndfile then opens nothing beside it
        if not _audio_magic_ok(f):
            raise ReaderError(f"{uri}: not a WAV or FLAC file, nor MP3 (its first bytes say otherwise); re-export it")
        f.seek(0)
        info = sf.info(f)  # a FLAC header can declare 2**36 frames in a few bytes: sf.read allocates them
        check_size(opts, info.channels, info.frames, uri, f"{info.format} audio (header)")
        f.seek(0)
        values, rate = sf.read(f, dtype="float32", always_2d=True)
    return values.T, float(rate), [], {}


def _m4a(path: str, opts: ReaderOptions, uri: str) -> tuple[np.ndarray, float | None, list[str], dict]:
    raise ReaderError(f"{uri}: .m4a (AAC in MP4) needs an FFmpeg-based decoder, which step-dist does not install "
                      "(it would hand someone else's bytes to FFmpeg); convert it: ffmpeg -i x.m4a x.flac, and "
                      "point the row at the .flac")


def _npy(path: str, opts: ReaderOptions, uri: str) -> tuple[np.ndarray, float | None, list[str], dict]:
    shape, dtype, offset = npy_layout(path, uri)
    if len(shape) not in (1, 2):
        raise ReaderError(f"{uri}: npy array has shape {shape}; SciTS npy files are [time] or [time, channels]")
    length, n_channels = (shape[0], 1) if len(shape) == 1 else shape
    check_size(opts, n_channels, length, uri, "the .npy array (header)")
    check_npy_complete(path, uri, shape, dtype, offset)
    arr = np.load(path, allow_pickle=False)
    return np.asarray(arr.reshape(length, n_channels)).T, None, [], {}


def _csv(path: str, opts: ReaderOptions, uri: str) -> tuple[np.ndarray, float | None, list[str], dict]:
    with open(path, "rb") as f:
        data = f.read()
    # the most pandas can produce: the lines x the first line's fields (a longer row is a parse error)
    lines = data.count(b"\n") + (not data.endswith(b"\n"))
    check_size(opts, data.split(b"\n", 1)[0].count(b",") + 1, lines, uri, "the CSV (lines x fields)")
    values, names, flags = _read_csv(data)
    return values, None, names, flags


def _fif(path: str, opts: ReaderOptions, uri: str) -> tuple[np.ndarray, float | None, list[str], dict]:
    try:
        import mne
        from mne._fiff.open import fiff_open  # the parse read_raw_fif itself does (mne >= 1.6, the eeg extra)
        from mne._fiff.tree import dir_tree_find
        from mne.io.constants import FIFF
    except ImportError:
        raise ScitsError(
            f"{uri}: reading .fif needs mne; install the eeg extra: pip install 'step-dist[eeg]'"
        ) from None
    # read_raw_fif opens the "next file" a split set names (an absolute name, or one with '..', is followed
    # as it is): refuse any file that names another, before MNE opens anything else.
    fid, tree, _ = fiff_open(Path(path), verbose=False)
    with fid:
        refs = dir_tree_find(tree, FIFF.FIFFB_REF)
    if any(e.kind in (FIFF.FIFF_REF_FILE_NAME, FIFF.FIFF_REF_FILE_NUM) for n in refs for e in n["directory"]):
        raise ReaderError(f"{uri}: the .fif is part of a split set (it names another file to read with it); "
                          "a row must name one whole file: load the set with mne and save it as one file")
    raw = mne.io.read_raw_fif(path, preload=False, allow_maxshield=False, verbose=False)
    if len(raw.filenames) != 1:
        raise ReaderError(f"{uri}: the .fif names other files ({len(raw.filenames)} in all); save it as one file")
    check_size(opts, len(raw.ch_names), raw.n_times, uri, "the .fif recording (header)")
    return raw.get_data(), float(raw.info["sfreq"]), list(raw.ch_names), {}


_READERS = {".wav": _audio, ".flac": _audio, ".mp3": _audio, ".m4a": _m4a, ".npy": _npy, ".csv": _csv, ".fif": _fif}


def fill_like_scits(values: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str], dict]:
    """SciTS's common step before scaling: inf -> NaN, NaN -> the channel's mean over the first 240k samples,
    a channel with no finite value there dropped (SimpleImputer's default). (float32 values, names, flags);
    ValueError when nothing finite is left (SciTS would feed a 1 x 1 zero placeholder to the model)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if finite.all():
        return values.astype(np.float32), names, {}
    head = np.where(finite, values, np.nan)[:, :SCITS_MAX_LENGTH]
    if not np.isfinite(head).any():
        raise ValueError("no finite sample in the first 240,000 (SciTS would use a placeholder); check the file")
    flags: dict = {"nan_filled_with_channel_mean": int((~finite).sum())}
    keep = np.isfinite(head).any(axis=1)
    if not keep.all():
        flags["channels_dropped_all_missing"] = [names[i] if i < len(names) else f"ch{i}" for i in np.flatnonzero(~keep)]
        values, finite, head = values[keep], finite[keep], head[keep]
        names = [n for n, k in zip(names, keep) if k] if len(names) == len(keep) else []
    with np.errstate(invalid="ignore"):
        means = np.nanmean(head, axis=1)
    values = np.where(finite, values, means[:, None])
    return values.astype(np.float32), names, flags


def read_signal(uri: str, opts: ReaderOptions | None = None) -> tuple[np.ndarray, float | None, list[str], dict]:
    """(values float32 [C, L] as SciTS has them before scaling, rate from the file or None, channel names, flags)
    for one SciTS signal file, sizes bounded by ``opts`` (ingest's defaults). Whether ``uri`` may be read at all
    is the caller's: see ``resolve_path``."""
    opts = opts or ReaderOptions()
    ext = posixpath.splitext(uri.lower())[1]
    if ext not in SUFFIXES:
        raise ValueError(f"unsupported file type {ext!r} (SciTS files are {', '.join(SUFFIXES)})")
    # a regular file of at most max_file_bytes (its size checked before it is read or downloaded)
    with local_path(uri, max_bytes=opts.max_file_bytes) as path:
        values, rate, names, flags = _READERS[ext](path, opts, uri)
    values, names, filled = fill_like_scits(values, names)
    return values, rate, names, {**flags, **filled}
