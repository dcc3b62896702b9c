"""The teacher protocol: what every adapter provides and what the pipeline relies on.

A teacher turns one record view ``[C, L]`` at some rate into token targets ``[T, D]``. It does so in two
steps so that the expensive one can be batched on a GPU actor: ``prepare`` (numpy only, deterministic:
resample, crop/chunk, channel handling, scaling) and ``embed`` (the frozen model, batched by length).
Adapters implement ``_load`` and ``_embed_sequences``; the base class does the rest.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Bump when a change in this package changes the targets an unchanged checkpoint produces: the fingerprint
# includes it, so every cache written before the change stops matching.
ADAPTER_VERSION = "2"  # 2: standardize without the absolute epsilon that flattened small-unit signals

FAMILIES = ("audio", "timeseries", "eeg")
CHANNEL_MODES = ("per_channel", "first", "mean", "montage")
CONTEXT_POLICIES = ("crop", "chunk", "error")
SCALINGS = ("auto", "none", "standardize")


class TeacherError(RuntimeError):
    """A teacher cannot be built (missing/truncated/wrong checkpoint, missing extra) or cannot run a record."""


class TeacherInputError(TeacherError):
    """A record cannot be given to a teacher (too short, wrong channels, context too small)."""


@dataclass
class TeacherConfig:
    name: str = "fracast"
    kind: str = "fracast"  # registry key: fracast, crepe, hf_audio, hf_remote, chronos
    checkpoint: str = "builtin"  # "builtin" (shipped weights), a local folder or an s3:// / gs:// URI
    layer: int = -1  # which hidden layer gives the targets (-1 = last)
    channel_mode: str = "per_channel"  # per_channel (then mean of tokens) | first | mean | montage
    montage: list[str] = field(default_factory=list)  # channel names fed in this order (channel_mode=montage)
    trust_remote_code: bool = False  # run model code shipped with the checkpoint (hf_remote only)
    variant: str = ""  # adapter-specific: crepe "tiny"/"full", hf model family hint, ...
    context_policy: str = "crop"  # longer than the context: crop (first samples) | chunk (all, concatenated) | error
    max_context: int = 0  # cap the teacher's context (samples at native rate); 0 = the model's own
    scaling: str = "auto"  # auto (what the teacher was trained with) | none | standardize
    token_pool: int = 0  # average this many native tokens into one target token (0 = adapter default)
    batch_size: int = 16  # sequences per forward pass inside one actor call
    device: str = "auto"  # auto = cuda when present
    cache_dir: str = ""  # where remote checkpoints are downloaded ("" = ~/.cache/step-dist/downloads)
    options: dict[str, Any] = field(default_factory=dict)  # adapter-specific extras (input_name, ...)
    # the records this teacher describes, by sampling rate in Hz (0: no bound): outside the range a record
    # gets no target and the teacher is never run on it. An audio model fed a 50 Hz trace upsampled to 16 kHz
    # hears one second of it, and its targets are nearly one constant for the whole view
    # (jobs/diagnose_distillation.py, per domain). A record of unknown rate is always described.
    min_rate_hz: float = 0.0
    max_rate_hz: float = 0.0

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_-" for c in self.name):
            raise ValueError(f"teacher name {self.name!r} must be non-empty letters, digits, '_' or '-' (it names columns)")
        if self.channel_mode not in CHANNEL_MODES:
            raise ValueError(f"teacher {self.name}: channel_mode {self.channel_mode!r} not in {CHANNEL_MODES}")
        if self.channel_mode == "montage" and not self.montage:
            raise ValueError(f"teacher {self.name}: channel_mode 'montage' needs a montage (list of channel names)")
        if self.context_policy not in CONTEXT_POLICIES:
            raise ValueError(f"teacher {self.name}: context_policy {self.context_policy!r} not in {CONTEXT_POLICIES}")
        if self.scaling not in SCALINGS:
            raise ValueError(f"teacher {self.name}: scaling {self.scaling!r} not in {SCALINGS}")
        if self.batch_size < 1:
            raise ValueError(f"teacher {self.name}: batch_size must be >= 1")
        if self.min_rate_hz < 0 or self.max_rate_hz < 0 or (self.max_rate_hz and self.max_rate_hz < self.min_rate_hz):
            raise ValueError(f"teacher {self.name}: need 0 <= min_rate_hz <= max_rate_hz (0: no bound), "
                             f"got {self.min_rate_hz}, {self.max_rate_hz}")

    def describes(self, rate_hz: float) -> bool:
        """Whether a record at this rate is in the teacher's range (an unknown rate always is)."""
        if not (rate_hz > 0 and rate_hz < float("inf")):
            return True
        return rate_hz >= self.min_rate_hz and (not self.max_rate_hz or rate_hz <= self.max_rate_hz)

    def preparation(self) -> dict[str, Any]:
        """The part of the config that changes targets (everything but the name and where things run)."""
        d = dataclasses.asdict(self)
        for k in ("name", "checkpoint", "batch_size", "device", "cache_dir"):
            d.pop(k)
        return d


def hash_files(paths: list[str], root: str) -> str:
    """sha256 over (relative path, bytes) of every file, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(os.path.relpath(p, root).replace(os.sep, "/").encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


class Teacher:
    """Base class. Subclasses set the class attributes and implement ``_load`` / ``_embed_sequences``."""

    family: str = "timeseries"
    native_rate_hz: float | None = None  # None = rate-free (general time series: no resampling)
    multichannel: bool = False  # True: the model takes [C, L] jointly (EEG); else one sequence per channel
    default_scaling: str = "none"

    def __init__(self, cfg: TeacherConfig, load: bool = True):
        """``load=False`` only finds the checkpoint and fingerprints it (what a cache lookup needs)."""
        self.cfg = cfg
        self.name = cfg.name
        self.layer = cfg.layer
        self.local_dir: str | None = None  # set by _locate: the folder the checkpoint was read from
        self.weight_files: list[str] = []  # set by _locate: every file whose bytes define the targets
        self._calls = 0
        self.device = _device(cfg.device)
        self._locate()
        self.fingerprint = self._fingerprint()
        self.loaded = load
        if load:
            self._load()

    # ---- what adapters provide -------------------------------------------------------------------------
    context_length: int = 0  # samples at native rate one forward pass takes
    min_length: int = 1  # fewer prepared samples than this: no target
    dim: int = 0

    def _locate(self) -> None:
        """Resolve (download) the checkpoint; set local_dir and weight_files. Cheap: no model is built."""
        raise NotImplementedError

    def _load(self) -> None:
        """Build the model from the located files; set context_length, dim and friends."""
        raise NotImplementedError

    def _embed_sequences(self, seqs: list[np.ndarray]) -> list[np.ndarray]:
        """Equal-length sequences (1-D, or [C, L] when multichannel) -> float32 [T, D] each."""
        raise NotImplementedError

    def num_tokens(self, prepared_len: int) -> int:
        raise NotImplementedError

    # ---- shared behaviour ------------------------------------------------------------------------------
    @property
    def scaling(self) -> str:
        return self.default_scaling if self.cfg.scaling == "auto" else self.cfg.scaling

    @property
    def effective_context(self) -> int:
        c = self.context_length
        return min(c, self.cfg.max_context) if self.cfg.max_context else c

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(f"{type(self).__module__}.{type(self).__qualname__}:{ADAPTER_VERSION}\n".encode())
        h.update(json.dumps(self.cfg.preparation(), sort_keys=True, default=str).encode() + b"\n")
        h.update(hash_files(self.weight_files, self.local_dir or "/").encode())
        return h.hexdigest()

    def prepare(self, values: np.ndarray, rate_hz: float, record_id: str = "<record>",
                channel_names: list[str] | None = None, allow_short: bool = False) -> np.ndarray:
        from step_dist.teachers.prepare import prepare_for

        return prepare_for(self, values, rate_hz, record_id, channel_names, allow_short)

    def embed(self, prepared: list[np.ndarray], record_ids: list[str] | None = None) -> list[np.ndarray]:
        """float32 [T_i, D] per prepared view; T_i = 0 for an empty (too short) one.

        Per-channel teachers see each channel as its own sequence; a record's target is the mean of its
        channels' token embeddings. Sequences are grouped by exact length so no padding ever changes a
        target (models with group norm, like wav2vec2-base, are not padding-invariant)."""
        import torch

        ids = record_ids or [f"<record {i}>" for i in range(len(prepared))]
        seqs: list[tuple[int, np.ndarray]] = []
        for i, p in enumerate(prepared):
            p = np.asarray(p, dtype=np.float32)
            if p.ndim != 2:
                raise TeacherInputError(f"teacher {self.name}, record {ids[i]}: prepared input must be [C, L], got {p.shape}")
            if p.shape[1] == 0:
                continue
            for chunk in self._chunks(p):
                if self.multichannel:
                    seqs.append((i, chunk))
                else:
                    seqs.extend((i, row) for row in chunk)
        out_parts: dict[int, list[tuple[int, np.ndarray]]] = {}
        order = sorted(range(len(seqs)), key=lambda k: seqs[k][1].shape[-1])
        with torch.inference_mode():
            k = 0
            while k < len(order):
                n = seqs[order[k]][1].shape[-1]
                group = [order[k]]
                k += 1
                while k < len(order) and seqs[order[k]][1].shape[-1] == n and len(group) < self.cfg.batch_size:
                    group.append(order[k])
                    k += 1
                self._calls += 1
                embs = self._embed_sequences([seqs[j][1] for j in group])
                for j, e in zip(group, embs):
                    out_parts.setdefault(seqs[j][0], []).append((j, np.asarray(e, dtype=np.float32)))
        results = []
        for i, p in enumerate(prepared):
            parts = [e for _, e in sorted(out_parts.get(i, []), key=lambda t: t[0])]
            results.append(self._combine(parts, p, ids[i]))
        return results

    def _chunks(self, p: np.ndarray) -> list[np.ndarray]:
        ctx = self.effective_context
        if not ctx or p.shape[1] <= ctx:
            return [p]
        # only the chunk policy reaches here with a long input (prepare crops or refuses otherwise);
        # a tail shorter than the minimum gives no tokens rather than a garbage target
        return [p[:, s : s + ctx] for s in range(0, p.shape[1], ctx) if p.shape[1] - s >= self.min_length]

    def _combine(self, parts: list[np.ndarray], prepared: np.ndarray, rid: str) -> np.ndarray:
        if not parts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.multichannel:
            out = np.concatenate(parts, axis=0)
        else:
            c = 1 if self.multichannel else prepared.shape[0]
            per_chunk = [parts[k : k + c] for k in range(0, len(parts), c)]
            out = np.concatenate([np.mean(np.stack(ch), axis=0) for ch in per_chunk], axis=0)
        out = np.ascontiguousarray(out, dtype=np.float32)
        if not np.isfinite(out).all():
            raise TeacherError(
                f"teacher {self.name} returned NaN/inf targets for record {rid}: check the checkpoint "
                f"({self.cfg.checkpoint}) and the record's values (constant or huge inputs?)"
            )
        return out

    def expected_tokens(self, prepared_len: int) -> int:
        """Tokens for a prepared view of this length, chunking included."""
        ctx = self.effective_context
        if prepared_len < self.min_length:
            return 0
        if not ctx or prepared_len <= ctx:
            return self.num_tokens(prepared_len)
        return sum(self.num_tokens(min(ctx, prepared_len - s)) for s in range(0, prepared_len, ctx)
                   if prepared_len - s >= self.min_length)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.cfg.kind, "family": self.family, "fingerprint": self.fingerprint,
                "native_rate_hz": self.native_rate_hz, "context_length": self.effective_context,
                "min_length": self.min_length, "dim": self.dim, "layer": self.layer}


def _device(spec: str):
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def pooled_length(n: int, pool: int) -> int:
    return int(math.ceil(n / pool)) if pool > 1 else n
