"""The DeepSpeed side of a worker: its config from the recipe, the engine, gradient norms, the plain export.

Everything else in the worker (train/loop.py) talks to the engine through the few calls a DeepSpeed engine
offers (forward, backward, step, is_gradient_accumulation_boundary, get_global_grad_norm, get_lr,
save_checkpoint, load_checkpoint, module), so the loop can be tested with a plain-PyTorch stand-in.
"""
from __future__ import annotations

import math
import os
import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def effective_zero_stage(train_cfg, world_size: int) -> int:
    """ZeRO shards state across ranks: with one rank there is nothing to shard, and stages 1-3 only add
    bookkeeping (~50 ms a step for the tiny student, measured in jobs/bench_pipeline.py). One worker therefore
    runs stage 0 unless it offloads optimizer state to CPU (which needs stage >= 1)."""
    if world_size == 1 and not train_cfg.offload_optimizer:
        return 0
    return train_cfg.zero_stage


def deepspeed_config(cfg, bf16: bool, world_size: int = 2) -> dict[str, Any]:
    t = cfg.train
    zero: dict[str, Any] = {"stage": effective_zero_stage(t, world_size)}
    if t.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    return {
        "train_micro_batch_size_per_gpu": cfg.data.batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        # a torch.optim optimizer is passed in (DeepSpeed's own "AdamW" would JIT-compile C++ ops on CPU)
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def optimizer_and_schedule(module: torch.nn.Module, cfg):
    """AdamW with linear warm-up and cosine decay (train/schedule.py), stepped once per optimizer step."""
    from step_dist.train.schedule import lr_factor

    o, t = cfg.optim, cfg.train
    optimizer = torch.optim.AdamW(module.parameters(), lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, o.warmup_steps, t.max_steps, o.min_lr_ratio)
    )
    return optimizer, scheduler


def deepspeed_engine(module: torch.nn.Module, cfg, world: int, bf16: bool):
    """(engine, ZeRO stage actually used) for ``module`` on this rank; the process group already exists."""
    import deepspeed  # a worker imports DeepSpeed inside the train function (ray#50406)

    optimizer, scheduler = optimizer_and_schedule(module, cfg)
    ds_cfg = deepspeed_config(cfg, bf16, world)
    engine, _, _, _ = deepspeed.initialize(
        model=module, optimizer=optimizer, lr_scheduler=scheduler, config=ds_cfg, dist_init_required=False
    )
    zero_stage = ds_cfg["zero_optimization"]["stage"]
    if world == 1 and zero_stage == 0:
        # one rank: averaging gradients over a group of one copies every gradient into a flat buffer and back
        # each step (~5% of a tiny student's CPU step, jobs/bench_pipeline.py) for nothing
        engine.enable_backward_allreduce = False
    return engine, zero_stage


def local_grad_norm(module: torch.nn.Module) -> float:
    sq = 0.0
    for p in module.parameters():
        if p.grad is not None:
            sq += float(p.grad.detach().float().pow(2).sum())
    return math.sqrt(sq)


def export_student(student: torch.nn.Module, folder: str, rank: int, zero_stage: int) -> None:
    """Rank 0 writes a plain float32 export; under ZeRO-3 all ranks first gather the partitioned weights."""
    import contextlib

    gather = contextlib.nullcontext()
    if zero_stage == 3:
        import deepspeed

        gather = deepspeed.zero.GatheredParameters(list(student.parameters()), modifier_rank=None)
    with gather:
        if rank == 0:
            from step_dist.model import STEPEncoder

            clean = STEPEncoder(student.config)
            clean.load_state_dict({k: v.detach().float().cpu() for k, v in student.state_dict().items()})
            clean.save_pretrained(os.path.join(folder, "export"))
