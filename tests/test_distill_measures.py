"""Issue 16's measures: pooling modes (shape and masking), teacher recovery with a known answer, the held-out
validation slice, per-dimension target statistics, views of many lengths, the record-level loss term."""
import numpy as np
import pytest
import torch

from step_dist.data.split import in_validation
from step_dist.data.views import ViewConfig, view_window
from step_dist.distill.module import DistillationModule, DistillBatch, HeadConfig, record_cosine_loss
from step_dist.distill.target_stats import TargetStats
from step_dist.evaluate.recovery import ridge_r2
from step_dist.model import STEPEncoder, StudentConfig
from step_dist.model.pooling import POOLING_MODES


from tests.test_model_encoder import _records, tiny  # noqa: F401 - the encoder tests' fixture and records


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_when_records_are_pooled_then_shape_follows_the_mode_and_padding_never_changes_an_embedding(tiny, mode):
    d = tiny.config.d_model
    recs = _records([(3, 80), (3, 700), (3, 333)])
    width = {"mean": d, "mean+std": 2 * d, "mean+max": 2 * d, "channels": 3 * d}[mode]
    together = tiny.encode(recs, 50.0, batch_size=3, pooling=mode)
    assert together.shape == (3, width)
    # alone (no padding at all) == in a batch padded to 700 samples
    for i, r in enumerate(recs):
        alone = tiny.encode(r, 50.0, pooling=mode)
        np.testing.assert_allclose(alone, together[i], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["mean", "mean+std", "mean+max"])
def test_when_a_record_sits_next_to_one_with_more_channels_then_its_embedding_is_unchanged(tiny, mode):
    few, many = _records([(2, 300), (9, 300)], seed=1)
    alone = tiny.encode(few, 10.0, pooling=mode)
    mixed = tiny.encode([few, many], 10.0, batch_size=2, pooling=mode)
    np.testing.assert_allclose(alone, mixed[0], rtol=1e-4, atol=1e-5)


def test_when_channels_pooling_meets_different_channel_counts_then_the_error_says_so(tiny):
    with pytest.raises(ValueError, match="one channel count"):
        tiny.encode(_records([(2, 100), (3, 100)]), 10.0, pooling="channels")
    with pytest.raises(ValueError, match="pooling"):
        tiny.encode(_records([(1, 100)])[0], 10.0, pooling="median")


def test_when_the_student_equals_the_teacher_then_recovery_is_one_and_noise_recovers_nothing():
    rng = np.random.default_rng(0)
    teacher_tr, teacher_te = rng.standard_normal((200, 16)), rng.standard_normal((100, 16))
    assert ridge_r2(teacher_tr, teacher_tr, teacher_te, teacher_te) > 0.999
    # an invertible linear map of the teacher is as good as the teacher
    mix = rng.standard_normal((16, 16))
    assert ridge_r2(teacher_tr @ mix, teacher_tr, teacher_te @ mix, teacher_te) > 0.999
    noise_tr, noise_te = rng.standard_normal((200, 16)), rng.standard_normal((100, 16))
    assert ridge_r2(noise_tr, teacher_tr, noise_te, teacher_te) < 0.1


def test_when_records_are_split_then_validation_is_disjoint_stable_and_about_the_fraction():
    ids = [f"seismic:trace#{i}" for i in range(5000)]
    val = {i for i in ids if in_validation(i, 0.1)}
    assert 400 < len(val) < 600
    assert val == {i for i in ids if in_validation(i, 0.1)}  # same answer every call (no seed, no state)
    assert not any(in_validation(i, 0.0) for i in ids)
    # a larger fraction only adds records: what was held out stays held out
    assert val <= {i for i in ids if in_validation(i, 0.2)}


def test_when_the_pipeline_splits_a_batch_then_train_and_validation_views_partition_it():
    import pyarrow as pa

    from step_dist.data.pipeline import expand_views

    n = 200
    rows = {"id": [f"r{i}" for i in range(n)], "n_channels": [1] * n, "length": [64] * n,
            "sampling_rate_hz": [10.0] * n, "values": [np.arange(64, dtype="<f4").tobytes()] * n,
            "uri": ["x"] * n, "index": list(range(n)), "channel_names": [["c0"]] * n}
    table = pa.table(rows)
    view = {"max_length": 64, "min_length": 8}
    parts = {p: set(expand_views(table, view, {}, None, part=p, validation_fraction=0.2).column("id").to_pylist())
             for p in ("train", "validation", "all")}
    assert parts["train"] and parts["validation"]
    assert not parts["train"] & parts["validation"]
    assert parts["train"] | parts["validation"] == parts["all"] == set(rows["id"])
    assert parts["validation"] == {i for i in rows["id"] if in_validation(i, 0.2)}


def test_when_target_stats_accumulate_then_they_equal_the_corpus_statistics_and_survive_a_cast():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 50, 5)) * np.array([1.0, 10.0, 0.1, 3.0, 1e3]) + np.array([5.0, -2.0, 0.0, 100.0, 7.0])
    mask = torch.from_numpy(rng.random((7, 50)) < 0.7)
    stats = TargetStats(5)
    for b in range(7):  # batch by batch, as training sees them
        stats.update(torch.from_numpy(x[b : b + 1]).float(), mask[b : b + 1])
    real = x[mask.numpy()]
    np.testing.assert_allclose(stats.mean.numpy(), real.mean(0), rtol=1e-5)
    z = stats.normalise(torch.from_numpy(real).float()).numpy()
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(0, ddof=1), 1, rtol=1e-4)
    stats.to(torch.bfloat16)  # a bf16 run keeps these sums in float64
    assert stats.mean.dtype == torch.float64 and stats.count.dtype == torch.float64


def test_when_targets_are_whitened_then_their_directions_come_out_uncorrelated_with_unit_variance():
    rng = np.random.default_rng(1)
    # correlated targets: 6 dims driven by 3 factors of very different size, plus a little noise
    factors = rng.standard_normal((4000, 3)) * np.array([10.0, 1.0, 0.3])
    x = factors @ rng.standard_normal((3, 6)) + 0.05 * rng.standard_normal((4000, 6)) + 4.0
    mask = torch.ones(40, 100, dtype=torch.bool)
    batches = torch.from_numpy(x).float().view(40, 100, 6)
    stats = TargetStats(6, whiten=True, floor=1e-6)
    for b in range(40):
        stats.update(batches[b : b + 1], mask[b : b + 1])
    z = stats.normalise(torch.from_numpy(x).float()).double().numpy()
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(np.cov(z.T), np.eye(6), atol=2e-2)  # every direction counts alike
    std_only = TargetStats(6)
    for b in range(40):
        std_only.update(batches[b : b + 1], mask[b : b + 1])
    lam = np.linalg.eigvalsh(np.cov(std_only.normalise(torch.from_numpy(x).float()).double().numpy().T))
    assert lam.max() / lam.mean() > 2  # what standardising alone leaves: one direction dominates
    # the floor damps directions of almost no variance instead of amplifying their noise
    floored = TargetStats(6, whiten=True, floor=0.1)
    for b in range(40):
        floored.update(batches[b : b + 1], mask[b : b + 1])
    lam_f = np.linalg.eigvalsh(np.cov(floored.normalise(torch.from_numpy(x).float()).double().numpy().T))
    assert lam_f.min() < 0.2 and lam_f.max() == pytest.approx(1.0, abs=0.05)


def test_when_whitening_statistics_are_restored_then_the_targets_are_whitened_exactly_as_before():
    rng = np.random.default_rng(2)
    data = torch.from_numpy(rng.standard_normal((30, 20, 4)) @ rng.standard_normal((4, 4))).float()
    mask = torch.ones(1, 20, dtype=torch.bool)
    run = TargetStats(4, whiten=True, refresh_every=3)
    for b in range(13):  # off the refresh schedule: the whitener in use is from update 12
        run.update(data[b : b + 1], mask)
    resumed = TargetStats(4, whiten=True, refresh_every=3)
    resumed.load_state_dict(run.state_dict())  # what a checkpoint carries
    for b in range(13, 30):
        run.update(data[b : b + 1], mask)
        resumed.update(data[b : b + 1], mask)
        assert torch.equal(run.normalise(data[b]), resumed.normalise(data[b]))
    run.to(torch.bfloat16)
    assert run.whitener.dtype == torch.float64 and run.comoment.dtype == torch.float64


def test_when_views_span_log_uniform_lengths_then_they_cover_short_and_long_and_repeat_exactly():
    cfg = ViewConfig(max_length=4096, min_length=32, span="log_uniform", views_per_record=4, seed=3)
    spans = [view_window(f"r{i}", 10_000, cfg, k).length for i in range(200) for k in range(4)]
    assert min(spans) >= 32 and max(spans) <= 4096
    assert np.mean(np.array(spans) < 256) > 0.2 and np.mean(np.array(spans) > 1024) > 0.2
    assert spans == [view_window(f"r{i}", 10_000, cfg, k).length for i in range(200) for k in range(4)]
    short = view_window("tiny", 20, ViewConfig(max_length=4096, min_length=8, span="log_uniform"))
    assert short.length <= 20


def _batch(b=2, t=6, d=4, counts=(6, 3), rates=(100.0, 16000.0)):
    g = torch.Generator().manual_seed(0)
    return DistillBatch(torch.randn(b, 1, 400, generator=g), torch.tensor([400, 300]), torch.ones(b, 1, dtype=torch.bool),
                        torch.tensor(rates), {"t": torch.randn(b, t, d, generator=g) * 5 + 3},
                        {"t": torch.tensor(counts)})


def test_when_a_teacher_has_a_rate_range_then_records_outside_it_carry_no_target():
    torch.manual_seed(0)
    student = STEPEncoder(StudentConfig.named("tiny"))
    module = DistillationModule(student, [HeadConfig(name="t", dim=4, min_rate_hz=2000.0, target_norm="layer")])
    terms = module(_batch())
    assert int(terms["tokens/t"]) == 3  # only the 16 kHz record's tokens count
    unknown = _batch(rates=(float("nan"), 16000.0))
    assert int(module(unknown)["tokens/t"]) == 9  # an unknown rate is never excluded
    with pytest.raises(ValueError, match="min_rate_hz"):
        HeadConfig(name="t", dim=4, min_rate_hz=100.0, max_rate_hz=10.0)


def test_when_the_record_level_term_is_on_then_it_is_zero_for_matching_means_and_adds_to_the_total():
    pred = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    target = pred + (torch.randn(2, 5, 3) - torch.randn(2, 5, 3)) * 0  # same tokens: same means
    assert float(record_cosine_loss(pred, target, mask)) == pytest.approx(0.0, abs=1e-6)
    torch.manual_seed(0)
    student = STEPEncoder(StudentConfig.named("tiny"))
    module = DistillationModule(student, [HeadConfig(name="t", dim=4, pooled_weight=0.5)])
    terms = module(_batch())
    assert float(terms["loss"]) == pytest.approx(float(terms["penalty"] + terms["loss/t"] + 0.5 * terms["loss_pooled/t"]), rel=1e-5)
    # dataset normalisation: the statistics moved in training mode and stay put in eval mode
    count = float(module.target_stats["t"].count)
    assert count == 9
    module.eval()
    module(_batch())
    assert float(module.target_stats["t"].count) == count
