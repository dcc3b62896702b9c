"""The SciTS benchmark layout (the tasks STEP reports on) -> signal records -> a labelled shard set.

SciTS ships JSONL files whose rows point at signal files (.wav, .csv, .npy, .fif). A row is accepted in the
flat form or in SciTS's own nested form; the fields read are, first match wins:

  signal file   ``path`` | ``file`` | ``input_ts.segment.seg_path`` (when ``input_ts.already_segment``) |
                ``input_ts.original.ori_path`` | ``input_ts.path``.  Relative paths are resolved against
                ``base_uri`` if given, else the JSONL file's own folder; absolute paths and s3:// / gs:// URIs
                are used as they are.
  label         ``label`` | ``gt_result`` (a scalar, or a mapping with ``label`` / ``answer``) |
                ``gt_text`` (a string, or the first of a list).
  split         ``split`` (train / val / valid / validation / dev / test); else the JSONL file name when it
                contains train / val / valid / test; else the ``split`` argument.
  rate (Hz)     ``sampling_rate_hz`` | ``sampling_rate`` | ``sample_rate`` | ``sr`` | ``fs``, at the top level
                or inside ``input_ts``; .wav and .fif files carry their own rate, which wins; else ``rate_hz``.
  id            ``id`` | ``uid``; else ``<jsonl name>:<line>``.
  source        ``dataset_name`` | ``source``; else the ``source`` argument.   domain: ``domain``, else ``domain``.
  channels      ``channel_names`` | ``channels`` (optional names, one per channel).

Values, as SciTS reads them: .wav through soundfile (float in [-1, 1)); .csv without a header, one column per
channel, 'X' marks a missing sample filled by linear interpolation (a non-numeric first row is taken as
channel names); .npy is [time] or [time, channels]; .fif through mne (the ``eeg`` extra). Lengths are kept
whole here: the 240k-sample cap SciTS applies is the task's ``max_length`` at evaluation time.
A row that cannot become a record is set aside with its reason (listed in the shard set's manifest).
"""
from __future__ import annotations

import io
import json
import os
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
from step_dist import storage
from step_dist.signals.record import SignalRecord

RATE_KEYS = ("sampling_rate_hz", "sampling_rate", "sample_rate", "sr", "fs")
SUFFIXES = (".wav", ".flac", ".csv", ".npy", ".fif")
_SPLIT_WORDS = (("train", "train"), ("valid", "val"), ("val", "val"), ("dev", "val"), ("test", "test"))


class ScitsError(ValueError):
    """The SciTS set cannot be read as given (not a record-level problem): the message says what to do."""


@dataclass
class ScitsResult:
    records: list[SignalRecord] = field(default_factory=list)
    set_aside: list[dict[str, Any]] = field(default_factory=list)  # {jsonl, line, id, reason}

    def reasons(self) -> Counter:
        return Counter(r["reason"] for r in self.set_aside)


def _dig(row: dict, *keys: str) -> Any:
    node: Any = row
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


def _signal_path(row: dict) -> str | None:
    for key in ("path", "file"):
        if isinstance(row.get(key), str) and row[key]:
            return row[key]
    ts = row.get("input_ts")
    if isinstance(ts, dict):
        if ts.get("already_segment") and _dig(ts, "segment", "seg_path"):
            return _dig(ts, "segment", "seg_path")
        return _dig(ts, "original", "ori_path") or ts.get("path")
    return None


def _label(row: dict) -> str | None:
    for value in (row.get("label"), row.get("gt_result"), row.get("gt_text")):
        if isinstance(value, dict):
            value = value.get("label", value.get("answer"))
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None and str(value).strip() != "":
            return str(value).strip()
    return None


def _split(row: dict, jsonl_uri: str, default: str | None) -> str | None:
    if row.get("split"):
        return str(row["split"]).strip().lower()
    name = posixpath.basename(jsonl_uri).lower()
    for word, split in _SPLIT_WORDS:
        if word in name:
            return split
    return default


def _rate(row: dict) -> float | None:
    for node in (row, row.get("input_ts") if isinstance(row.get("input_ts"), dict) else {}):
        for k in RATE_KEYS:
            if node.get(k) is not None:
                return float(node[k])
    return None


def _resolve(path: str, jsonl_uri: str, base_uri: str | None) -> str:
    if "://" in path or os.path.isabs(path):
        return path
    base = base_uri or jsonl_uri.rsplit("/", 1)[0]
    return base.rstrip("/") + "/" + path.lstrip("./")


def _read_csv(data: bytes) -> tuple[np.ndarray, list[str]]:
    import pandas as pd

    df = pd.read_csv(io.BytesIO(data), header=None, dtype=str, keep_default_na=False)
    names: list[str] = []
    first = df.iloc[0].tolist() if len(df) else []
    if first and not all(_is_number_or_x(v) for v in first):  # a header row: take its names
        names, df = [str(v).strip() for v in first], df.iloc[1:]
    df = df.apply(lambda col: col.str.strip()).replace({"X": np.nan, "x": np.nan, "": np.nan})
    num = df.apply(pd.to_numeric, errors="coerce")
    bad = num.isna() & df.notna()
    if bad.any().any():
        r, c = np.argwhere(bad.to_numpy())[0]
        raise ValueError(f"non-numeric value {df.iat[r, c]!r} at row {r}, column {c}")
    if num.isna().any().any():  # 'X' = missing: SciTS fills by linear interpolation
        num = num.interpolate(method="linear", limit_direction="both")
    return num.to_numpy(dtype=np.float64).T, names


def _is_number_or_x(v: Any) -> bool:
    s = str(v).strip()
    if s in ("X", "x", ""):
        return True
    try:
        float(s)
        return True
    except ValueError:
        return False


def read_signal(uri: str) -> tuple[np.ndarray, float | None, list[str]]:
    """(values [C, L], rate from the file or None, channel names) for one SciTS signal file."""
    ext = posixpath.splitext(uri.lower())[1]
    if ext not in SUFFIXES:
        raise ValueError(f"unsupported file type {ext!r} (SciTS files are {', '.join(SUFFIXES)})")
    if ext == ".fif":
        try:
            import mne
        except ImportError:
            raise ScitsError(
                f"{uri}: reading .fif needs mne; install the eeg extra: pip install 'step-dist[eeg]'"
            ) from None
        raw = mne.io.read_raw_fif(storage.local_copy(uri), preload=True, verbose=False)
        return raw.get_data().astype(np.float32), float(raw.info["sfreq"]), list(raw.ch_names)
    data = storage.read_bytes(uri)
    if ext in (".wav", ".flac"):
        import soundfile as sf

        values, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        return values.T, float(rate), []
    if ext == ".npy":
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ValueError(f"npy array has shape {arr.shape}; SciTS npy files are [time] or [time, channels]")
        return np.asarray(arr, dtype=np.float32).T, None, []
    values, names = _read_csv(data)
    return values, None, names


def _jsonl_rows(uri: str) -> Iterable[tuple[int, dict | None, str]]:
    text = storage.read_bytes(uri).decode("utf-8")
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield n, None, f"not valid JSON ({e.msg})"
            continue
        yield n, row if isinstance(row, dict) else None, "" if isinstance(row, dict) else "a JSON value, not an object"


def read_scits(
    jsonl_uris: str | list[str],
    *,
    base_uri: str | None = None,
    rate_hz: float | None = None,
    source: str = "scits",
    domain: str = "unknown",
    split: str | None = None,
) -> ScitsResult:
    """Records of one or more SciTS JSONL files (a folder URI means every .jsonl under it)."""
    uris: list[str] = []
    for u in [jsonl_uris] if isinstance(jsonl_uris, str) else list(jsonl_uris):
        uris += storage.list_files(u, (".jsonl",)) if not u.lower().endswith(".jsonl") else [storage.parse_uri(u).uri]
    if not uris:
        raise ScitsError(f"no .jsonl files in {jsonl_uris}: give SciTS JSONL files or a folder holding them")
    out = ScitsResult()
    seen: set[str] = set()
    for jsonl in uris:
        for line, row, problem in _jsonl_rows(jsonl):
            where = {"jsonl": jsonl, "line": line, "id": (row or {}).get("id") or (row or {}).get("uid")}
            if row is None:
                out.set_aside.append({**where, "reason": problem})
                continue
            rid = str(where["id"] or f"{posixpath.basename(jsonl)}:{line}")
            path = _signal_path(row)
            label = _label(row)
            if not path:
                out.set_aside.append({**where, "reason": "no signal file (path / input_ts) in the row"})
                continue
            if label is None:
                out.set_aside.append({**where, "reason": "no label (label / gt_result / gt_text) in the row"})
                continue
            if rid in seen:
                out.set_aside.append({**where, "reason": f"duplicate id {rid}"})
                continue
            file_uri = _resolve(path, jsonl, base_uri)
            try:
                values, file_rate, names = read_signal(file_uri)
            except (ScitsError, ImportError):
                raise
            except FileNotFoundError:
                out.set_aside.append({**where, "reason": f"signal file not found: {file_uri}"})
                continue
            except Exception as e:  # noqa: BLE001 - every reader's own error becomes the record's reason
                out.set_aside.append({**where, "reason": f"cannot read {file_uri}: {type(e).__name__}: {e}"})
                continue
            rate = file_rate or _rate(row) or rate_hz
            if not rate or not np.isfinite(rate) or rate <= 0:
                out.set_aside.append({**where, "reason": f"no sampling rate for {file_uri}: add sampling_rate_hz to the row or pass rate_hz"})
                continue
            if values.shape[1] == 0:
                out.set_aside.append({**where, "reason": f"{file_uri} holds no samples"})
                continue
            names = list(row.get("channel_names") or row.get("channels") or names)
            if names and len(names) != values.shape[0]:
                names = []  # names that do not match the data are worse than generic ones
            seen.add(rid)
            out.records.append(
                SignalRecord(
                    id=rid,
                    source=str(row.get("dataset_name") or row.get("source") or source),
                    domain=str(row.get("domain") or domain),
                    sampling_rate_hz=float(rate),
                    values=values,
                    channel_names=names,
                    label=label,
                    split=_split(row, jsonl, split),
                    uri=file_uri,
                    index=0,
                    meta={"jsonl": jsonl, "line": line, **({"task": row["task"]} if row.get("task") else {})},
                )
            )
    return out


def ingest_scits(jsonl_uris: str | list[str], out_uri: str, **kwargs: Any) -> dict[str, Any]:
    """Read SciTS JSONL into a labelled shard set at ``out_uri`` (shards + manifest, set-aside rows listed in
    the manifest's ``quarantined``); returns a summary (records, splits, set aside by reason, shard files)."""
    from step_dist.signals.shards import ShardWriter
    from step_dist.signals.validate import Quarantined

    result = read_scits(jsonl_uris, **kwargs)
    with ShardWriter(out_uri, extra={"ingested_from": "scits"}) as writer:
        for record in result.records:
            writer.add(record)
        for r in result.set_aside:
            writer.quarantine(Quarantined(uri=r["jsonl"], reason=r["reason"], index=r["line"], id=r["id"]))
    return {
        "records": len(result.records),
        "splits": dict(Counter(r.split for r in result.records)),
        "set_aside": len(result.set_aside),
        "reasons": dict(result.reasons()),
        "files": [storage.parse_uri(out_uri).join(s["path"]).uri for s in writer.manifest["shards"]],
    }
