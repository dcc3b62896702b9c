"""One SciTS JSONL row -> what a record needs from it: the signal path, the label, the split, a rate.

A row as SciTS writes it (OpenTSLab/TimeOmni: ``data_provider/dataset.py`` reads it, ``eval_benchmark.py``
scores it)::

    {"id", "uid", "dataset_name", "task", "scene", "input_text": [...], "gt_text": [...],
     "input_ts": {"already_segment": bool, "original": {"ori_path", "ori_length"},
                  "segment": {"seg_path", "seg_length"}, "channel": int},
     "gt_ts": {"path", ...} | null, "gt_result": {...} | null, "meta_data": {...}}

Signal file: ``input_ts.segment.seg_path`` when ``already_segment`` is true, else ``input_ts.original.ori_path``
(SciTS's rule), relative to the dataset root. A flat ``path`` / ``file`` is accepted too (hand-made sets).

Label, from ``gt_result`` the way ``eval_benchmark.py`` reads it (first match wins):
  ``{"answer": "B"}``                        QA: the answer, ``B``.
  ``{"gt_class": {"default": [...]}}``       classification: the class; ``default`` may be a list or a string.
  ``{"contain": true, <times>...}``          detection: ``true`` or ``false`` (the times stay in meta).
  a flat ``label``, a scalar ``gt_result`` or ``{"label": ...}``: hand-made sets.
``gt_text`` (free-text answers: "The answer is earthquake.") is never a label: two rows of one class phrased
differently would become two classes.

Multi-label rows (``default`` lists several classes). The probe and the fine-tune are single-label, so a row
whose ``default`` holds several classes gets the class of its label *set*: the names sorted and joined by
``" + "`` (``["MI", "CD"]`` -> ``"CD + MI"``), and the list as written in ``meta.labels``. A model is then
scored on getting the whole set right, the strictest reading of SciTS's partial credit; a task where this makes
many rare classes is better scored with its own multi-label head (not built here).

Rows with ``gt_ts`` (forecasting, imputation) and rows without ``gt_result`` carry no label: their input
series are still records (pretraining corpus), and ``meta.gt_ts`` keeps the target's path.

Rate (Hz), first found: the file's own (.wav/.flac/.mp3/.fif) > the row's ``sampling_rate_hz`` /
``sampling_rate`` / ``sample_rate`` / ``sr`` / ``fs`` (top level, in ``input_ts`` or in ``meta_data``) > the
per-task table > ``--rate``. A row with none is set aside and named.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from step_dist.evaluate.scits_files import SetAside

RATE_KEYS = ("sampling_rate_hz", "sampling_rate", "sample_rate", "sr", "fs")
MULTI_LABEL_JOIN = " + "
# a split word as its own token of a file name: "STEAD-...-test-1200.jsonl", "train.jsonl"; not "eval", "textETT"
_SPLIT_TOKEN = re.compile(r"(?:^|[-_.\s])(train|training|valid|validation|val|dev|test|testing)(?=[-_.\s]|$)")
_SPLIT_NAMES = {"train": "train", "training": "train", "valid": "val", "validation": "val", "val": "val",
                "dev": "val", "test": "test", "testing": "test"}


@dataclass
class RowLabel:
    label: str | None  # the class a single-label model learns; None: no label (corpus only)
    kind: str  # classification | detection | qa | forecasting | unlabelled
    meta: dict[str, Any] = field(default_factory=dict)


def dig(row: Any, *keys: str) -> Any:
    node = row
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return None
        node = node[k]
    return node


def signal_path(row: dict) -> Any:
    """The row's input series, relative to the dataset root; None when the row names none."""
    for key in ("path", "file"):
        if isinstance(row.get(key), str) and row[key]:
            return row[key]
    ts = row.get("input_ts")
    if isinstance(ts, dict):
        if ts.get("already_segment"):
            return dig(ts, "segment", "seg_path")
        return dig(ts, "original", "ori_path") or ts.get("path")
    return None


def _text(value: Any, where: str) -> str:
    if isinstance(value, (dict, list)) or value is None:
        raise SetAside(f"{where} is {value!r}, not a class name")
    text = str(value).strip()
    if not text:
        raise SetAside(f"{where} is empty")
    return text


def row_label(row: dict) -> RowLabel:
    """The row's label as SciTS's evaluation reads it (see the module doc); SetAside when it is malformed."""
    if row.get("label") is not None and str(row["label"]).strip():
        return RowLabel(str(row["label"]).strip(), "classification")
    gt = row.get("gt_result")
    forecasting = bool(row.get("gt_ts"))
    if gt is None or gt == {}:
        return RowLabel(None, "forecasting" if forecasting else "unlabelled")
    if not isinstance(gt, dict):
        return RowLabel(_text(gt, "gt_result"), "classification")
    if "answer" in gt:
        return RowLabel(_text(gt["answer"], "gt_result.answer"), "qa")
    if "gt_class" in gt:
        classes = gt["gt_class"]
        if not isinstance(classes, dict) or "default" not in classes:
            keys = sorted(classes) if isinstance(classes, dict) else classes
            raise SetAside(f"gt_result.gt_class has no 'default' ({keys!r}); SciTS puts the class under "
                           "gt_class.default")
        value = classes["default"]
        names = [_text(v, "gt_result.gt_class.default item") for v in value] if isinstance(value, list) \
            else [_text(value, "gt_result.gt_class.default")]
        if not names:
            raise SetAside("gt_result.gt_class.default is an empty list")
        meta = {"labels": names} if len(names) > 1 else {}
        others = {k: v for k, v in classes.items() if k != "default"}
        if others:
            meta["gt_class"] = others
        return RowLabel(MULTI_LABEL_JOIN.join(sorted(set(names))), "classification", meta)
    if "contain" in gt:
        if not isinstance(gt["contain"], bool):
            raise SetAside(f"gt_result.contain is {gt['contain']!r}, not true or false")
        times = {k: v for k, v in gt.items() if k != "contain"}
        return RowLabel("true" if gt["contain"] else "false", "detection", {"detection": times} if times else {})
    if "label" in gt:
        return RowLabel(_text(gt["label"], "gt_result.label"), "classification")
    return RowLabel(None, "forecasting" if forecasting else "unlabelled", {"gt_result": gt})


def split_from_name(name: str) -> str | None:
    """train / val / test from a JSONL name's own token ("...-test-1200.jsonl"); None when it has none."""
    found = _SPLIT_TOKEN.findall(name.lower())
    return _SPLIT_NAMES[found[-1]] if found else None


def row_split(row: dict, jsonl_name: str, default: str | None) -> str | None:
    if row.get("split"):
        return str(row["split"]).strip().lower()
    return split_from_name(jsonl_name) or default


def row_rate(row: dict) -> float | None:
    """A rate the row states (top level, input_ts, meta_data); SetAside when it is not a number."""
    for node in (row, row.get("input_ts"), row.get("meta_data")):
        if not isinstance(node, dict):
            continue
        for k in RATE_KEYS:
            if node.get(k) is not None:
                try:
                    value = float(node[k])
                except (TypeError, ValueError):
                    raise SetAside(f"sampling rate {k}={node[k]!r} is not a number") from None
                return value
    return None


def row_id(row: dict) -> str | None:
    for key in ("id", "uid"):
        if row.get(key) is not None and str(row[key]).strip():
            return str(row[key]).strip()
    return None


def provenance(row: dict) -> dict[str, Any]:
    """What a record keeps of its row in ``meta`` (not the prompt texts: they are the LLM's, not the signal's)."""
    out: dict[str, Any] = {}
    for key in ("uid", "dataset_name", "task", "scene"):
        if row.get(key) not in (None, ""):
            out[key] = row[key]
    ts = row.get("input_ts")
    if isinstance(ts, dict):
        for key in ("already_segment", "channel"):
            if key in ts:
                out[key] = ts[key]
        for part, name in (("original", "ori_length"), ("segment", "seg_length")):
            if dig(ts, part, name) is not None:
                out[name] = dig(ts, part, name)
    if isinstance(row.get("gt_ts"), dict) and row["gt_ts"].get("path"):
        out["gt_ts"] = row["gt_ts"]["path"]
    if isinstance(row.get("meta_data"), dict) and row["meta_data"]:
        out["meta_data"] = row["meta_data"]
    return out
