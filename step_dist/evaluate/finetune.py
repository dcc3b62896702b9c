"""STEP's staged fine-tune: (1) the patching module only, (2) patching + classification head, (3) everything.

The head is a linear layer on the pooled embedding, standardised first by a parameter-free batch norm (as in
MAE's linear probing): pooled embeddings can vary little between records compared with their common offset,
which a bare linear layer learns slowly. In stage 1 the head is in the forward pass but frozen,
so the cross-entropy moves only the patching module (plus its soft penalty keeping stride and token count
in bounds). Records are cropped to deterministic views of at most ``max_length`` samples to bound memory.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from step_dist.data.views import ViewConfig, view_window
from step_dist.evaluate.config import FinetuneConfig
from step_dist.evaluate.probe import scores
from step_dist.evaluate.tasks import Split

STAGES = ("patching", "patching+head", "all")


class Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, n_classes: int):
        super().__init__()
        self.encoder = encoder
        d = encoder.config.d_model
        # momentum=None: running statistics are the plain average over all training batches, so a short
        # fine-tune still ends with usable statistics for evaluation
        self.norm = nn.BatchNorm1d(d, affine=False, momentum=None)
        self.head = nn.Linear(d, n_classes)

    def forward(self, values, lengths, channel_mask, rates):
        out = self.encoder(values, lengths, channel_mask=channel_mask, sampling_rate_hz=rates)
        return self.head(self.norm(out.pooled)), out.penalty


def set_stage(model: Classifier, stage: str) -> int:
    """Freeze everything the stage does not train; returns the number of trainable parameters."""
    if stage not in STAGES:
        raise ValueError(f"unknown fine-tune stage {stage!r}: use one of {STAGES}")
    trainable = {
        "patching": [model.encoder.patching],
        "patching+head": [model.encoder.patching, model.head],
        "all": [model],
    }[stage]
    for p in model.parameters():
        p.requires_grad_(False)
    for module in trainable:
        for p in module.parameters():
            p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _crops(split: Split, max_length: int, seed: int) -> list[np.ndarray]:
    cfg = ViewConfig(max_length=max_length, min_length=1, seed=seed)
    out = []
    for rid, v in zip(split.ids, split.values):
        w = view_window(rid, v.shape[1], cfg)
        out.append(np.array(v[:, w.start : w.stop]))  # writable copies (Ray hands tasks read-only arrays)
    return out


def _batch(values: list[np.ndarray], rates: list[float], idx, device):
    from step_dist.model import collate

    x, lengths, mask = collate([values[i] for i in idx])
    r = torch.tensor([rates[i] for i in idx], dtype=torch.float32)
    return x.to(device), lengths.to(device), mask.to(device), r.to(device)


@torch.no_grad()
def calibrate_norm(model: Classifier, values: list[np.ndarray], rates: list[float], batch_size: int, device) -> None:
    """Recompute the head's normalisation statistics over the training records with the final encoder: the
    statistics gathered while the encoder was still changing describe features that no longer exist."""
    model.eval()
    model.norm.reset_running_stats()
    model.norm.train()
    for b in range(0, len(values), batch_size):
        idx = list(range(b, min(b + batch_size, len(values))))
        model(*_batch(values, rates, idx, device))
    model.norm.eval()


@torch.no_grad()
def predict(model: Classifier, values: list[np.ndarray], rates: list[float], batch_size: int, device) -> np.ndarray:
    model.eval()
    order = sorted(range(len(values)), key=lambda i: values[i].shape[1])
    pred = np.zeros(len(values), dtype=np.int64)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        logits, _ = model(*_batch(values, rates, idx, device))
        pred[idx] = logits.argmax(-1).cpu().numpy()
    return pred


def finetune(
    encoder: nn.Module, train: Split, test: Split, classes: list[str], cfg: FinetuneConfig, seed: int,
    device: str | torch.device = "cpu",
) -> dict:
    """Run the three stages on ``train``, score on ``test``; returns metrics, per-stage trainable counts and losses."""
    torch.manual_seed(seed)
    device = torch.device(device)
    model = Classifier(encoder, len(classes)).to(device)
    x_train, y_train = _crops(train, cfg.max_length, seed), torch.from_numpy(train.y(classes))
    x_test = _crops(test, cfg.max_length, seed)
    gen = torch.Generator().manual_seed(seed)
    stages = []
    for stage, epochs, lr in zip(STAGES, cfg.stage_epochs, cfg.lr):
        n_trainable = set_stage(model, stage)
        params = [p for p in model.parameters() if p.requires_grad]
        model.train()
        t0, steps, losses = time.perf_counter(), 0, []
        # a fixed-patching student has no patching parameters: its stage 1 has nothing to train
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay) if params else None
        for _ in range(epochs if opt is not None else 0):
            perm = torch.randperm(len(x_train), generator=gen).tolist()
            for b in range(0, len(perm), cfg.batch_size):
                if cfg.max_steps_per_stage and steps >= cfg.max_steps_per_stage:
                    break
                idx = perm[b : b + cfg.batch_size]
                logits, penalty = model(*_batch(x_train, train.rates, idx, device))
                loss = nn.functional.cross_entropy(logits, y_train[idx].to(device)) + cfg.penalty_weight * penalty
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"fine-tune stage {stage}: non-finite loss at step {steps}; lower the lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                steps += 1
        stages.append({
            "stage": stage, "trainable_params": n_trainable, "steps": steps, "lr": lr,
            "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
            "seconds": time.perf_counter() - t0,
        })
    calibrate_norm(model, x_train, train.rates, cfg.batch_size, device)
    pred = predict(model, x_test, test.rates, cfg.batch_size, device)
    return {**scores(test.y(classes), pred, len(classes)), "stages": stages}
