"""The held-out validation slice of a pretraining corpus, chosen by record id alone.

A record is in validation when a hash of its id (not of the run's seed) falls under the fraction: the slice
is the same in every run, every resume and every sweep trial over the same data, and all views of a record
are on one side, so validation never scores a crop of a record the student trained on."""
from __future__ import annotations

import hashlib

_SALT = b"step-dist/validation:"


def in_validation(record_id: str, fraction: float) -> bool:
    if fraction <= 0:
        return False
    h = hashlib.sha256(_SALT + str(record_id).encode()).digest()
    return int.from_bytes(h[:8], "little") / 2**64 < fraction
