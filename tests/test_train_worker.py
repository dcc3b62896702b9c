"""The per-worker trainer (train/loop.py) on CPU without Ray Train or DeepSpeed: a tiny student, in-memory
batches, a plain-PyTorch engine and a stand-in for the Ray Train session. The end-to-end tests in
test_pretrain_e2e.py run the same trainer under Ray Train with DeepSpeed."""
from __future__ import annotations

import contextlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

from step_dist.distill.module import HeadConfig
from step_dist.train.checkpoint import read_trainer_state
from step_dist.train.config import PretrainConfig, TeacherEntry
from step_dist.train.engine import optimizer_and_schedule
from step_dist.train.ledger import read_ledger
from step_dist.train.loop import WorkerSpec, WorkerTrainer
from step_dist.train.policy import StepPolicy
from step_dist.train.session import Ranks

TEACHER = "t"


def make_rows(n: int, seed: int = 0) -> list[dict]:
    """Views as the pipeline hands them to a worker: signal bytes plus one teacher's target tokens."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = 48 + 16 * (i % 3)
        rows.append({"id": f"r{i:02d}", "view_id": "v0", "n_channels": 1, "length": length,
                     "sampling_rate_hz": 100.0, "values": rng.standard_normal(length).astype("<f4").tobytes(),
                     f"t_{TEACHER}_tokens": 4, f"t_{TEACHER}_dim": 8,
                     f"t_{TEACHER}": rng.standard_normal((4, 8)).astype("<f4").tobytes()})
    return rows


class PlainEngine:
    """The DeepSpeed engine calls the trainer makes, in plain PyTorch (one rank, ZeRO-0, no accumulation).
    ``poison``: micro-batches (counted from 0 over this engine's life) whose loss comes out NaN."""

    def __init__(self, module, cfg, poison: tuple[int, ...] = ()):
        self.module = module
        self.optimizer, self.scheduler = optimizer_and_schedule(module, cfg)
        self.clip = cfg.optim.grad_clip
        self.poison, self.forwards, self.steps = set(poison), 0, 0

    def __call__(self, batch):
        terms = self.module(batch)
        if self.forwards in self.poison:
            terms["loss"] = terms["loss"] * float("nan")
        self.forwards += 1
        return terms

    def train(self):
        self.module.train()

    def backward(self, loss):
        loss.backward()

    def is_gradient_accumulation_boundary(self) -> bool:
        return True

    def step(self):
        torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()
        self.steps += 1

    def get_global_grad_norm(self):
        return None  # ZeRO-0: the trainer measures the norm itself

    def get_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def save_checkpoint(self, folder: str, tag: str):
        os.makedirs(os.path.join(folder, tag), exist_ok=True)
        torch.save({"module": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict()}, os.path.join(folder, tag, "state.pt"))

    def load_checkpoint(self, folder: str, tag: str):
        s = torch.load(os.path.join(folder, tag, "state.pt"), weights_only=True)
        self.module.load_state_dict(s["module"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.scheduler.load_state_dict(s["scheduler"])


class PeerRanks(Ranks):
    """This rank plus a peer that answers False to the agreement calls numbered in ``peer_vetoes`` (from 0).
    Per micro-batch the trainer asks twice: 'is there a batch?', then 'is the loss finite?'."""

    def __init__(self, peer_vetoes: tuple[int, ...] = ()):
        super().__init__(rank=0, world=1)
        self.vetoes, self.calls = set(peer_vetoes), 0

    def agree(self, flag: bool) -> bool:
        peer = self.calls not in self.vetoes
        self.calls += 1
        return flag and peer


class FakeSession:
    """Ray Train as the trainer sees it: in-memory data, checkpoints kept in a folder, reports recorded."""

    def __init__(self, rows: list[dict], store: str, resume: str | None = None, ranks: Ranks | None = None):
        self.rows, self.store, self.resume = rows, store, resume
        self.ranks = ranks or Ranks()
        self.reports: list[tuple[dict, str | None]] = []

    @contextlib.contextmanager
    def resume_folder(self):
        yield self.resume

    def iter_batches(self, batch_size: int, batch_format: str, prefetch_batches: int, **shuffle):
        assert batch_format == "numpy" and not shuffle
        for i in range(0, len(self.rows), batch_size):
            chunk = self.rows[i : i + batch_size]
            yield {k: np.array([r[k] for r in chunk], dtype=object) for k in chunk[0]}

    def report(self, metrics: dict, folder: str | None = None, name: str | None = None) -> None:
        if folder is not None:
            shutil.copytree(folder, os.path.join(self.store, name))
        self.reports.append((metrics, name))


def recipe(**train) -> PretrainConfig:
    cfg = PretrainConfig(name="unit", tracker="none", student={"size": "tiny", "d_model": 32, "n_layers": 1},
                         teachers=[TeacherEntry(name=TEACHER)])
    cfg.data.batch_size, cfg.data.bucket_rows = 2, 4
    cfg.optim.warmup_steps = 2
    t = cfg.train
    t.num_workers, t.max_steps, t.checkpoint_every, t.log_every, t.preemption_check_every = 1, 6, 3, 100, 0
    for k, v in train.items():
        setattr(t, k, v)
    return cfg


def build(tmp, rows, cfg=None, resume=None, poison=(), ranks=None, report_every=0):
    """A trainer for a run whose outputs and checkpoints live under ``tmp`` (one name, so resumes find them)."""
    cfg = cfg or recipe()
    spec = WorkerSpec(config=cfg, heads=[HeadConfig(name=TEACHER, dim=8)], run_dir=str(tmp / "outputs"),
                      report_every=report_every)
    session = FakeSession(rows, str(tmp / "checkpoints"), resume, ranks)
    trainer = WorkerTrainer(spec, session, make_engine=lambda module, c, world, bf16: (PlainEngine(module, c, poison), 0))
    return trainer, session


def metrics_rows(tmp) -> list[dict]:
    with open(tmp / "outputs" / "metrics.jsonl") as f:
        return [json.loads(x) for x in f if x.strip()]


def losses(tmp) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in metrics_rows(tmp)}


class Killed(Exception):
    pass


def run_killed_after(tmp, rows, step: int) -> None:
    """Train until ``step`` is logged, then stop dead (as a SIGKILL would: nothing flushed or saved)."""
    trainer, _ = build(tmp, rows)
    log_step = trainer.log_step

    def log_then_die(m):
        log_step(m)
        if trainer.state.step == step:
            raise Killed

    trainer.log_step = log_then_die
    with pytest.raises(Killed):
        trainer.train()


@pytest.fixture(scope="module")
def rows():
    return make_rows(10)  # 5 micro-batches an epoch: 6 steps cross into a second epoch


@pytest.fixture(scope="module")
def reference(rows, tmp_path_factory):
    """One uninterrupted run: its folder (metrics, ledger, checkpoints)."""
    tmp = tmp_path_factory.mktemp("reference")
    trainer, session = build(tmp, rows)
    trainer.train()
    return tmp, session


@pytest.fixture(scope="module")
def killed_and_resumed(rows, tmp_path_factory):
    """The same run killed after step 4 (its checkpoint is at step 3), then resumed from that checkpoint."""
    tmp = tmp_path_factory.mktemp("resumed")
    run_killed_after(tmp, rows, 4)
    before = metrics_rows(tmp)
    trainer, _ = build(tmp, rows, resume=str(tmp / "checkpoints" / "checkpoint_step_00000003"))
    restored = (trainer.state.step, trainer.state.epoch, trainer.state.micro_in_epoch)
    trainer.train()
    return tmp, before, restored


def test_when_a_run_resumes_then_it_restarts_at_the_checkpoint_step_and_skips_the_micro_batches_it_trained(
        rows, reference, killed_and_resumed):
    tmp, _, restored = killed_and_resumed
    assert restored == (3, 0, 3)  # 3 steps of the first epoch's 5 micro-batches
    # the ledger names the same views per epoch as the uninterrupted run: nothing trained twice, nothing skipped
    assert read_ledger(str(tmp / "outputs"), 6) == read_ledger(str(reference[0] / "outputs"), 6)
    assert losses(tmp) == losses(reference[0]), "a resumed run reproduces the uninterrupted losses exactly"
    final = read_trainer_state(str(tmp / "checkpoints" / "checkpoint_step_00000006"))
    assert (final.step, final.epoch, final.micro_in_epoch, final.samples_seen) == (6, 1, 1, 12)


def test_when_a_run_resumes_then_metrics_of_the_steps_its_checkpoint_covers_are_carried_over(killed_and_resumed):
    tmp, before, _ = killed_and_resumed
    assert [r["step"] for r in before] == [1, 2, 3, 4]
    after = metrics_rows(tmp)
    assert [r["step"] for r in after] == [1, 2, 3, 4, 5, 6], "step 4, logged after the checkpoint, is trained again"
    assert after[:3] == before[:3]  # the covered steps' rows as they were written, times included
    with open(tmp / "outputs" / "restarts.jsonl") as f:
        restarts = [json.loads(x) for x in f]
    assert [(r["resumed_from_step"], r["last_logged_step"], r["steps_lost"]) for r in restarts] == [(3, 4, 1)]


def test_when_any_rank_has_a_non_finite_loss_then_every_rank_skips_that_micro_batch(rows, tmp_path):
    # this rank's own loss is NaN at micro-batch 1; the peer's is NaN at micro-batch 3 (its finiteness vote)
    trainer, session = build(tmp_path, rows, poison=(1,), ranks=PeerRanks(peer_vetoes=(2 * 3 + 1,)))
    trainer.train()
    s = trainer.state
    assert s.step == 6 and s.skipped_steps == 2
    assert trainer.engine.steps == 6, "a skipped micro-batch takes no optimizer step"
    # 8 micro-batches in all: epoch 0 trains 3 of its 5, epoch 1 the first 3
    assert (s.epoch, s.micro_in_epoch) == (1, 3)
    trained = read_ledger(str(tmp_path / "outputs"), 6)
    assert len(trained) == 12 and len({(e, r) for e, r, _ in trained}) == 12
    ms = metrics_rows(tmp_path)
    assert [r["skipped_steps"] for r in ms] == [0.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert all(np.isfinite(r["loss"]) for r in ms)
    assert [name for _, name in session.reports] == ["checkpoint_step_00000003", "checkpoint_step_00000006"]


def test_when_an_epoch_yields_no_batch_then_the_error_names_the_likely_causes(tmp_path):
    trainer, _ = build(tmp_path, make_rows(1))  # fewer views than one micro-batch
    with pytest.raises(RuntimeError, match="no batch in a whole epoch"):
        trainer.train()


def test_checkpoints_and_reports_come_at_their_intervals_and_at_the_last_step(rows, tmp_path):
    trainer, session = build(tmp_path, rows, cfg=recipe(max_steps=5, checkpoint_every=2), report_every=3)
    trainer.train()
    got = [(int(m["step"]), name) for m, name in session.reports]
    assert got == [(2, "checkpoint_step_00000002"), (3, None), (4, "checkpoint_step_00000004"),
                   (5, "checkpoint_step_00000005")]
    ls = losses(tmp_path)
    distill = {r["step"]: r["distill_loss"] for r in metrics_rows(tmp_path)}
    assert set(ls) == {1, 2, 3, 4, 5}
    # a sweep's figure: the mean distill loss since the previous report (a checkpoint's report counts as one)
    avg = {int(m["step"]): m["distill_loss_avg"] for m, _ in session.reports}
    assert avg == pytest.approx({2: (distill[1] + distill[2]) / 2, 3: distill[3], 4: distill[4], 5: distill[5]})
    for m, name in session.reports:
        assert ("quarantined" in m) == (name is not None)
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [name for _, name in session.reports if name]
    assert os.path.exists(tmp_path / "checkpoints" / "checkpoint_step_00000005" / "export" / "config.json")


def test_the_policy_plans_validation_reports_and_just_in_time_checkpoints():
    asked = []

    def preempted(step):
        asked.append(step)
        return step == 5

    p = StepPolicy(max_steps=7, checkpoint_every=3, validate_every=2, report_every=2, preempted=preempted)
    plans = {s: p.plan(s, float(s)) for s in range(1, 8)}
    assert [s for s, x in plans.items() if x.checkpoint] == [3, 5, 6, 7]
    assert [s for s, x in plans.items() if x.preempted] == [5]
    assert [s for s, x in plans.items() if x.validate] == [2, 4, 6, 7]
    assert [s for s, x in plans.items() if x.report] == [2, 4]  # metrics-only: not at checkpoints
    assert {s: x.distill_loss_avg for s, x in plans.items() if x.distill_loss_avg is not None} == {
        2: 1.5, 3: 3.0, 4: 4.0, 6: 5.5, 7: 7.0}
    assert asked == [1, 2, 4, 5], "preemption is asked only where no checkpoint is planned anyway"
    quiet = StepPolicy(max_steps=4, checkpoint_every=10)
    assert [s for s in range(1, 5) if quiet.plan(s, 0.0).checkpoint] == [4]
    assert not any(quiet.plan(s, 0.0).validate or quiet.plan(s, 0.0).report for s in range(1, 5))
