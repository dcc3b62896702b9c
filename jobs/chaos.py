"""Fault campaign: real faults against real tiny pretraining runs on a local Ray instance, one table.

    .venv/bin/python jobs/chaos.py [--out chaos.json] [--only worker_kill,teacher_kill,...]

Faults (each on a fresh run; data and checkpoints on a moto S3 server on 127.0.0.1 run in this process):
  none            baseline
  worker_kill     SIGKILL the Ray Train worker process once a checkpoint exists (train.max_failures=1)
  teacher_kill    SIGKILL a teacher actor (Ray Data map worker) while the epoch streams
  store_blip      the S3 server stops (connections refused) for 6 s during checkpointing, then comes back
  store_down      the S3 server stops for good after a checkpoint
  corrupt_shard   a Parquet shard in the middle of the data set is garbage bytes

Columns: what happened; steps lost (trained again after a restart, from outputs/restarts.jsonl); records lost
(views of good records never trained in a complete epoch, from the exactly-once ledger); records duplicated
(views trained twice within one epoch). Prints the table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# loopback only, fake credentials, offline hubs: the same environment the tests use
os.environ.update({
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "chaos-fake-access", "AWS_SECRET_ACCESS_KEY": "chaos-fake-secret",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    "RAY_TRAIN_V2_ENABLED": "1",
})
os.environ.pop("RAY_ADDRESS", None)

FAULTS = ("none", "worker_kill", "teacher_kill", "store_blip", "store_down", "corrupt_shard")
N_RECORDS, BATCH, STEPS, EVERY = 16, 4, 8, 2  # 4 steps per epoch, 2 epochs, a checkpoint every 2 steps


def _moto():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    server.endpoint, server.port = f"http://{host}:{port}", port
    os.environ["AWS_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL_S3"] = server.endpoint
    return server


def _bucket(server) -> str:
    import boto3
    import s3fs

    name = f"chaos-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket=name)
    s3fs.S3FileSystem.clear_instance_cache()
    return f"s3://{name}"


def _cfg(name: str, root: str, shards: str, **kv):
    from tests.pretrain_runs import load_tiny, overrides

    sets = {"name": name, "storage": f"{root}/runs", "data.train": shards, "data.batch_size": BATCH,
            "train.num_workers": 1, "train.zero_stage": 0, "train.max_steps": STEPS,
            "train.checkpoint_every": EVERY, "train.max_failures": 1, **kv}
    return load_tiny(overrides(**sets))


def _row(fault: str, happened: str, result=None, **extra) -> dict:
    acc = (result.accounting if result is not None else None) or {}
    restarts = (result.restarts if result is not None else None) or []
    row = {"fault": fault, "what happened": happened,
           "steps lost": sum(r["steps_lost"] for r in restarts),
           "records lost": acc.get("lost", "-"), "records duplicated": acc.get("duplicated", "-")}
    row.update(extra)
    return row


def run_fault(fault: str, server, tmp: str) -> dict:
    from step_dist import storage
    from step_dist.train import pretrain
    from tests.fault_injection import max_logged_step, sigkill_one, start_moto, stop_moto, when
    from tests.signal_factory import synthetic_records, write_synthetic_shards

    root = _bucket(server)
    shards = write_synthetic_shards(f"{root}/shards", N_RECORDS, seed=7, min_len=300, max_len=1200)
    outputs = f"{root}/runs/{fault}/outputs"
    t0 = time.time()
    if fault == "none":
        r = pretrain(_cfg(fault, root, shards), verbose=False)
        return _row(fault, f"finished at step {r.metrics['step']}", r, wall_s=time.time() - t0)
    if fault == "worker_kill":
        th = when(lambda: max_logged_step(outputs) >= EVERY + 1, lambda: sigkill_one("RayTrainWorker"))
        r = pretrain(_cfg(fault, root, shards), verbose=False)
        th.join(60)
        rs = r.restarts or [{}]
        return _row(fault, f"worker pid {th.result} killed at step {rs[0].get('last_logged_step')}; restarted from "
                    f"step {rs[0].get('resumed_from_step')}, finished at step {r.metrics['step']}", r,
                    wall_s=time.time() - t0)
    if fault == "teacher_kill":
        cfg = _cfg(fault, root, shards)
        cfg.teachers[0].pool.batch_size = 2
        th = when(lambda: max_logged_step(outputs) >= 1, lambda: sigkill_one("TeacherTargetsUDF"))
        r = pretrain(cfg, verbose=False)
        th.join(60)
        return _row(fault, f"teacher actor pid {th.result} killed; Ray Data restarted it and re-ran its batches; "
                    f"finished at step {r.metrics['step']}", r, wall_s=time.time() - t0)
    if fault in ("store_blip", "store_down"):
        cfg = _cfg(fault, root, shards, **{"train.checkpoint_every": 1, "train.max_failures": 0})
        if fault == "store_down":
            cfg.train.max_steps = 40
        marker = f"{root}/runs/{fault}/checkpoint_step_00000002/trainer_state.json"

        def outage():
            stop_moto(server)
            if fault == "store_blip":
                time.sleep(6)
                start_moto(server)

        th = when(lambda: storage.exists(marker), outage)
        try:
            r = pretrain(cfg, verbose=False)
            th.join(60)
            return _row(fault, f"S3 refused connections for 6 s; finished at step {r.metrics['step']} with "
                        f"{len(r.restarts or [])} restart(s)", r, wall_s=time.time() - t0)
        except Exception as e:  # noqa: BLE001 - the expected outcome for store_down
            th.join(60)
            if fault == "store_blip":
                start_moto(server)
                raise
            start_moto(server)
            msg = str(e)
            from step_dist.train.faults import last_registered_checkpoint

            last = last_registered_checkpoint(f"{root}/runs/{fault}")
            state = json.loads(storage.read_bytes(last + "/trainer_state.json"))
            logged = max_logged_step(outputs)
            from step_dist.train.ledger import account, expected_views, read_ledger

            acc = account(read_ledger(outputs, state["step"]), expected_views(cfg.data), BATCH - 1).to_dict()
            return {"fault": fault, "what happened": f"failed with {type(e).__name__}; last checkpoint step "
                    f"{state['step']} intact and readable", "steps lost": max(logged - state["step"], 0),
                    "records lost": acc["lost"], "records duplicated": acc["duplicated"], "wall_s": time.time() - t0,
                    "message": msg}
    if fault == "corrupt_shard":
        from step_dist.signals.shards import list_shards, write_records

        local = os.path.join(tmp, "corrupt_shards")
        write_records(local, synthetic_records(N_RECORDS, seed=8, min_len=300, max_len=1200), shard_mb=0.004)
        files = list_shards(local)
        bad = files[len(files) // 2]
        with open(bad, "r+b") as f:
            f.seek(8)
            f.write(os.urandom(os.path.getsize(bad) - 16))
        r = pretrain(_cfg(fault, root, local, **{"train.max_steps": 3, "train.checkpoint_every": 3}), verbose=False)
        from step_dist.data.pipeline import read_quarantine

        q = [e for e in read_quarantine(r.outputs_uri + "/quarantine") if e.get("stage") == "shard"]
        return _row(fault, f"{len(q)} of {len(files)} shards quarantined ({os.path.basename(bad)}: "
                    f"{q[0]['reason'][:40] if q else '?'}...); finished at step {r.metrics['step']}", r,
                    wall_s=time.time() - t0)
    raise ValueError(fault)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="chaos.json")
    ap.add_argument("--only", default=",".join(FAULTS))
    ap.add_argument("--num-cpus", type=int, default=8)
    args = ap.parse_args(argv)
    import ray

    server = _moto()
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fault in args.only.split(","):
            print(f"[chaos] {fault} ...", flush=True)
            try:
                rows.append(run_fault(fault, server, tmp))
            except Exception as e:  # noqa: BLE001 - a campaign reports every fault, including unexpected ones
                rows.append({"fault": fault, "what happened": f"UNEXPECTED {type(e).__name__}: {str(e)[:200]}",
                             "steps lost": "-", "records lost": "-", "records duplicated": "-"})
            print(f"[chaos] {fault}: {rows[-1]['what happened']}", flush=True)
    ray.shutdown()
    cols = ["fault", "what happened", "steps lost", "records lost", "records duplicated"]
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    line = " | ".join(c.ljust(w) for c, w in zip(cols, widths))
    print("\n" + line + "\n" + "-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths)))
    with open(args.out, "w") as f:
        json.dump({"rows": rows, "setup": {"records": N_RECORDS, "batch": BATCH, "steps": STEPS,
                                          "checkpoint_every": EVERY, "workers": 1}}, f, indent=2, default=str)
    print(f"\nwrote {args.out}")
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
