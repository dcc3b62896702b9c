"""The per-worker trainer (one in each Ray Train worker), top to bottom:

    set-up: student + heads -> DeepSpeed engine -> restore checkpoint (engine, data position, RNG) -> outputs
    train(): for each epoch, for each micro-batch the ranks agree exists:
        train_step (forward -> finite guard -> backward/step -> metrics)
        -> the policy's plan for the step: validate, report, checkpoint (train/policy.py)

Its parts: ``WorkerSpec`` (what the driver hands each worker), ``RayTrainSession`` (Ray Train, train/session.py),
the engine (train/engine.py), ``StepWindow`` (one step's throughput, train/metrics.py), ``StepPolicy`` and
``RunOutputs`` (metrics files, train/outputs.py). Everything but the engine and the session is plain Python, so
the trainer runs in a unit test with a plain-PyTorch engine and in-memory batches (tests/test_train_worker.py).
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

import torch

from step_dist.distill.module import HeadConfig
from step_dist.train.checkpoint import TrainerState, read_trainer_state, restore_rng, write_worker_files
from step_dist.train.config import PretrainConfig
from step_dist.train.engine import deepspeed_engine, export_student, local_grad_norm, seed_everything
from step_dist.train.metrics import StepWindow, progress_line
from step_dist.train.outputs import RunOutputs, quarantine_count, record_restart
from step_dist.train.policy import Plan, StepPolicy
from step_dist.train.session import say


@dataclass
class WorkerSpec:
    """What the driver hands every Ray Train worker: the checked recipe, the heads (with the teachers' widths
    asked of the teachers), where the run's outputs go, and the held-out views."""

    config: PretrainConfig
    heads: list[HeadConfig]
    run_dir: str  # the run's outputs URI ({storage}/{name}/outputs)
    report_every: int = 0  # > 0 (sweeps): also report metrics without a checkpoint every N steps
    validation: Any = None  # a Ray ObjectRef of the validation rows (train/validation.py), or None


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's entry point: ``loop_config`` is {"spec": WorkerSpec}."""
    import deepspeed  # noqa: F401 - imported inside the worker, before anything else of it (ray#50406)
    import ray

    from step_dist.train.session import RayTrainSession

    spec: WorkerSpec = loop_config["spec"]
    val_rows = ray.get(spec.validation) if spec.validation is not None else []
    WorkerTrainer(spec, RayTrainSession(spec.config.train.use_gpu), val_rows).train()


class WorkerTrainer:
    """One rank's training: built and restored in ``__init__``, run by ``train()``.

    ``session``: Ray Train as this worker sees it (train/session.RayTrainSession or a stand-in with ``ranks``,
    ``resume_folder()``, ``iter_batches(**kw)``, ``report(metrics, folder, name)``). ``make_engine(module, cfg,
    world, bf16) -> (engine, zero_stage)``: DeepSpeed by default."""

    def __init__(self, spec: WorkerSpec, session, val_rows: list[dict[str, Any]] | None = None,
                 make_engine: Callable = deepspeed_engine):
        from step_dist.distill.module import DistillationModule
        from step_dist.model import STEPEncoder
        from step_dist.train.faults import PreemptionWatch
        from step_dist.train.ledger import Ledger

        cfg = self.cfg = spec.config
        t = cfg.train
        self.spec, self.session, self.ranks = spec, session, session.ranks
        self.heads = {h.name: h for h in spec.heads}
        self.val_rows = list(val_rows or [])
        bf16 = self.ranks.device.type == "cuda" and t.precision in ("auto", "bf16")
        self.param_dtype = torch.bfloat16 if bf16 else torch.float32
        # the same seed on every rank: identical initial weights without a broadcast
        seed_everything(t.seed)
        if t.deterministic:
            torch.use_deterministic_algorithms(True)
        module = DistillationModule(STEPEncoder(cfg.student_config()), spec.heads, penalty_weight=t.penalty_weight)
        self.engine, self.zero_stage = make_engine(module, cfg, self.ranks.world, bf16)
        self.state, resumed = self.restore()
        self.ledger = Ledger(spec.run_dir, self.ranks.rank, enabled=t.account_records)
        if self.ranks.lead:
            record_restart(spec.run_dir, self.state.step, resumed=resumed)
            self.ledger.forget_after(self.state.step)  # segments of checkpoints written but never registered
        self.outputs = RunOutputs(spec.run_dir, self.ranks.lead, self.state.step, cfg.tracker, cfg.name)
        self.policy = StepPolicy(t.max_steps, t.checkpoint_every, t.validate_every if self.val_rows else 0,
                                 spec.report_every, PreemptionWatch(t.preemption_check_every).should_checkpoint)

    def restore(self) -> tuple[TrainerState, bool]:
        """DeepSpeed state right after initialize (ZeRO-3 needs exactly that), then data position and RNG."""
        from step_dist.train.safety import check_checkpoint_files

        with self.session.resume_folder() as d:
            if d is None:
                return TrainerState(), False
            state = read_trainer_state(d)
            check_checkpoint_files(d, tuple(self.cfg.train.trusted_pickle_globals))  # before any unpickling
            self.engine.load_checkpoint(os.path.join(d, "deepspeed"), tag=state.tag)
            restore_rng(d, self.ranks.rank)
        if self.ranks.lead:
            say(f"[step-dist] resumed from {state.tag}: epoch {state.epoch}, {state.micro_in_epoch} micro-batches into it")
        return state, True

    def train(self) -> None:
        """Epochs of micro-batches until train.max_steps; after each optimizer step, its metrics are logged and
        the policy's plan for the step (validate, report, checkpoint) is followed, on every rank alike."""
        s, max_steps = self.state, self.cfg.train.max_steps
        if self.val_rows and s.step == 0:
            self.validate()  # the student at init: the reference the curve starts from
        last: dict[str, float] = {}
        self.engine.train()
        while s.step < max_steps:
            resumed_into_epoch = s.micro_in_epoch
            micro, epoch_steps, window = self.epoch_batches(), 0, StepWindow()
            while s.step < max_steps:
                rows = window.next_batch(micro)
                if not self.ranks.agree(rows is not None):
                    break
                m = self.train_step(rows, window)
                if m is None:  # a skipped micro-batch, or one inside a gradient accumulation
                    continue
                epoch_steps += 1
                self.log_step(m)
                last, window = m, StepWindow()
                self.follow(self.policy.plan(s.step, m["distill_loss"]), m)
            if s.step >= max_steps:
                break
            if epoch_steps == 0 and resumed_into_epoch == 0:
                raise RuntimeError(
                    "the training data produced no batch in a whole epoch: every record may have been quarantined "
                    f"(see {self.spec.run_dir}/quarantine) or there are fewer views than data.batch_size x "
                    "train.num_workers"
                )
            s.epoch += 1
            s.micro_in_epoch = 0
        if not self.policy.scheduled_checkpoint(s.step):  # a run resumed past a lowered train.max_steps
            self.save_checkpoint(last)
        self.outputs.close()

    def epoch_batches(self):
        """This epoch's micro-batches, past the ones a checkpoint taken inside it already trained on."""
        from step_dist.data.batches import bucketed_micro_batches

        cfg, s = self.cfg, self.state
        # a corpus is written source by source; without mixing, an epoch would train on one domain after the
        # other and forget the first by the end. Seeded per epoch, so a resumed run replays the same order.
        shuffle = {"local_shuffle_buffer_size": cfg.data.shuffle_buffer,
                   "local_shuffle_seed": cfg.train.seed * 100_003 + s.epoch} if cfg.data.shuffle_buffer else {}
        chunks = self.session.iter_batches(batch_size=cfg.data.bucket_rows, batch_format="numpy",
                                           prefetch_batches=2, **shuffle)
        micro = bucketed_micro_batches(chunks, cfg.data.batch_size)
        # the pipeline order is deterministic, so skipping a prefix replays the checkpoint's position exactly
        # (a checkpoint taken at the very end of an epoch skips all of it and moves on to the next epoch)
        for _ in range(s.micro_in_epoch):
            next(micro, None)
        return micro

    def train_step(self, rows: list[dict[str, Any]], window: StepWindow) -> dict[str, float] | None:
        """One micro-batch: forward, finite guard, backward, optimizer step. Returns the step's metrics when it
        completed an optimizer step, None when it was skipped or only accumulated gradients."""
        from step_dist.data.batches import collate

        s, engine, ranks = self.state, self.engine, self.ranks
        batch = collate(rows, list(self.heads), self.heads).to(ranks.device)
        batch.values = batch.values.to(self.param_dtype)
        terms = engine(batch)
        loss = terms["loss"]
        s.micro_in_epoch += 1
        if not ranks.agree(bool(torch.isfinite(loss).item())):
            # every rank skips together (a lone skip would desynchronise the gradient all-reduce)
            s.skipped_steps += 1
            if ranks.lead:
                say(f"[step-dist] non-finite loss at step {s.step}: micro-step skipped ({s.skipped_steps} so far)")
            return None
        engine.backward(loss)
        boundary = engine.is_gradient_accumulation_boundary()
        # stages 0-1 keep whole gradients on every rank: measure them before step() clears them
        local_norm = local_grad_norm(engine.module) if boundary and self.zero_stage < 2 else None
        engine.step()
        self.ledger.add(s.epoch, rows)
        window.add(len(rows), int(sum(float(v) for k, v in terms.items() if k.startswith("tokens/"))))
        if not boundary:
            return None
        s.step += 1
        s.samples_seen += len(rows) * ranks.world * self.cfg.train.grad_accum
        reported = local_norm if local_norm is not None else engine.get_global_grad_norm()
        grad_norm = float(reported) if reported is not None else float("nan")
        if reported is not None and not math.isfinite(grad_norm):
            s.skipped_steps += 1  # bf16 overflow: DeepSpeed skipped the update (DeepSpeed#8415)
        return self.step_metrics(terms, grad_norm, window)

    def step_metrics(self, terms: dict[str, torch.Tensor], grad_norm: float, window: StepWindow) -> dict[str, float]:
        """The losses averaged over ranks, throughput summed over ranks, and the optimizer's state."""
        keys = sorted(k for k in terms if k.startswith("loss") or k == "penalty")
        means = self.ranks.mean([float(terms[k].detach()) for k in keys])
        elapsed, cpu = window.clock()
        samples, tokens = self.ranks.sum([window.samples, window.tokens])
        m = dict(zip(keys, means))
        m.update(grad_norm=grad_norm, lr=float(self.engine.get_lr()[0]),
                 **window.rates(elapsed, cpu, samples, tokens),
                 skipped_steps=float(self.state.skipped_steps), epoch=float(self.state.epoch))
        # unweighted mean over teachers: comparable across sweeps of teacher weights (not of loss types)
        m["distill_loss"] = sum(m[f"loss/{n}"] for n in self.heads) / max(len(self.heads), 1)
        return m

    def log_step(self, m: dict[str, float]) -> None:
        step, t = self.state.step, self.cfg.train
        self.outputs.log(step, m)
        self.outputs.publish()
        if self.ranks.lead and (step % t.log_every == 0 or step == 1):
            say("[step-dist] " + progress_line(step, t.max_steps, m))

    def follow(self, plan: Plan, m: dict[str, float]) -> None:
        """Validate, report and checkpoint as the policy planned for this step (every rank the same)."""
        s = self.state
        if plan.validate:
            m = {**m, **self.validate()}
        if plan.distill_loss_avg is not None:
            m = {**m, "distill_loss_avg": plan.distill_loss_avg}
        if plan.report:
            self.session.report({**m, "step": s.step, "epoch": s.epoch})
        if plan.preempted and self.ranks.lead:
            say(f"[step-dist] a node of this run is being preempted: just-in-time checkpoint at step {s.step}")
        if plan.checkpoint:
            self.save_checkpoint(m)

    def validate(self) -> dict[str, float]:
        from step_dist.train.validation import validation_metrics

        r, step = self.ranks, self.state.step
        vm = validation_metrics(self.engine.module, self.val_rows, self.heads, self.cfg.data.batch_size, r.rank,
                                r.world, r.device, self.param_dtype)
        self.outputs.log(step, vm)
        if r.lead:
            per = " ".join(f"{k[9:]}={v:.4f}" for k, v in sorted(vm.items()) if k.startswith("val/loss/"))
            say(f"[step-dist] validation at step {step}: distill loss {vm['val/distill_loss']:.4f} ({per}) | "
                f"effective rank tokens {vm['val/erank_tokens']:.1f}, pooled {vm['val/erank_pooled']:.1f} "
                f"over {int(vm['val/views'])} held-out views")
        return vm

    def save_checkpoint(self, metrics: dict[str, float]) -> None:
        """DeepSpeed state (every rank), data position and RNG, the plain export and this interval's ledger,
        reported to Ray Train as one checkpoint named by the step."""
        s, lead = self.state, self.ranks.lead
        folder = tempfile.mkdtemp(prefix="step-dist-ckpt-")
        try:
            self.engine.save_checkpoint(os.path.join(folder, "deepspeed"), tag=s.tag)
            write_worker_files(folder, s, self.ranks.rank)
            export_student(self.engine.module.student, folder, self.ranks.rank, self.zero_stage)
            self.ledger.flush(s.step)
            self.outputs.sync()
            quarantined = quarantine_count(self.spec.run_dir) if lead else 0
            if lead and quarantined:
                say(f"[step-dist] {quarantined} record(s)/shard(s) quarantined so far "
                    f"(see {self.spec.run_dir}/quarantine)")
            self.session.report({**metrics, "step": s.step, "epoch": s.epoch, "quarantined": float(quarantined)},
                                folder, f"checkpoint_{s.tag}")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
