"""Shared fixtures: a real S3 API (moto's server on 127.0.0.1), a real local Ray instance, offline hubs.

Everything here keeps traffic on loopback: Ray is told to use 127.0.0.1, botocore never probes the instance
metadata address, and the Hugging Face hub is offline. The fake secret below must never appear in anything
a run writes (tests/test_security checks it).
"""
from __future__ import annotations

import os
import uuid

import pytest

FAKE_ACCESS_KEY = "AKIASTEPDISTTESTKEY0"
FAKE_SECRET_KEY = "stepdist-FAKE-secret-9f3Kq7Zt-never-log-me"

os.environ.update(
    {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_DEDUP_LOGS": "0",
        "RAY_TRAIN_V2_ENABLED": "1",
    }
)
os.environ.pop("RAY_ADDRESS", None)  # never attach to a cluster that happens to run
os.environ.pop("AWS_PROFILE", None)

# Ray gets more logical CPUs than the machine's 2 cores so train workers and data actors all fit.
RAY_NUM_CPUS = int(os.environ.get("STEP_DIST_TEST_RAY_CPUS", "8"))


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (a real HTTP S3 API), shared by the session; yields its endpoint URL.

    It runs in this process so that a test can stop it and start it again on the same port with the
    buckets intact (moto keeps its state in-process)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    server.endpoint = endpoint
    server.port = port
    yield server
    server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh bucket on the moto server; yields 's3://<name>'."""
    import boto3

    name = f"step-dist-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_server.endpoint).create_bucket(Bucket=name)
    # s3fs caches listings per instance: start each test with a clean view of the store
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    yield f"s3://{name}"


@pytest.fixture(scope="session")
def _ray_session(s3_server):
    """One local Ray instance for the session, started after the S3 endpoint is in the environment so that
    every Ray worker process inherits it."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    # address="local": always a fresh instance of this session's own, never a cluster another test (or another
    # pytest-xdist worker) started with `ray start` on this machine
    ray.init(address="local", num_cpus=RAY_NUM_CPUS, include_dashboard=False, log_to_driver=True,
             configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture
def ray_local(_ray_session):
    """A running local Ray instance (restarted if a test shut it down to build its own cluster)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=RAY_NUM_CPUS, include_dashboard=False, configure_logging=False)
    yield ray
