"""Teacher pools on Ray Data and the target cache, end to end on a real local Ray and a moto S3 bucket."""
from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from step_dist.data.views import ViewConfig
from step_dist.signals.record import SignalRecord
from step_dist.signals.shards import read_dataset, write_records
from step_dist.teachers import TeacherConfig, TeacherError, build_teacher
from step_dist.teachers.cache import CachedTargetsUDF, cached_stage, complete_runs, decode_target
from step_dist.teachers.commands import CacheTargetsConfig, run_cache_targets
from step_dist.teachers.stage import PoolConfig, expand_views, map_kwargs, teacher_stage


def _load_sibling(name):
    # the remote-code helpers live in their own test module; load it by path (tests/ may or may not be a package)
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_{name}", os.path.join(os.path.dirname(__file__), f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_remote = _load_sibling("test_teachers_hf_remote")
remote_cfg, save_counting_encoder = _remote.remote_cfg, _remote.save_counting_encoder

VIEW = ViewConfig(max_length=400, min_length=16, views_per_record=1, seed=3)


def _records(n=12):
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        c = 1 + i % 2
        length = [40, 300, 900][i % 3]  # 40 at 25 Hz is 160 samples at 100 Hz: too short for 'remote' below
        out.append(SignalRecord(id=f"rec-{i:02d}", source="synthetic", domain="seismic", sampling_rate_hz=25.0 + 25 * (i % 2),
                                values=rng.normal(size=(c, length)).astype(np.float32)))
    return out


@pytest.fixture
def shard_set(s3_bucket):
    uri = f"{s3_bucket}/shards"
    write_records(uri, _records(), shard_mb=0.004)
    return uri


def _views(uri):
    return read_dataset(uri).map_batches(expand_views, fn_kwargs={"view_cfg": dataclasses.asdict(VIEW)},
                                         batch_format="pyarrow", batch_size=4)


def _targets(rows, name):
    return {(r["id"], r["view_id"]): decode_target(r[f"t_{name}"], r[f"t_{name}_tokens"], r[f"t_{name}_dim"]) for r in rows}


def _calls(log):
    return sum(int(x) for x in open(log).read().split()) if os.path.exists(log) else 0


@pytest.mark.slow
def test_when_two_teacher_pools_stream_a_shard_set_then_every_record_appears_once_with_targets(ray_local, shard_set, tmp_path):
    remote = remote_cfg(save_counting_encoder(tmp_path / "m"), options={"rate_hz": 100.0, "context_length": 512, "min_length": 200})
    fracast = TeacherConfig(name="fracast", kind="fracast")
    ds = teacher_stage(_views(shard_set), fracast, PoolConfig(size=1, batch_size=4))
    ds = teacher_stage(ds, remote, PoolConfig(size=2, batch_size=3))
    rows = ds.take_all()
    ids = [r["id"] for r in rows]
    assert sorted(ids) == [f"rec-{i:02d}" for i in range(12)]  # each exactly once
    for r in rows:
        n = r["length"]
        assert n == min([40, 300, 900][int(r["id"][-2:]) % 3], VIEW.max_length)
        assert r["t_fracast_dim"] == 64 and r["t_fracast_tokens"] == -(-n // 16)
        assert len(r["t_fracast"]) == 4 * 64 * r["t_fracast_tokens"]
        up = n * 100 / r["sampling_rate_hz"]
        want = 0 if up < 200 else min(int(round(up)), 512) // 4
        assert r["t_remote_tokens"] == want and r["t_remote_dim"] == 8  # too-short views carry T = 0
    assert any(r["t_remote_tokens"] == 0 for r in rows)


def test_when_a_pool_asks_for_a_node_group_then_map_batches_gets_label_selector_and_resources():
    kw = map_kwargs(PoolConfig(size=3, num_gpus=1, label_selector={"step-dist/role": "teacher"}, resources={"teacher_slot": 1}))
    assert kw["compute"].min_size == kw["compute"].max_size == 3
    assert kw["num_gpus"] == 1 and kw["label_selector"] == {"step-dist/role": "teacher"}
    assert kw["resources"] == {"teacher_slot": 1}


@pytest.mark.slow
def test_when_targets_are_cached_then_a_cached_run_matches_online_without_invoking_teachers(ray_local, shard_set, tmp_path, s3_bucket):
    log = str(tmp_path / "calls.log")
    folder = save_counting_encoder(tmp_path / "m", call_log=log)
    remote = remote_cfg(folder, options={"rate_hz": 100.0, "context_length": 512, "min_length": 200})
    crepe = TeacherConfig(name="pitch", kind="crepe", options={"context_seconds": 1})
    cache_uri = f"{s3_bucket}/targets"
    cfg = CacheTargetsConfig(input=shard_set, out=cache_uri, view=VIEW, teachers=[remote, crepe],
                             pool=PoolConfig(size=1, batch_size=4), pools={"pitch": PoolConfig(size=2, batch_size=4)})
    man = run_cache_targets(cfg)
    assert man["rows"] == 12 and {t["name"] for t in man["teachers"]} == {"remote", "pitch"}
    assert _calls(log) > 0

    online = _views(shard_set)
    for t in (remote, crepe):
        online = teacher_stage(online, t, PoolConfig(size=1, batch_size=4))
    online_rows = online.take_all()
    before = _calls(log)
    cached_rows = cached_stage(_views(shard_set), cache_uri, [remote, crepe]).take_all()
    assert _calls(log) == before  # the cached run never ran the teacher's forward
    assert sorted(r["id"] for r in cached_rows) == [f"rec-{i:02d}" for i in range(12)]
    for name in ("remote", "pitch"):
        a, b = _targets(online_rows, name), _targets(cached_rows, name)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])

    # a changed preparation (another layer) or checkpoint has another fingerprint: the cache never matches
    with pytest.raises(TeacherError, match=r"no complete target cache for teacher remote"):
        CachedTargetsUDF(cache_uri, [dataclasses.replace(remote, layer=1)])
    retrained = save_counting_encoder(tmp_path / "m2", call_log=log, seed=1)
    with pytest.raises(TeacherError, match=r"no complete target cache for teacher remote"):
        CachedTargetsUDF(cache_uri, [dataclasses.replace(remote, checkpoint=retrained)])


@pytest.mark.slow
def test_when_a_cache_run_has_no_manifest_or_a_damaged_shard_then_it_is_never_used(ray_local, shard_set, s3_bucket, tmp_path):
    from step_dist import storage

    import yaml

    from step_dist import cli

    fc = TeacherConfig(name="fracast", kind="fracast")
    cache_uri = f"{s3_bucket}/targets"
    conf = {"input": shard_set, "out": cache_uri, "view": dataclasses.asdict(VIEW),
            "teachers": [{"name": "fracast", "kind": "fracast"}], "pools": {"fracast": {"size": 1, "batch_size": 8}}}
    storage.write_bytes(f"{s3_bucket}/conf/cache.yaml", yaml.safe_dump(conf).encode())
    assert cli.main(["cache-targets", "--config", f"{s3_bucket}/conf/cache.yaml"]) == 0
    (run_uri, man), = complete_runs(cache_uri)
    assert man["rows"] == 12 and man["teachers"][0]["fingerprint"] == build_teacher(fc, load=False).fingerprint
    udf = CachedTargetsUDF(cache_uri, [fc])
    batch = _views(shard_set).take_batch(3, batch_format="pyarrow")
    out = udf(batch)
    assert out["t_fracast_tokens"].to_pylist() == [-(-n // 16) for n in out["length"].to_pylist()]
    # a record the cache never saw: a clear miss naming it, or no target when configured so
    alien = batch.slice(0, 1).set_column(0, "id", __import__("pyarrow").array(["rec-unknown"]))
    with pytest.raises(TeacherError, match="record rec-unknown .*not in the target cache"):
        udf(alien)
    assert CachedTargetsUDF(cache_uri, [fc], on_miss="no_target")(alien)["t_fracast_tokens"].to_pylist() == [0]
    # a shard that changed after the manifest was written is refused
    shard = f"{run_uri}/{man['files'][0]['path']}"
    storage.write_bytes(shard, storage.read_bytes(shard)[:-10])
    with pytest.raises(TeacherError, match="manifest says"):
        CachedTargetsUDF(cache_uri, [fc])
    # an unfinished run (no manifest) is invisible
    fs, path = storage.fsspec_filesystem(f"{run_uri}/_manifest.json")
    fs.rm(path)
    assert complete_runs(cache_uri) == []
    with pytest.raises(TeacherError, match="no finished runs"):
        CachedTargetsUDF(cache_uri, [fc])
