"""The per-worker training loop (runs inside each Ray Train worker), top to bottom:

    build student + heads -> DeepSpeed engine -> restore checkpoint -> for each step:
        next micro-batch (ranks agree it exists) -> forward -> finite guard -> backward/step -> metrics
        -> every N steps: checkpoint (DeepSpeed state + data position + RNG + plain export) to Ray storage
"""
from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


METRICS_SYNC_S = 30.0  # how stale a remote run's metrics.jsonl in storage may get (one small PUT each time)


def _say(message: str, flush: bool = True) -> None:
    """A worker's line, written once. Ray Train V2 replaces print() on its workers with a version that both
    echoes the line and logs it through the root logger, which printed every step line twice; writing to the
    stream directly keeps one copy (in the worker's log file, or the console with --verbose)."""
    import sys

    sys.stdout.write(message + "\n")
    if flush:
        sys.stdout.flush()


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
        "gradient_clipping": t.grad_clip if hasattr(t, "grad_clip") else cfg.optim.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        # a torch.optim optimizer is passed in (DeepSpeed's own "AdamW" would JIT-compile C++ ops on CPU)
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def _agree(flag: bool, device: torch.device) -> bool:
    """True only if every rank says True (a tiny all-reduce: ranks must run the same number of steps)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def _mean_across_ranks(values: list[float], device: torch.device) -> list[float]:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / dist.get_world_size()).tolist()


def _sum_across_ranks(values: list[float], device: torch.device) -> list[float]:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def train_loop_per_worker(loop_cfg: dict[str, Any]) -> None:
    import deepspeed  # imported inside the worker (ray#50406)
    import ray.train

    from step_dist import storage
    from step_dist.config import from_dict
    from step_dist.data.batches import bucketed_micro_batches, collate
    from step_dist.distill.module import DistillationModule, HeadConfig
    from step_dist.model import STEPEncoder, StudentConfig
    from step_dist.train.checkpoint import (
        TrainerState, read_trainer_state, restore_rng, write_worker_files,
    )
    from step_dist.train.config import PretrainConfig
    from step_dist.train.metrics import Tracker, progress_line
    from step_dist.train.schedule import lr_factor

    cfg: PretrainConfig = from_dict(PretrainConfig, loop_cfg["config"])
    heads = [HeadConfig(**h) for h in loop_cfg["heads"]]
    run_dir: str = loop_cfg["run_dir"]
    # > 0 (sweeps): also report metrics without a checkpoint every N steps, so Tune's schedulers see progress
    report_every = int(loop_cfg.get("report_every", 0))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    use_cuda = cfg.train.use_gpu and torch.cuda.is_available()
    device = torch.device("cuda", ctx.get_local_rank()) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    bf16 = use_cuda and cfg.train.precision in ("auto", "bf16")
    t_cfg, o_cfg = cfg.train, cfg.optim

    # the same seed on every rank: identical initial weights without a broadcast
    seed_everything(t_cfg.seed)
    if t_cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    student_kwargs = dict(cfg.student)
    size = student_kwargs.pop("size", "tiny")
    student = STEPEncoder(StudentConfig.named(size, **student_kwargs))
    module = DistillationModule(student, heads, penalty_weight=t_cfg.penalty_weight)
    optimizer = torch.optim.AdamW(module.parameters(), lr=o_cfg.lr, betas=tuple(o_cfg.betas), weight_decay=o_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, o_cfg.warmup_steps, t_cfg.max_steps, o_cfg.min_lr_ratio)
    )
    ds_cfg = deepspeed_config(cfg, bf16, world)
    zero_stage = ds_cfg["zero_optimization"]["stage"]
    ds_cfg["gradient_clipping"] = o_cfg.grad_clip
    engine, _, _, _ = deepspeed.initialize(
        model=module, optimizer=optimizer, lr_scheduler=scheduler, config=ds_cfg, dist_init_required=False
    )
    if world == 1 and zero_stage == 0:
        # one rank: averaging gradients over a group of one copies every gradient into a flat buffer and back
        # each step (~5% of a tiny student's CPU step, jobs/bench_pipeline.py) for nothing
        engine.enable_backward_allreduce = False
    param_dtype = torch.bfloat16 if bf16 else torch.float32

    # resume: DeepSpeed state right after initialize (ZeRO-3 needs exactly that), then position and RNG
    state = TrainerState()
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = read_trainer_state(d)
            from step_dist.train.safety import check_checkpoint_files

            check_checkpoint_files(d, tuple(t_cfg.trusted_pickle_globals))  # before any unpickling
            engine.load_checkpoint(os.path.join(d, "deepspeed"), tag=state.tag)
            restore_rng(d, rank)
        if rank == 0:
            _say(f"[step-dist] resumed from {state.tag}: epoch {state.epoch}, {state.micro_in_epoch} micro-batches into it", flush=True)

    from step_dist.train.faults import PreemptionWatch
    from step_dist.train.ledger import Ledger

    ledger = Ledger(run_dir, rank, enabled=t_cfg.account_records)
    preemption = PreemptionWatch(t_cfg.preemption_check_every)
    if rank == 0:
        _record_restart(run_dir, state.step, resumed=ckpt is not None)
        ledger.forget_after(state.step)  # segments of checkpoints written after this one but never registered
    remote = storage.parse_uri(run_dir).is_remote
    local_out = tempfile.mkdtemp(prefix="step-dist-metrics-") if remote else storage.parse_uri(run_dir).path
    if rank == 0:
        _carry_metrics_over(run_dir, local_out, state.step)
    tracker = Tracker(local_out, kind=cfg.tracker, run_name=cfg.name, enabled=(rank == 0))

    def sync_outputs() -> None:
        if rank == 0 and remote:
            tracker.flush()
            storage.upload_dir(local_out, run_dir)
        last_sync[0] = time.time()

    last_sync = [time.time()]

    def publish_metrics() -> None:
        """A remote run's metrics.jsonl otherwise reaches storage only with each checkpoint: every
        METRICS_SYNC_S, put it there, so `step-dist status` (and the driver's progress line) see recent steps."""
        if rank == 0 and remote and time.time() - last_sync[0] >= METRICS_SYNC_S:
            with open(os.path.join(local_out, "metrics.jsonl"), "rb") as f:
                storage.write_bytes(run_dir.rstrip("/") + "/metrics.jsonl", f.read())
            last_sync[0] = time.time()

    def save_checkpoint(metrics: dict[str, float]) -> None:
        folder = tempfile.mkdtemp(prefix="step-dist-ckpt-")
        try:
            engine.save_checkpoint(os.path.join(folder, "deepspeed"), tag=state.tag)
            write_worker_files(folder, state, rank)
            _export_student(engine.module.student, folder, rank, zero_stage)
            ledger.flush(state.step)
            sync_outputs()
            quarantined = _quarantine_count(run_dir) if rank == 0 else 0
            if rank == 0 and quarantined:
                _say(f"[step-dist] {quarantined} record(s)/shard(s) quarantined so far (see {run_dir}/quarantine)", flush=True)
            ray.train.report(
                {**metrics, "step": state.step, "epoch": state.epoch, "quarantined": float(quarantined)},
                checkpoint=ray.train.Checkpoint.from_directory(folder),
                checkpoint_dir_name=f"checkpoint_{state.tag}",
            )
            # report() returns once this rank's files are uploaded, but the controller registers the checkpoint
            # later: a worker killed in between would restart from the previous one and lose two intervals.
            # Wait until it is committed, so a failure after a checkpoint costs at most one interval.
            ray.train.get_all_reported_checkpoints(consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    shard = ray.train.get_dataset_shard("train")
    teacher_names = [h.name for h in heads]
    heads_by_name = {h.name: h for h in heads}
    val_rows = ray.get(loop_cfg["validation"]) if loop_cfg.get("validation") is not None else []

    def validate() -> dict[str, float]:
        from step_dist.train.validation import validation_metrics

        vm = validation_metrics(engine.module, val_rows, heads_by_name, cfg.data.batch_size, rank, world, device, param_dtype)
        tracker.log(state.step, vm)
        if rank == 0:
            per = " ".join(f"{k[9:]}={v:.4f}" for k, v in sorted(vm.items()) if k.startswith("val/loss/"))
            _say(f"[step-dist] validation at step {state.step}: distill loss {vm['val/distill_loss']:.4f} ({per}) | "
                  f"effective rank tokens {vm['val/erank_tokens']:.1f}, pooled {vm['val/erank_pooled']:.1f} "
                  f"over {int(vm['val/views'])} held-out views", flush=True)
        return vm

    if val_rows and state.step == 0:
        validate()  # the student at init: the reference the curve starts from
    last_metrics: dict[str, float] = {}
    report_window: list[float] = []
    engine.train()
    while state.step < t_cfg.max_steps:
        # a corpus is written source by source; without mixing, an epoch would train on one domain after the
        # other and forget the first by the end. Seeded per epoch, so a resumed run replays the same order.
        shuffle = {"local_shuffle_buffer_size": cfg.data.shuffle_buffer,
                   "local_shuffle_seed": t_cfg.seed * 100_003 + state.epoch} if cfg.data.shuffle_buffer else {}
        chunks = shard.iter_batches(batch_size=cfg.data.bucket_rows, batch_format="numpy", prefetch_batches=2, **shuffle)
        micro = bucketed_micro_batches(chunks, cfg.data.batch_size)
        # resume mid-epoch: the pipeline order is deterministic, so skip what the checkpoint already trained on
        # (a checkpoint taken at the very end of an epoch skips all of it and moves on to the next epoch)
        resumed_into_epoch = state.micro_in_epoch
        for _ in range(resumed_into_epoch):
            next(micro, None)
        epoch_steps = 0
        window = _new_window()
        while state.step < t_cfg.max_steps:
            t_wait = time.perf_counter()
            rows = next(micro, None)
            window["wait"] += time.perf_counter() - t_wait
            if not _agree(rows is not None, device):
                break
            batch = collate(rows, teacher_names, heads_by_name).to(device)
            batch.values = batch.values.to(param_dtype)
            terms = engine(batch)
            loss = terms["loss"]
            state.micro_in_epoch += 1
            if not _agree(bool(torch.isfinite(loss).item()), device):
                # every rank skips together (a lone skip would desynchronise the gradient all-reduce)
                state.skipped_steps += 1
                if rank == 0:
                    _say(f"[step-dist] non-finite loss at step {state.step}: micro-step skipped ({state.skipped_steps} so far)", flush=True)
                continue
            engine.backward(loss)
            boundary = engine.is_gradient_accumulation_boundary()
            # stages 0-1 keep whole gradients on every rank: measure them before step() clears them
            local_norm = _local_grad_norm(engine.module) if boundary and zero_stage < 2 else None
            engine.step()
            ledger.add(state.epoch, rows)
            window["samples"] += len(rows)
            window["tokens"] += int(sum(float(v) for k, v in terms.items() if k.startswith("tokens/")))
            if not boundary:
                continue
            state.step += 1
            epoch_steps += 1
            state.samples_seen += len(rows) * world * t_cfg.grad_accum
            reported = local_norm if local_norm is not None else engine.get_global_grad_norm()
            grad_norm = float(reported) if reported is not None else float("nan")
            if reported is not None and not math.isfinite(grad_norm):
                state.skipped_steps += 1  # bf16 overflow: DeepSpeed skipped the update (DeepSpeed#8415)
            keys = sorted(k for k in terms if k.startswith("loss") or k == "penalty")
            means = _mean_across_ranks([float(terms[k].detach()) for k in keys], device)
            elapsed = time.perf_counter() - window["t0"]
            cpu = time.process_time() - window["cpu0"]
            totals = _sum_across_ranks([window["samples"], window["tokens"]], device)
            m = dict(zip(keys, means))
            m.update(
                grad_norm=grad_norm,
                lr=float(engine.get_lr()[0]),
                samples_per_s=totals[0] / max(elapsed, 1e-9),
                tokens_per_s=totals[1] / max(elapsed, 1e-9),
                data_wait_frac=window["wait"] / max(elapsed, 1e-9),
                # CPU seconds of this worker process per wall second: well under 1 on a CPU run means the
                # process waited for a core (other processes) or for data; on GPU, near 1 means a CPU-bound loop
                cpu_util=cpu / max(elapsed, 1e-9),
                skipped_steps=float(state.skipped_steps),
                epoch=float(state.epoch),
            )
            # unweighted mean over teachers: comparable across sweeps of teacher weights (not of loss types)
            m["distill_loss"] = sum(m[f"loss/{n}"] for n in teacher_names) / max(len(teacher_names), 1)
            tracker.log(state.step, m)
            publish_metrics()
            last_metrics = m
            if rank == 0 and (state.step % t_cfg.log_every == 0 or state.step == 1):
                _say("[step-dist] " + progress_line(state.step, t_cfg.max_steps, m), flush=True)
            window = _new_window()
            if val_rows and (state.step % t_cfg.validate_every == 0 or state.step == t_cfg.max_steps):
                m = {**m, **validate()}
            is_ckpt = state.step % t_cfg.checkpoint_every == 0 or state.step == t_cfg.max_steps
            if report_every:
                report_window.append(m["distill_loss"])
                if is_ckpt or state.step % report_every == 0:
                    m = {**m, "distill_loss_avg": sum(report_window) / len(report_window)}
                    report_window = []
                    if not is_ckpt:  # every rank reports (a barrier) at the same steps
                        ray.train.report({**m, "step": state.step, "epoch": state.epoch})
            if is_ckpt:
                save_checkpoint(m)
            elif preemption.should_checkpoint(state.step):
                if rank == 0:
                    _say(f"[step-dist] a node of this run is being preempted: just-in-time checkpoint at step {state.step}", flush=True)
                save_checkpoint(m)
        if state.step >= t_cfg.max_steps:
            break
        if epoch_steps == 0 and resumed_into_epoch == 0:
            raise RuntimeError(
                "the training data produced no batch in a whole epoch: every record may have been quarantined "
                f"(see {run_dir}/quarantine) or there are fewer views than data.batch_size x train.num_workers"
            )
        state.epoch += 1
        state.micro_in_epoch = 0
    if state.step % t_cfg.checkpoint_every != 0 and state.step != t_cfg.max_steps:
        save_checkpoint(last_metrics)
    tracker.close()
    sync_outputs()


def _new_window() -> dict[str, float]:
    """Counters of one optimizer step's wall time, CPU time, data wait and work, for the step's metrics."""
    return {"t0": time.perf_counter(), "cpu0": time.process_time(), "wait": 0.0, "samples": 0, "tokens": 0}


def _quarantine_count(run_dir: str) -> int:
    """The running count of bad records and shards the pipeline has set aside in this run so far."""
    from step_dist.data.pipeline import read_quarantine

    return len(read_quarantine(run_dir.rstrip("/") + "/quarantine"))


def _record_restart(run_dir: str, resumed_step: int, resumed: bool) -> None:
    """Append to outputs/restarts.jsonl what a restart cost: the steps logged before the failure that the
    resumed run trains again (read from metrics.jsonl before it is cut back to the checkpoint). A first start
    (no checkpoint, nothing logged) records nothing."""
    import json

    from step_dist import storage

    try:
        data = storage.read_bytes(run_dir.rstrip("/") + "/metrics.jsonl")
        last = max((int(json.loads(x).get("step", 0)) for x in data.decode().splitlines() if x.strip()), default=0)
    except FileNotFoundError:
        last = 0
    if not resumed and last == 0:
        return
    uri = run_dir.rstrip("/") + "/restarts.jsonl"
    try:
        before = storage.read_bytes(uri)
    except FileNotFoundError:
        before = b""
    entry = {"time": time.time(), "resumed_from_step": resumed_step, "last_logged_step": last,
             "steps_lost": max(last - resumed_step, 0)}
    storage.write_bytes(uri, before + (json.dumps(entry) + "\n").encode())


def _carry_metrics_over(run_dir: str, local_out: str, resumed_step: int) -> None:
    """Keep the metrics of the steps the checkpoint covers (and only those: steps logged after it and before a
    crash are trained again), so a resumed run's metrics.jsonl reads as one run."""
    import json

    from step_dist import storage

    try:
        data = storage.read_bytes(run_dir.rstrip("/") + "/metrics.jsonl")
    except FileNotFoundError:
        data = b""
    rows = [json.loads(x) for x in data.decode().splitlines() if x.strip()]
    keep = [r for r in rows if r.get("step", 0) <= resumed_step]
    os.makedirs(local_out, exist_ok=True)
    with open(os.path.join(local_out, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in keep)


def _local_grad_norm(module: torch.nn.Module) -> float:
    sq = 0.0
    for p in module.parameters():
        if p.grad is not None:
            sq += float(p.grad.detach().float().pow(2).sum())
    return math.sqrt(sq)


def _export_student(student: torch.nn.Module, folder: str, rank: int, zero_stage: int) -> None:
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
