"""The distillation module: losses, alignment to each teacher's token count, masks for missing targets."""
from __future__ import annotations

import pytest
import torch

from step_dist.distill import DistillationModule, DistillBatch, HeadConfig, build_loss, resample_tokens
from step_dist.distill.align import pool_tokens_to
from step_dist.model import STEPEncoder, StudentConfig


def test_when_predictions_equal_targets_then_every_loss_is_zero():
    x = torch.randn(2, 5, 8)
    mask = torch.ones(2, 5, dtype=torch.bool)
    for spec in ("cosine", "mse", "smooth_l1", "cosine+mse"):
        assert build_loss(spec)(x, x.clone(), mask).item() == pytest.approx(0.0, abs=1e-6)


def test_when_tokens_are_masked_then_they_do_not_count_in_the_loss():
    pred, tgt = torch.zeros(1, 4, 3), torch.zeros(1, 4, 3)
    tgt[0, 3] = 100.0  # garbage in the padded position
    mask = torch.tensor([[True, True, True, False]])
    assert build_loss("mse")(pred, tgt, mask).item() == 0.0


def test_when_a_loss_name_is_unknown_then_the_error_lists_the_choices():
    with pytest.raises(ValueError, match="cosine"):
        build_loss("cosine+l7")


def test_when_tokens_are_resampled_then_each_record_gets_its_teachers_count_and_constant_sequences_stay_constant():
    tokens = torch.zeros(2, 6, 4)
    tokens[0, :5] = 3.0  # record 0 has 5 real tokens, record 1 has 6
    tokens[1] = torch.arange(6.0)[:, None]
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    out = resample_tokens(tokens, mask, torch.tensor([9, 3]))
    assert out.shape == (2, 9, 4)
    assert torch.allclose(out[0], torch.full((9, 4), 3.0))
    assert torch.all(out[1, 3:] == 0) and out[1, 0, 0] < out[1, 1, 0] < out[1, 2, 0]


def _batch(counts_a, counts_b):
    values = torch.randn(3, 2, 400)
    lengths = torch.tensor([400, 250, 90])
    cm = torch.tensor([[1, 1], [1, 0], [1, 1]], dtype=torch.bool)
    rates = torch.tensor([100.0, 16000.0, 1.0])
    ta, tb = torch.tensor(counts_a), torch.tensor(counts_b)
    return DistillBatch(values, lengths, cm, rates,
                        {"a": torch.randn(3, int(ta.max()), 16), "b": torch.randn(3, max(int(tb.max()), 1), 8)},
                        {"a": ta, "b": tb})


@pytest.mark.parametrize("align", ["resample", "pool", "forced"])
def test_when_a_record_has_no_target_then_its_loss_term_ignores_it_and_gradients_reach_the_student(align):
    torch.manual_seed(0)
    student = STEPEncoder(StudentConfig.named("tiny"))
    module = DistillationModule(student, [HeadConfig("a", 16, align=align), HeadConfig("b", 8, weight=0.5, loss="mse", align=align)])
    terms = module(_batch([7, 0, 3], [0, 0, 0]))
    assert torch.isfinite(terms["loss"])
    assert terms["tokens/a"].item() == 10 and terms["tokens/b"].item() == 0
    assert terms["loss/b"].item() == 0.0  # no record had a target for b
    terms["loss"].backward()
    # resampling keeps the learnt stride in the graph; a forced stride is fixed by the teacher (no MLP gradient)
    trained = student if align == "forced" else student.patching
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.parameters())
    assert module.heads["b"].weight.grad is None or module.heads["b"].weight.grad.abs().sum() == 0


def test_when_teacher_weights_change_then_the_total_is_their_weighted_sum():
    torch.manual_seed(0)
    student = STEPEncoder(StudentConfig.named("tiny"))
    module = DistillationModule(student, [HeadConfig("a", 16, weight=2.0), HeadConfig("b", 8, weight=0.25)], penalty_weight=3.0)
    t = module(_batch([5, 4, 3], [2, 2, 2]))
    expected = 2.0 * t["loss/a"] + 0.25 * t["loss/b"] + 3.0 * t["penalty"]
    assert t["loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_when_a_teacher_saw_only_the_head_of_a_view_then_only_the_students_tokens_of_that_head_are_aligned():
    tokens = torch.arange(8.0)[None, :, None].repeat(1, 1, 2)  # token i holds the value i
    mask = torch.ones(1, 8, dtype=torch.bool)
    head_only = resample_tokens(tokens, mask, torch.tensor([4]), coverage=torch.tensor([0.5]))
    assert torch.equal(head_only[0, :, 0], torch.arange(4.0))  # the first half, one to one
    whole = resample_tokens(tokens, mask, torch.tensor([4]))
    assert whole[0, -1, 0] > 5  # without coverage the last target token would describe the view's end


def test_when_a_teacher_crops_to_one_second_then_coverage_follows_the_records_rate():
    h = HeadConfig("crepe", 8, teacher_rate_hz=16000.0, teacher_context=16000, teacher_crops=True)
    assert h.coverage(400, 100.0) == pytest.approx(0.25)  # 4 s of a 100 Hz record, the teacher saw 1 s
    assert h.coverage(4000, 16000.0) == 1.0
    assert HeadConfig("f", 8, teacher_context=1024, teacher_crops=True).coverage(4096, 1.0) == pytest.approx(0.25)
    assert HeadConfig("g", 8, teacher_context=1024, teacher_crops=False).coverage(4096, 1.0) == 1.0


def test_when_a_ragged_batch_is_resampled_at_once_then_each_record_equals_its_own_interpolate():
    """The batched resampling must give, record by record, what F.interpolate(linear) gives on that record's
    real (and covered) tokens: shrinking, stretching, equal counts, one token, and no target at all."""
    import math

    import torch.nn.functional as F

    torch.manual_seed(3)
    real = [7, 1, 12, 5, 9, 3]
    counts = torch.tensor([3, 4, 12, 0, 20, 3])
    cover = torch.tensor([1.0, 1.0, 0.4, 1.0, 0.75, 1.0])
    tokens = torch.randn(len(real), 12, 5, dtype=torch.float64)
    mask = torch.arange(12)[None, :] < torch.tensor(real)[:, None]
    out = resample_tokens(tokens, mask, counts, coverage=cover)
    assert out.shape == (len(real), 20, 5)
    for i, n in enumerate(real):
        n = min(n, max(1, math.ceil(float(cover[i]) * n - 1e-6)))
        t = int(counts[i])
        if t:
            want = F.interpolate(tokens[i, :n].T[None], size=t, mode="linear", align_corners=False)[0].T
            torch.testing.assert_close(out[i, :t], want)
        assert torch.all(out[i, t:] == 0)


def test_when_student_tokens_are_pooled_to_a_coarser_teacher_then_each_target_is_the_mean_over_its_span():
    tokens = torch.randn(2, 12, 3)
    mask = torch.arange(12)[None, :] < torch.tensor([[12], [9]])
    out = pool_tokens_to(tokens, mask, torch.tensor([4, 3]))
    # 12 tokens to 4: three a target; 9 real tokens to 3: three a target, padding never weighs in
    torch.testing.assert_close(out[0], tokens[0].view(4, 3, 3).mean(1))
    torch.testing.assert_close(out[1, :3], tokens[1, :9].view(3, 3, 3).mean(1))
    assert torch.equal(out[1, 3], torch.zeros(3))
    # spans that cut a token share it by overlap: 3 tokens to 2 targets -> 1.5 tokens each
    three = torch.tensor([[[0.0], [3.0], [6.0]]])
    torch.testing.assert_close(pool_tokens_to(three, torch.ones(1, 3, dtype=torch.bool), torch.tensor([2]))[0, :, 0],
                               torch.tensor([(0.0 + 0.5 * 3.0) / 1.5, (0.5 * 3.0 + 6.0) / 1.5]))
    # a finer teacher takes the student token it lies in; a teacher that saw half the view splits that half
    fine = pool_tokens_to(three, torch.ones(1, 3, dtype=torch.bool), torch.tensor([6]))[0, :, 0]
    torch.testing.assert_close(fine, torch.tensor([0.0, 0.0, 3.0, 3.0, 6.0, 6.0]))
    half = pool_tokens_to(tokens[:1], mask[:1], torch.tensor([2]), coverage=torch.tensor([0.5]))
    torch.testing.assert_close(half[0], tokens[0, :6].view(2, 3, 3).mean(1))
