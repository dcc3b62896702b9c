"""Benchmark 4, ingest and read: MB/s of `step-dist ingest` and of the training read path from S3 (a moto
server on 127.0.0.1), against a bare pyarrow read of the same bytes.

    python jobs/bench_ingest.py [--files 16] [--samples 500000] [--repeats 2] [--out bench_results]

The script starts moto's ThreadedMotoServer on 127.0.0.1 (or uses --s3-endpoint, e.g. the test fixture's),
sets fake keys and AWS_EC2_METADATA_DISABLED=true before Ray starts so every Ray worker talks to it only.
Variants, interleaved and repeated; MB is the signal values (float32) that go through:
  * ingest:      step_dist.signals.ingest over raw .npy files on S3 -> Parquet shards on S3 (Ray tasks per file,
                 validation, the shard writer and manifest);
  * train_read:  the training read path: Ray Data read of the shards + validation + view expansion (views as
                 long as the records, so the same bytes), iterated as the trainer iterates it;
  * bare_read:   pyarrow.parquet.read_table of each shard through pyarrow's S3 filesystem, nothing else.
Ratios train_read / bare_read and ingest / bare_read say what the pipeline costs over moving the bytes.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as bc  # noqa: E402

FAKE_KEYS = {"AWS_ACCESS_KEY_ID": "bench-fake-access-key", "AWS_SECRET_ACCESS_KEY": "bench-fake-secret-not-real",
             "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}


def start_s3(endpoint: str | None):
    """(server or None, endpoint): moto on 127.0.0.1 unless an endpoint is given; the environment points at it."""
    server = None
    if not endpoint:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per S3 request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for k, v in FAKE_KEYS.items():
            os.environ[k] = v
    else:
        for k, v in FAKE_KEYS.items():
            os.environ.setdefault(k, v)
    host = endpoint.split("://", 1)[-1].split(":")[0]
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"bench_ingest: refusing the non-loopback S3 endpoint {endpoint}")
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    return server, endpoint


def write_raw(bucket: str, files: int, samples: int) -> int:
    """.npy files (one channel of float32 each) on S3; returns the bytes of signal values."""
    import numpy as np

    from step_dist import storage

    rng = np.random.default_rng(0)
    total = 0
    for i in range(files):
        arr = (np.sin(np.arange(samples) / (50 + i)) + 0.1 * rng.standard_normal(samples)).astype(np.float32)
        buf = io.BytesIO()
        np.save(buf, arr)
        storage.write_bytes(f"{bucket}/raw/sig-{i:04d}.npy", buf.getvalue())
        total += arr.nbytes
    return total


def run_ingest(bucket: str, out: str) -> tuple[float, int]:
    from step_dist.signals.ingest import ingest
    from step_dist.signals.readers import ReaderOptions

    t0 = time.perf_counter()
    res = ingest([f"{bucket}/raw"], out, ReaderOptions(source="bench", rate_hz=100.0), progress=lambda m: None)
    return time.perf_counter() - t0, int(res.manifest["total_samples"]) * 4


def train_read(shards: str, max_len: int) -> tuple[float, int]:
    from step_dist.data.pipeline import build_view_dataset
    from step_dist.data.views import ViewConfig
    from step_dist.train.config import DataConfig

    t0 = time.perf_counter()
    ds = build_view_dataset(DataConfig(train=shards, view=ViewConfig(max_length=max_len, min_length=32)), None)
    nbytes = 0
    for b in ds.iter_batches(batch_size=16, batch_format="numpy", prefetch_batches=2):
        nbytes += sum(len(v) for v in b["values"])
    return time.perf_counter() - t0, nbytes


def bare_read(shards: str) -> tuple[float, int]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from step_dist import storage
    from step_dist.signals.shards import list_shards

    t0 = time.perf_counter()
    nbytes = 0
    for uri in list_shards(shards):
        fs, path = storage.arrow_filesystem(uri)
        with fs.open_input_file(path) as f:
            t = pq.read_table(f)
        nbytes += int(pc.sum(pc.binary_length(t["values"])).as_py())
    return time.perf_counter() - t0, nbytes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--files", type=int, default=16)
    p.add_argument("--samples", type=int, default=500_000, help="samples per file (float32, one channel)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--s3-endpoint", default=None, help="use this loopback S3 endpoint instead of starting moto")
    p.add_argument("--out", default="bench_results")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.files, args.samples, args.repeats = 3, 20_000, 1
    server, endpoint = start_s3(args.s3_endpoint)
    ray, started = bc.ensure_ray()  # after the environment points at the S3 server: workers inherit it
    try:
        import boto3

        name = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
        bucket = f"s3://{name}"
        raw_bytes = write_raw(bucket, args.files, args.samples)
        runs: dict[str, list[dict]] = {"ingest": [], "train_read": [], "bare_read": []}
        last_shards = None
        for rep in range(args.repeats):
            out = f"{bucket}/shards-{rep}"
            dt, nb = run_ingest(bucket, out)
            runs["ingest"].append({"seconds": dt, "bytes": nb, "mb_per_s": nb / dt / 1e6})
            last_shards = out
            order = ("train_read", "bare_read") if rep % 2 == 0 else ("bare_read", "train_read")
            for v in order:
                dt, nb = train_read(out, args.samples) if v == "train_read" else bare_read(out)
                runs[v].append({"seconds": dt, "bytes": nb, "mb_per_s": nb / dt / 1e6})
            print(f"[bench_ingest] repeat {rep}: " + ", ".join(f"{v} {runs[v][-1]['mb_per_s']:.1f} MB/s" for v in runs)
                  + f" (load {os.getloadavg()[0]:.1f})", flush=True)
        stats = {v: bc.spread(r["mb_per_s"] for r in rs) for v, rs in runs.items()}
        bare = stats["bare_read"]["median"]
        rows = [[v, stats[v]["median"], stats[v]["rel_spread"], runs[v][0]["bytes"] / 1e6,
                 stats[v]["median"] / bare if bare else None] for v in runs]
        print(bc.table(f"4. ingest and read on moto S3 at {endpoint} ({args.files} files x {args.samples:,} float32 "
                       f"samples, {args.repeats} repeats)",
                       ["path", "MB/s (median)", "spread +-", "MB", "vs bare pyarrow"], rows))
        path = bc.write_result(args.out, "bench_ingest", {
            "args": vars(args), "raw_bytes": raw_bytes, "variants": stats, "runs": runs,
            "ratios_vs_bare": {v: (stats[v]["median"] / bare if bare else None) for v in runs},
            "shards": last_shards,
        })
        print(f"wrote {path}")
        return 0
    finally:
        if started:
            ray.shutdown()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
