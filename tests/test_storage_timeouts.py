"""An object store that accepts connections and never answers: every storage call ends, within a bounded time,
in an error that names the location and says what to check, instead of hanging for many minutes.

The store here is a real TCP server on 127.0.0.1 that accepts every connection and never sends a byte (what a
wedged proxy or a firewall that swallows traffic looks like). The times are printed, not asserted: the pytest
timeouts only say "it returned".
"""
from __future__ import annotations

import os
import pickle
import socket
import threading
import time

import pytest

from step_dist import storage


@pytest.fixture
def silent_store(monkeypatch):
    """AWS_ENDPOINT_URL pointing at a server that accepts connections, holds them open and never replies."""
    import s3fs

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    held: list[socket.socket] = []

    def accept_forever() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # the socket was closed: the test is over
                return
            held.append(conn)  # kept open, never read from or written to

    threading.Thread(target=accept_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    # a cached s3fs instance would still point at the session's moto server; cached timeouts at older values
    s3fs.S3FileSystem.clear_instance_cache()
    storage.timeouts.cache_clear()
    yield endpoint
    server.close()
    for conn in held:
        conn.close()
    s3fs.S3FileSystem.clear_instance_cache()
    storage.timeouts.cache_clear()


@pytest.fixture
def short_timeouts(monkeypatch):
    """Small limits through the documented variables, so the calls below take seconds, not the default minute."""
    monkeypatch.setenv("STEP_DIST_STORAGE_CONNECT_TIMEOUT", "2")
    monkeypatch.setenv("STEP_DIST_STORAGE_READ_TIMEOUT", "2")
    monkeypatch.setenv("STEP_DIST_STORAGE_DEADLINE", "10")
    storage.timeouts.cache_clear()
    yield
    storage.timeouts.cache_clear()


def _clear(message: str, uri: str, endpoint: str) -> None:
    assert uri in message, message
    assert "storage still failing" in message and endpoint in message and "AWS_ENDPOINT_URL" in message, message


@pytest.mark.timeout(150)
def test_when_the_store_never_answers_then_ingest_exits_with_an_error_naming_the_uri(silent_store, tmp_path, capsys):
    from step_dist.cli import main

    t0 = time.monotonic()
    code = main(["ingest", "s3://bucket/raw", "--out", str(tmp_path / "shards")])  # the default limits
    took = time.monotonic() - t0
    err = capsys.readouterr().err
    print(f"ingest against a silent store: exit {code} after {took:.1f} s")
    assert code == 2, err
    _clear(err, "s3://bucket/raw", silent_store)
    assert "Traceback" not in err
    assert not (tmp_path / "shards" / "_manifest.json").exists()


# a bare bucket too: s3fs's own exists() answers "no such bucket" when its probes time out
@pytest.mark.timeout(60)
@pytest.mark.parametrize("call,uri", [("read_bytes", "s3://bucket/raw/x.npy"), ("exists", "s3://bucket/raw/x.npy"),
                                      ("exists", "s3://bucket")])
def test_when_the_store_never_answers_then_reads_and_checks_fail_clearly_within_the_configured_deadline(
        call, uri, silent_store, short_timeouts):
    t0 = time.monotonic()
    with pytest.raises(storage.StorageError) as err:
        getattr(storage, call)(uri)
    print(f"storage.{call}({uri}) against a silent store (deadline 10 s): {time.monotonic() - t0:.1f} s")
    _clear(str(err.value), uri, silent_store)
    assert "10 s in all per operation" in str(err.value)  # the limits in force, as the variables set them


# pyarrow retries by itself (the paths Ray drives); before, it always made 7 attempts of 3 s, over 21 s in all
@pytest.mark.timeout(15)
def test_when_the_store_never_answers_then_the_arrow_filesystem_ray_receives_keeps_the_configured_limits(
        silent_store, short_timeouts, monkeypatch):
    monkeypatch.setenv("STEP_DIST_STORAGE_ARROW_ATTEMPTS", "1")
    storage.timeouts.cache_clear()
    fs, path = storage.arrow_filesystem("s3://bucket/raw/x.npy")
    shipped = pickle.loads(pickle.dumps(fs))  # as Ray Train ships RunConfig.storage_filesystem to its workers
    t0 = time.monotonic()
    with pytest.raises(OSError, match="Timeout"):
        shipped.get_file_info(path)
    print(f"pyarrow get_file_info against a silent store (1 attempt, deadline 10 s): {time.monotonic() - t0:.1f} s")


def test_when_a_timeout_variable_is_not_a_positive_number_then_the_error_names_it(monkeypatch):
    for bad in ("soon", "0", "-3", "inf"):
        monkeypatch.setenv("STEP_DIST_STORAGE_READ_TIMEOUT", bad)
        with pytest.raises(storage.StorageError, match="STEP_DIST_STORAGE_READ_TIMEOUT.*positive number"):
            storage.StorageTimeouts.from_env(os.environ)
