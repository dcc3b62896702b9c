"""The driver side of pretraining: check the recipe, build the data pipeline, run Ray Train, collect outputs.

Nothing here knows whether it runs on a laptop (in-process Ray, local folders, CPU, gloo) or on a GPU cluster
under `ray job submit` (S3 storage, GPU nodes, NCCL): that is all in the recipe.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from step_dist import storage
from step_dist.config import ConfigError, dump_yaml
from step_dist.train.config import PretrainConfig


@dataclass
class PretrainResult:
    run_uri: str  # {storage}/{name}
    outputs_uri: str  # metrics, plots, resolved config, quarantine
    checkpoint_uri: str | None  # the last checkpoint
    export_uri: str | None  # the student alone: STEPEncoder.from_pretrained(export_uri)
    metrics: dict[str, Any]
    wall_s: float
    quarantined: int
    accounting: dict[str, Any] | None = None  # exactly-once check of record ids per epoch (train.account_records)
    restarts: list[dict[str, Any]] | None = None  # what each restart from a checkpoint cost (outputs/restarts.jsonl)


def _teacher_dims(cfg: PretrainConfig) -> dict[str, dict]:
    """Each teacher's token width and what part of a view it sees (native rate, context, crop or not), asked of
    the teacher itself in a Ray task (not in the driver's memory)."""
    import ray

    from step_dist.teachers import build_teacher

    # DEFAULT: outside any placement group of the caller (a Tune trial's holds only its driver's share)
    @ray.remote(num_cpus=1, scheduling_strategy="DEFAULT")
    def dim_of(tcfg) -> dict:
        t = build_teacher(tcfg)
        return {"dim": int(t.dim), "teacher_rate_hz": float(t.native_rate_hz or 0.0),
                "teacher_context": int(t.effective_context or 0), "teacher_crops": tcfg.context_policy == "crop"}

    tcfgs = cfg.teacher_configs()
    return dict(zip([t.name for t in cfg.teachers], ray.get([dim_of.remote(t) for t in tcfgs])))


def ensure_target_cache(cfg: PretrainConfig, verbose: bool = True) -> None:
    """Build the target cache the recipe points at when a teacher has no complete cache run there yet, so that
    every later run and every sweep trial reads targets instead of running teachers."""
    from step_dist.teachers.cache import complete_runs
    from step_dist.teachers.commands import CacheTargetsConfig, run_cache_targets
    from step_dist.teachers.registry import fingerprint
    from step_dist.teachers.stage import as_pool

    tcfgs = cfg.teacher_configs()
    have = {t["fingerprint"] for _, m in complete_runs(cfg.targets.cache) for t in m["teachers"]}
    missing = [t for t in tcfgs if fingerprint(t) not in have]
    if not missing:
        return
    if not cfg.targets.build_if_missing:
        raise ConfigError(
            f"targets.cache={cfg.targets.cache} has no complete targets for {[t.name for t in missing]}: run "
            "`step-dist cache-targets` first or set targets.build_if_missing=true"
        )
    if verbose:
        print(f"[step-dist] building the target cache for {[t.name for t in missing]} at {cfg.targets.cache}", flush=True)
    pools = {te.name: as_pool(te.pool) for te in cfg.teachers}
    run_cache_targets(CacheTargetsConfig(input=cfg.data.train, out=cfg.targets.cache, view=cfg.data.view,
                                         validation=dict(cfg.data.validation), teachers=missing,
                                         pools={t.name: pools[t.name] for t in missing}))


def local_ray_cpus(cfg: PretrainConfig) -> int:
    """Logical CPUs for a Ray started here: every train worker, every teacher actor and the data tasks must fit
    at once, or the run waits forever for resources on a 2-core laptop. Over-subscribing cores is fine on CPU."""
    needed = cfg.train.num_workers + sum(int(te.pool.size * max(te.pool.num_cpus, 1)) for te in cfg.teachers) + 3
    return max(os.cpu_count() or 1, needed)


def _check_storage_writable(outputs_uri: str) -> None:
    probe = outputs_uri.rstrip("/") + "/.write-test"
    try:
        storage.write_bytes(probe, b"ok")
    except Exception as e:  # noqa: BLE001
        raise storage.StorageError(
            f"cannot write to the run's storage {outputs_uri} ({type(e).__name__}: {e}): fix `storage` in the recipe "
            "or the credentials in the environment"
        ) from e


def _check_data(cfg: PretrainConfig) -> int:
    """Records available for training (from the shard set's manifest); fails clearly when there are none."""
    uri = cfg.data.train
    try:
        manifest = json.loads(storage.read_bytes(uri.rstrip("/") + "/_manifest.json"))
    except FileNotFoundError:
        raise ConfigError(
            f"data.train={uri}: no _manifest.json there. Point it at a shard set written by `step-dist ingest` "
            "or `step-dist demo-data`"
        ) from None
    n = int(manifest.get("records", manifest.get("n_records", 0)))
    if n == 0:
        q = manifest.get("quarantined", [])
        raise ConfigError(
            f"data.train={uri} holds no usable records ({len(q) if isinstance(q, list) else q} quarantined at ingest): "
            "nothing to train on"
        )
    return n


def pretrain(cfg: PretrainConfig, verbose: bool = True, callbacks: list | None = None,
             report_every: int = 0) -> PretrainResult:
    """Run the recipe on Ray Train. ``callbacks``: Ray Train UserCallbacks (a sweep passes Tune's
    TuneReportCallback); ``report_every`` > 0 also reports metrics without a checkpoint every N steps."""
    import ray
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train import DataConfig as RayDataConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from step_dist.data.pipeline import attach_targets, build_view_dataset, read_quarantine
    from step_dist.train.faults import explain_failure, failure_config
    from step_dist.train.loop import WorkerSpec, train_loop_per_worker
    from step_dist.train.metrics import plot_loss_curve

    t0 = time.time()
    cfg.check()
    run_uri = storage.parse_uri(cfg.storage).join(cfg.name).uri
    outputs_uri = storage.parse_uri(run_uri).join("outputs").uri
    storage.makedirs(outputs_uri)
    _check_storage_writable(outputs_uri)
    n_records = _check_data(cfg)
    storage.write_bytes(outputs_uri + "/config.yaml", dump_yaml(cfg).encode())
    if not ray.is_initialized():
        from step_dist.ray_session import init_ray

        init_ray(local_ray_cpus(cfg))

    if cfg.targets.mode == "cache":
        ensure_target_cache(cfg, verbose)

    dims = _teacher_dims(cfg)
    heads = [te.head_config(dims[te.name]) for te in cfg.teachers]
    quarantine_uri = outputs_uri + "/quarantine"
    ds = attach_targets(build_view_dataset(cfg.data, quarantine_uri), cfg)
    from step_dist.train.validation import collect_rows

    val_rows = collect_rows(cfg)
    val_ref = ray.put(val_rows) if val_rows else None
    if verbose and cfg.data.validation_fraction > 0:
        print(f"[step-dist] validation: {len(val_rows)} view(s) of the {cfg.data.validation_fraction:.0%} of records held out "
              f"(data.validation_fraction), scored every {cfg.train.validate_every} steps", flush=True)

    from ray.data import ExecutionOptions

    exec_opts = ExecutionOptions(preserve_order=True)  # resume skips a deterministic prefix of each epoch
    fs, path = storage.arrow_filesystem(cfg.storage)
    t = cfg.train
    scaling = ScalingConfig(
        num_workers=t.num_workers,
        use_gpu=t.use_gpu,
        resources_per_worker=dict(t.resources_per_worker) or None,
        label_selector=dict(t.label_selector) or None,
    )
    spec = WorkerSpec(config=cfg, heads=heads, run_dir=outputs_uri, report_every=int(report_every), validation=val_ref)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec},
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
        scaling_config=scaling,
        run_config=RunConfig(
            name=cfg.name,
            storage_path=path,
            storage_filesystem=fs,
            failure_config=failure_config(t),
            checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
            callbacks=list(callbacks or []),
        ),
        datasets={"train": ds},
        dataset_config=RayDataConfig(datasets_to_split=["train"], execution_options=exec_opts),
    )
    if verbose:
        print(f"[step-dist] pretraining {cfg.name}: {n_records} records, {len(heads)} teacher(s) "
              f"({', '.join(h.name for h in heads)}), {t.num_workers} worker(s), ZeRO-{t.zero_stage}, "
              f"{t.max_steps} steps -> {run_uri}", flush=True)
    from contextlib import nullcontext

    from step_dist.train.watch import RunWatcher

    try:
        with RunWatcher(outputs_uri, t.max_steps) if verbose else nullcontext():
            result = trainer.fit()
    except Exception as e:  # noqa: BLE001 - the controller itself failed (e.g. its checkpoint registry write)
        err = explain_failure(e, run_uri, None, t.max_failures)
        if err is e:
            raise
        raise err from e
    ckpt_uri = export_uri = None
    if result.checkpoint is not None:
        ckpt_uri = _uri_of(cfg.storage, result.checkpoint.path)
        export_uri = ckpt_uri.rstrip("/") + "/export"
    if result.error:
        err = explain_failure(result.error, run_uri, ckpt_uri, t.max_failures)
        if err is result.error:
            raise err
        raise err from result.error

    quarantined = read_quarantine(quarantine_uri)
    _finish_outputs(outputs_uri, plot_loss_curve)
    accounting = _account_records(cfg, outputs_uri, int((result.metrics or {}).get("step", t.max_steps)), verbose)
    restarts = _read_jsonl(outputs_uri + "/restarts.jsonl")
    summary = {
        "run": run_uri, "outputs": outputs_uri, "checkpoint": ckpt_uri, "export": export_uri,
        "metrics": dict(result.metrics or {}), "wall_s": time.time() - t0, "quarantined": len(quarantined),
        "accounting": accounting, "restarts": restarts,
    }
    write_summary(outputs_uri, summary)
    return PretrainResult(run_uri, outputs_uri, ckpt_uri, export_uri, dict(result.metrics or {}), summary["wall_s"],
                          len(quarantined), accounting, restarts)


def write_summary(outputs_uri: str, summary: dict[str, Any]) -> None:
    """outputs/summary.json, written last: its presence is what tells `step-dist status` the run finished."""
    storage.write_bytes(outputs_uri + "/summary.json", json.dumps(summary, indent=2, default=str).encode())


def _read_jsonl(uri: str) -> list[dict[str, Any]]:
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        return []
    return [json.loads(x) for x in data.decode().splitlines() if x.strip()]


def _account_records(cfg: PretrainConfig, outputs_uri: str, final_step: int, verbose: bool) -> dict[str, Any] | None:
    """Exactly-once check: the ledger the workers wrote (up to the final checkpoint) against the views the
    validated data holds. Written to outputs/accounting.json; a problem is printed, not raised (the model
    is trained; the report says which records to look at)."""
    if not cfg.train.account_records:
        return None
    from step_dist.train.ledger import account, expected_views, read_ledger

    t = cfg.train
    acc = account(read_ledger(outputs_uri, final_step), expected_views(cfg.data),
                  tail_allowance=t.num_workers * cfg.data.batch_size - 1).to_dict()
    storage.write_bytes(outputs_uri + "/accounting.json", json.dumps(acc, indent=2).encode())
    if verbose:
        verdict = "every view at most once per epoch" if acc["ok"] else "PROBLEM: see accounting.json"
        print(f"[step-dist] record accounting: {len(acc['epochs'])} epoch(s), {acc['duplicated']} duplicated, "
              f"{acc['lost']} unseen in complete epochs: {verdict}", flush=True)
    return acc


def _uri_of(storage_root: str, path_in_fs: str) -> str:
    loc = storage.parse_uri(storage_root)
    return path_in_fs if loc.scheme == "file" else f"{loc.scheme}://{path_in_fs}"


def _finish_outputs(outputs_uri: str, plot_loss_curve) -> None:
    """The loss-curve PNG from the metrics rank 0 wrote."""
    try:
        data = storage.read_bytes(outputs_uri + "/metrics.jsonl")
    except FileNotFoundError:
        return
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "metrics.jsonl")
        with open(src, "wb") as f:
            f.write(data)
        png = plot_loss_curve(src, os.path.join(tmp, "loss_curve.png"))
        with open(png, "rb") as f:
            storage.write_bytes(outputs_uri + "/loss_curve.png", f.read())


def load_config(path: str | None, overrides: list[str] | None = None) -> PretrainConfig:
    from step_dist.config import load

    return load(PretrainConfig, path, overrides)
