"""Fast checks of the fault-handling pieces: the exactly-once accounting, the ledger's segments across a
restart, storage retries against a real stopped S3 endpoint, and the error a user sees when a store is down."""
from __future__ import annotations

import time

import pytest

from step_dist import storage
from step_dist.train.faults import StorageUnavailable, explain_failure, is_storage_outage
from step_dist.train.ledger import Ledger, account, read_ledger

VIEWS = [(f"r{i}", f"r{i}:v0") for i in range(6)]


def test_when_every_view_is_trained_once_per_epoch_then_the_accounting_is_clean():
    trained = [(e, r, v) for e in (0, 1) for r, v in VIEWS] + [(2, "r0", "r0:v0")]
    acc = account(trained, VIEWS, tail_allowance=0)
    assert acc.ok and acc.duplicated == 0 and acc.lost == 0
    assert [e.complete for e in acc.epochs] == [True, True, False]  # the last epoch stopped at max_steps


def test_when_a_view_is_trained_twice_or_never_then_the_accounting_names_it():
    trained = [(0, r, v) for r, v in VIEWS[:-1]] + [(0, "r1", "r1:v0"), (1, "r0", "r0:v0")]
    acc = account(trained, VIEWS, tail_allowance=0)
    e0 = acc.epochs[0]
    assert not acc.ok and e0.duplicated == 1 and e0.unseen == 1
    assert e0.duplicated_examples == ["r1 (r1:v0) x2"] and e0.unseen_examples == ["r5 (r5:v0)"]
    assert account([(0, r, v) for r, v in VIEWS[:-1]] + [(1, "r0", "r0:v0")], VIEWS, tail_allowance=1).ok


def test_when_a_run_restarts_then_ledger_segments_past_the_checkpoint_are_replaced_not_added(tmp_path):
    out = str(tmp_path / "outputs")
    first = Ledger(out, rank=0)
    first.add(0, [{"id": "a", "view_id": "a:0"}, {"id": "b", "view_id": "b:0"}])
    first.flush(2)
    first.add(0, [{"id": "c", "view_id": "c:0"}])
    first.flush(4)  # written, but the checkpoint at step 4 was never registered: the run died here
    resumed = Ledger(out, rank=0)
    assert resumed.forget_after(2) == 1
    resumed.add(0, [{"id": "c", "view_id": "c:0"}])
    resumed.flush(4)
    assert sorted(read_ledger(out)) == [(0, "a", "a:0"), (0, "b", "b:0"), (0, "c", "c:0")]
    assert read_ledger(out, upto_step=2) == [(0, "a", "a:0"), (0, "b", "b:0")]


def test_when_the_store_is_down_then_storage_calls_retry_then_fail_naming_the_location(s3_server, s3_bucket):
    from tests.fault_injection import start_moto, stop_moto

    uri = f"{s3_bucket}/x.txt"
    storage.write_bytes(uri, b"ok")
    stop_moto(s3_server)
    try:
        t0 = time.time()
        with pytest.raises(storage.StorageError, match=rf"reading {uri}: storage still failing after 3 attempts") as err:
            storage.with_retries(lambda: storage.fsspec_filesystem(uri)[0].cat_file(uri[5:]), f"reading {uri}",
                                 attempts=3, base_delay_s=0.2)
        assert time.time() - t0 >= 0.6  # it backed off between attempts
    finally:
        start_moto(s3_server)
    assert is_storage_outage(err.value)
    assert storage.read_bytes(uri) == b"ok"  # back up, with its data


def test_when_a_fit_error_is_a_storage_outage_then_the_user_gets_the_last_checkpoint_and_how_to_resume():
    cause = OSError("When uploading: AWS Error NETWORK_CONNECTION during PutObject operation: curlCode: 7, "
                    "Could not connect to server")
    err = explain_failure(RuntimeError("worker failed"), "s3://b/runs/x", None, 0)
    assert not isinstance(err, StorageUnavailable)  # unrelated errors pass through unchanged
    wrapped = RuntimeError("Training failed")
    wrapped.__cause__ = cause
    err = explain_failure(wrapped, "s3://b/runs/x", "s3://b/runs/x/checkpoint_step_00000004", 1)
    assert isinstance(err, StorageUnavailable)
    assert "s3://b/runs/x/checkpoint_step_00000004" in str(err) and "run the same recipe again" in str(err)


def test_when_a_storage_uri_is_malformed_or_carries_credentials_then_it_is_refused():
    for bad, why in [("s3://AKIA:secret@bucket/x", "credentials must not be put"), ("ftp://host/x", "unsupported"),
                     ("s3://b/../etc", "invalid bucket|'..'"), ("s3://ok-bucket/a/../b", "'..'"), ("", "empty")]:
        with pytest.raises(storage.StorageError, match=why):
            storage.parse_uri(bad)


def test_when_a_uri_with_a_password_is_refused_then_the_error_does_not_repeat_the_password():
    for bad in ("ftp://user:hunter2@host/x", "s3://KEY:hunter2@bucket/x", "http://u:hunter2@h/p"):
        with pytest.raises(storage.StorageError) as err:
            storage.parse_uri(bad)
        assert "hunter2" not in str(err.value)


def test_when_ray_ships_the_s3_filesystem_to_a_worker_then_it_still_rides_out_a_short_outage(s3_server, s3_bucket):
    """Ray Train pickles RunConfig.storage_filesystem; the copy must keep the long retry budget (a plain
    pyarrow S3FileSystem comes back with 3 attempts and fails within a second)."""
    import pickle
    import threading

    from tests.fault_injection import start_moto, stop_moto

    storage.write_bytes(f"{s3_bucket}/ckpt/a.txt", b"x")
    fs, path = storage.arrow_filesystem(f"{s3_bucket}/ckpt/a.txt")
    shipped = pickle.loads(pickle.dumps(fs))
    stop_moto(s3_server)
    back = threading.Timer(3.0, start_moto, args=(s3_server,))
    back.start()
    try:
        info = shipped.get_file_info(path)  # issued while the store refuses connections
    finally:
        back.join()
    assert info.size == 1
