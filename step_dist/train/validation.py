"""Distillation measured on records the student never trains on (issue 16, item 1).

The driver takes up to ``data.validation_max_views`` views of the held-out slice (data/split.py) through the
same pipeline as training (validation, views, teacher targets from the cache or the pools) and puts them in
the object store once. Every ``train.validate_every`` steps each rank scores an equal share of them (equal, so
ZeRO-3's collective forward runs the same number of times on every rank) and the sums are all-reduced:

    val/loss/<teacher>   token-weighted distillation loss, as in training but on unseen records
    val/distill_loss     their unweighted mean (the same definition as the training figure)
    val/erank_tokens     effective rank (exp of the spectral entropy) of the student's real tokens
    val/erank_pooled     the same of its pooled (mean) embeddings, one per view

A student collapsing onto what its targets share shows first as falling effective ranks while the loss still
looks fine; a student that memorises shows as a validation loss that stops following the training loss.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any

import torch
import torch.distributed as dist


VALIDATION_READ_FACTOR = 4  # held-out views read per view kept (their targets pass through the driver)


def collect_rows(cfg) -> list[dict[str, Any]]:
    """Driver side: the validation views with their targets, in a stable order (empty without a slice)."""
    if cfg.data.validation_fraction <= 0:
        return []
    import ray.data

    from step_dist.data.pipeline import attach_targets, build_view_dataset

    ctx = ray.data.DataContext.get_current()
    before = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True  # the same views every run: limit() keeps the first ones
    try:
        ds = attach_targets(build_view_dataset(cfg.data, None, part="validation"), cfg)
        # a corpus is written source by source: the first N held-out views would all be the first source's
        # (the demo's first 96 were all seismic, and CREPE's validation loss had no record). Read a few times
        # more than needed and keep the ones a hash ranks first, which spreads them over the sources read.
        rows = ds.limit(VALIDATION_READ_FACTOR * cfg.data.validation_max_views).take_all()
    finally:
        ctx.execution_options.preserve_order = before
    rows.sort(key=lambda r: hashlib.sha256(f"{r['id']}|{r['view_id']}".encode()).digest())
    return sorted(rows[: cfg.data.validation_max_views], key=lambda r: (str(r["id"]), str(r["view_id"])))


class Spectrum:
    """Running first and second moments of feature vectors, all-reducible: the effective rank at the end."""

    def __init__(self, dim: int, device: torch.device):
        self.n = torch.zeros((), dtype=torch.float64, device=device)
        self.s = torch.zeros(dim, dtype=torch.float64, device=device)
        self.ss = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float64)
        self.n += x.shape[0]
        self.s += x.sum(0)
        self.ss += x.T @ x

    def tensors(self) -> list[torch.Tensor]:
        return [self.n, self.s, self.ss]

    def erank(self) -> float:
        if float(self.n) < 2:
            return float("nan")
        mu = self.s / self.n
        cov = self.ss / self.n - torch.outer(mu, mu)
        ev = torch.linalg.eigvalsh(cov).clamp_min(0)
        if float(ev.sum()) <= 0:
            return float("nan")
        p = ev / ev.sum()
        return float(torch.exp(-(p * torch.log(p + 1e-30)).sum()))


@torch.no_grad()
def validation_metrics(module, rows: list[dict[str, Any]], heads_by_name: dict, batch_size: int, rank: int,
                       world: int, device: torch.device, param_dtype: torch.dtype) -> dict[str, float]:
    from step_dist.data.batches import collate

    names = list(heads_by_name)
    usable = (len(rows) // max(world, 1)) * max(world, 1)
    mine = sorted(rows[rank:usable:world], key=lambda r: int(r["length"]))
    d = module.student.config.d_model
    tokens_spec, pooled_spec = Spectrum(d, device), Spectrum(d, device)
    loss_sum = torch.zeros(len(names), dtype=torch.float64, device=device)
    tok_sum = torch.zeros(len(names), dtype=torch.float64, device=device)
    was_training = module.training
    module.eval()
    try:
        for s in range(0, len(mine), batch_size):
            batch = collate(mine[s : s + batch_size], names, heads_by_name).to(device)
            batch.values = batch.values.to(param_dtype)
            terms = module(batch)
            for i, n in enumerate(names):
                k = float(terms[f"tokens/{n}"])
                loss_sum[i] += float(terms[f"loss/{n}"]) * k
                tok_sum[i] += k
            out = module.student(batch.values, batch.lengths, batch.channel_mask, batch.sampling_rate_hz)
            tokens_spec.add(out.tokens[out.token_mask].float())
            pooled_spec.add(out.pooled.float())
    finally:
        module.train(was_training)
    parts = [loss_sum, tok_sum, *tokens_spec.tensors(), *pooled_spec.tensors()]
    if dist.is_initialized() and world > 1:
        for t in parts:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    m: dict[str, float] = {}
    for i, n in enumerate(names):
        m[f"val/loss/{n}"] = float(loss_sum[i] / tok_sum[i]) if float(tok_sum[i]) else math.nan
    finite = [m[f"val/loss/{n}"] for n in names if math.isfinite(m[f"val/loss/{n}"])]
    m["val/distill_loss"] = sum(finite) / len(finite) if finite else math.nan
    m["val/erank_tokens"] = tokens_spec.erank()
    m["val/erank_pooled"] = pooled_spec.erank()
    m["val/views"] = float(usable)
    return m
