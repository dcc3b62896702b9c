"""Frozen features of a task's records: the student's pooled embedding, a teacher's mean-pooled tokens,
MiniRocket's convolution statistics. Each returns float32 [n, D] in the order of the split's records."""
from __future__ import annotations

import numpy as np

from step_dist.evaluate.config import MiniRocketConfig
from step_dist.evaluate.tasks import Split


def _length_batches(values: list[np.ndarray], batch_size: int) -> list[list[int]]:
    """Indices grouped by similar length so padding (and memory) stays small."""
    order = sorted(range(len(values)), key=lambda i: (values[i].shape[1], values[i].shape[0]))
    return [order[i : i + batch_size] for i in range(0, len(order), max(1, batch_size))]


def effective_pooling(pooling: str, *splits: Split) -> str:
    """``channels`` needs one channel count across the task's records; otherwise mean+std stands in."""
    if pooling == "channels" and len({int(v.shape[0]) for s in splits for v in s.values}) > 1:
        return "mean+std"
    return pooling


def student_features(encoder, split: Split, batch_size: int = 16, pooling: str = "mean") -> np.ndarray:
    """Pooled embeddings [n, F] from ``STEPEncoder.encode`` (eval mode, no grad)."""
    out: list[np.ndarray | None] = [None] * len(split)
    for idx in _length_batches(split.values, batch_size):
        # copies: arrays that come through Ray's object store are read-only, which torch warns about
        emb = encoder.encode([np.array(split.values[i]) for i in idx], [split.rates[i] for i in idx], batch_size=len(idx),
                             pooling=pooling)
        emb = np.asarray(emb, dtype=np.float32).reshape(len(idx), -1)
        for j, i in enumerate(idx):
            out[i] = emb[j]
    return np.stack(out)


def pool_teacher_tokens(tokens: np.ndarray, pooling: str) -> np.ndarray:
    """A teacher's tokens [T, D] -> [D] or [2D], the same modes as the student's (model/pooling.py)."""
    mean = tokens.mean(axis=0)
    if pooling in ("mean", "channels"):
        return mean
    return np.concatenate([mean, tokens.std(axis=0) if pooling == "mean+std" else tokens.max(axis=0)])


def teacher_features(teacher, split: Split, batch_size: int = 8, pooling: str = "mean") -> tuple[np.ndarray, int]:
    """Pooled teacher tokens [n, F] and how many records gave no tokens (their features are zeros): a record
    the teacher cannot take (too short for it, say) is counted, not fatal.

    pooling ``channels`` runs the teacher on each channel alone and concatenates the channels' token means,
    the same per-channel view the student's ``channels`` pooling gives."""
    from step_dist.teachers import TeacherInputError

    if pooling == "channels":
        n_ch = int(split.values[0].shape[0]) if len(split) else 1
        parts = [teacher_features(teacher, _one_channel(split, c), batch_size, "mean") for c in range(n_ch)]
        return np.concatenate([p[0] for p in parts], axis=1), sum(p[1] for p in parts)
    width = int(teacher.dim) * (1 if pooling == "mean" else 2)
    out = np.zeros((len(split), width), dtype=np.float32)
    empty = 0
    for idx in _length_batches(split.values, batch_size):
        ok, prepared = [], []
        for i in idx:
            try:
                prepared.append(teacher.prepare(split.values[i], split.rates[i]))
                ok.append(i)
            except TeacherInputError:
                empty += 1
        for i, tokens in zip(ok, teacher.embed(prepared) if prepared else []):
            tokens = np.asarray(tokens, dtype=np.float32)
            if tokens.ndim != 2 or tokens.shape[0] == 0:
                empty += 1
                continue
            out[i] = pool_teacher_tokens(tokens, pooling)
    return out, empty


def _one_channel(split: Split, c: int) -> Split:
    return Split(list(split.ids), [v[c : c + 1] for v in split.values], list(split.rates), list(split.labels))


def _fixed_length(values: list[np.ndarray], n_channels: int, length: int) -> np.ndarray:
    x = np.zeros((len(values), n_channels, length), dtype=np.float32)
    for i, v in enumerate(values):
        n = min(length, v.shape[1])
        x[i, : v.shape[0], :n] = v[:, :n]
    return x


def minirocket_features(train: Split, test: Split, cfg: MiniRocketConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """MiniRocket (aeon) fitted on train and applied to both splits, on raw values.

    MiniRocket needs one length and one channel count: records are cropped to ``cfg.max_length`` (or the
    longest record, if shorter) and zero-padded, and missing channels are zeros.
    """
    try:
        from aeon.transformations.collection.convolution_based import MiniRocket
    except ImportError:
        raise ImportError("the minirocket baseline needs aeon: pip install 'step-dist[demo]' (or aeon)") from None
    longest = max(v.shape[1] for v in train.values + test.values)
    length = max(9, min(cfg.max_length, longest))  # MiniRocket's kernels span 9 samples
    channels = max(v.shape[0] for v in train.values + test.values)
    x_train = _fixed_length(train.values, channels, length)
    x_test = _fixed_length(test.values, channels, length)
    rocket = MiniRocket(n_kernels=cfg.n_kernels, random_state=seed)
    rocket.fit(x_train)
    return np.asarray(rocket.transform(x_train), np.float32), np.asarray(rocket.transform(x_test), np.float32)
