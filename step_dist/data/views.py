"""Deterministic views: which window of a record the student and every teacher see.

A view is a crop of a record at its native rate, chosen by a hash of (seed, record id, view index) so that
the online teacher pools, the target cache and the student all agree on it without talking to each other,
on any worker, in any epoch. A cached target is keyed by (record id, view id, teacher fingerprint).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass
class ViewConfig:
    max_length: int = 16384  # samples (native rate) a view spans at most; longer records are cropped
    min_length: int = 32  # records shorter than this are quarantined ("too short for any view")
    views_per_record: int = 1  # distinct crops per record (each is its own training example)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_length < 1 or self.max_length < self.min_length:
            raise ValueError(f"view lengths must satisfy 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}")
        if self.views_per_record < 1:
            raise ValueError("views_per_record must be >= 1")


@dataclass(frozen=True)
class View:
    record_id: str
    index: int
    start: int
    stop: int

    @property
    def view_id(self) -> str:
        return f"v{self.index}:{self.start}-{self.stop}"

    @property
    def length(self) -> int:
        return self.stop - self.start


def _hash_unit(*parts: object) -> float:
    h = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64


def view_window(record_id: str, length: int, cfg: ViewConfig, index: int = 0) -> View:
    """The crop [start, stop) of a record of ``length`` samples for view ``index``."""
    span = min(length, cfg.max_length)
    room = length - span
    start = int(_hash_unit(cfg.seed, record_id, index) * (room + 1)) if room > 0 else 0
    start = min(start, room)
    return View(record_id, index, start, start + span)


def views_of(record_id: str, length: int, cfg: ViewConfig) -> list[View]:
    return [view_window(record_id, length, cfg, i) for i in range(cfg.views_per_record)]


def crop(values: np.ndarray, view: View) -> np.ndarray:
    return values[:, view.start : view.stop]
