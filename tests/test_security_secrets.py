"""Credentials never leak: after a real run on moto S3, the fake secret key from the test environment appears
in no object the run wrote, no Ray log of this test's Ray instance and no line the run printed."""
from __future__ import annotations

import os

import pytest

from tests.conftest import FAKE_SECRET_KEY
from tests.pretrain_runs import load_tiny, overrides
from tests.signal_factory import write_synthetic_shards

pytestmark = pytest.mark.slow


def _files_containing(root: str, needle: bytes) -> list[str]:
    hits = []
    for d, _, files in os.walk(root):
        for name in files:
            path = os.path.join(d, name)
            try:
                with open(path, "rb") as f:
                    if needle in f.read():
                        hits.append(path)
            except OSError:
                continue  # sockets, files rotated away
    return hits


def test_when_a_run_uses_s3_credentials_then_the_secret_is_in_no_file_log_or_output(s3_server, s3_bucket, ray_local, capfd):
    import boto3
    import ray._private.worker as w

    from step_dist.train import pretrain

    assert os.environ["AWS_SECRET_ACCESS_KEY"] == FAKE_SECRET_KEY  # the run really holds the secret
    shards = write_synthetic_shards(f"{s3_bucket}/shards", 8, seed=41, min_len=300, max_len=1200)
    cfg = load_tiny(overrides(**{"name": "secret", "storage": f"{s3_bucket}/runs", "data.train": shards,
                                 "data.batch_size": 4, "train.num_workers": 1, "train.zero_stage": 0,
                                 "train.max_steps": 2, "train.checkpoint_every": 1,
                                 # this test is about secrets, not faults: on a loaded 2-core machine Ray Train
                                 # can lose a worker ("A worker health check failed": the poll of the worker
                                 # actor raised, i.e. its process died or stopped answering), which with the
                                 # default max_failures=0 ends the run. One restart resumes from the last
                                 # checkpoint (written every step), and a restarted run must leak nothing either
                                 "train.max_failures": 1}))
    result = pretrain(cfg)
    assert result.metrics["step"] == 2
    needle = FAKE_SECRET_KEY.encode()

    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint)
    bucket = s3_bucket.removeprefix("s3://")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    assert any("/checkpoint_step_" in k for k in keys) and any(k.endswith("config.yaml") for k in keys)
    leaked = [k for k in keys if needle in s3.get_object(Bucket=bucket, Key=k)["Body"].read()]
    assert not leaked, f"the secret key was written to {leaked}"

    session = w._global_node.get_session_dir_path()
    assert os.path.isdir(os.path.join(session, "logs"))
    assert not _files_containing(session, needle), "the secret key appears in this Ray instance's session files"

    out, errout = capfd.readouterr()
    assert "[step-dist]" in out + errout  # the run's own progress lines were captured
    assert FAKE_SECRET_KEY not in out + errout
