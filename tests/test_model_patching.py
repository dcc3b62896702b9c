"""Adaptive patching: token counts inside bounds, penalty, gradients to the stride MLP, forcing, fixed mode."""
import math

import pytest
import torch

from step_dist.model import AdaptivePatching, STEPEncoder, StudentConfig

LENGTHS = [30, 33, 100, 1_000, 10_000, 100_000, 240_000, 1_000_000]


def test_when_lengths_span_thirty_to_a_million_then_token_counts_stay_inside_bounds():
    cfg = StudentConfig.named("tiny")
    plan = AdaptivePatching(cfg).plan(torch.tensor(LENGTHS))
    n = plan.n_tokens
    assert ((n >= cfg.n_min) & (n <= cfg.n_max)).all(), n.tolist()
    assert torch.all(plan.stride >= 1)
    # the tokens cover the record: N strides reach the end of it, N-1 do not
    t = torch.tensor(LENGTHS, dtype=torch.float32)
    assert torch.all(n * plan.stride >= t * (1 - 1e-6)) and torch.all((n - 1) * plan.stride < t)


def test_when_the_stride_mlp_wants_too_many_tokens_then_the_hard_cap_holds_and_stride_covers_the_record():
    cfg = StudentConfig.named("tiny", init_tokens=5000, max_tokens=150)
    lengths = torch.tensor([20_000, 1_000_000])
    plan = AdaptivePatching(cfg).plan(lengths)
    assert plan.n_tokens.tolist() == [150, 150]
    torch.testing.assert_close(plan.stride * 150, lengths.float())
    assert plan.penalty > 0  # N' = T/S is far above n_max


def test_when_stride_and_tokens_are_inside_bounds_then_penalty_is_exactly_zero():
    plan = AdaptivePatching(StudentConfig.named("tiny")).plan(torch.tensor([100, 1_000, 5_000]))
    assert plan.penalty.item() == 0.0


@pytest.mark.parametrize(
    "overrides,length,stride_should",
    [
        ({}, 1_000_000, "shrink"),  # stride 1 + 1e6/64 > s_max = 400
        ({"n_min": 100}, 1_000, "shrink"),  # 60 tokens < n_min
        ({"init_tokens": 500, "max_tokens": 1000}, 10_000, "grow"),  # ~476 tokens > n_max = 200
    ],
)
def test_when_stride_or_tokens_leave_bounds_then_penalty_is_positive_and_pushes_back(overrides, length, stride_should):
    patching = AdaptivePatching(StudentConfig.named("tiny", **overrides))
    plan = patching.plan(torch.tensor([length]))
    assert plan.penalty.item() > 0
    plan.penalty.backward()
    # log(S - 1) rises with skip_bias, so gradient descent moves the stride the way the sign says
    grad = patching.skip_bias.grad.item()
    assert (grad > 0) if stride_should == "shrink" else (grad < 0), grad


def test_when_training_on_the_task_loss_then_gradients_reach_the_patching_mlp():
    torch.manual_seed(0)
    enc = STEPEncoder(StudentConfig.named("tiny"))
    values = torch.randn(2, 2, 3_000)
    out = enc(values, torch.tensor([3_000, 1_200]))
    assert out.penalty.item() == 0.0  # so no gradient below comes from the penalty
    (out.tokens.square().mean() + out.pooled.sum()).backward()
    p = enc.patching
    for name, param in [("skip_scale", p.skip_scale), ("skip_bias", p.skip_bias), ("mlp.2.weight", p.mlp[2].weight)]:
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_when_pooling_windows_then_gradients_flow_through_window_centres_and_widths():
    # the pooled tokens alone (no stride embedding, no penalty) must depend differentiably on the stride
    patching = AdaptivePatching(StudentConfig.named("tiny"))
    lengths = torch.tensor([3_000, 1_200])
    features = torch.randn(2, 3_000, 5) * (torch.arange(3_000) < lengths[:, None])[..., None]
    plan = patching.plan(lengths)
    patching.pool(features, lengths, plan).square().sum().backward()
    assert patching.skip_bias.grad.abs() > 0 and patching.mlp[2].weight.grad.abs().sum() > 0


def test_when_token_count_is_forced_then_output_has_exactly_that_many_tokens():
    enc = STEPEncoder(StudentConfig.named("tiny"))
    lengths = torch.tensor([5_000, 700, 40])
    forced = torch.tensor([7, 512, 50])  # 50 tokens from 40 samples: stride below one sample is allowed
    out = enc(torch.randn(3, 1, 5_000), lengths, num_tokens=forced)
    assert out.n_tokens.tolist() == forced.tolist()
    assert out.token_mask.sum(1).tolist() == forced.tolist()
    assert out.tokens.shape == (3, 512, 64)
    torch.testing.assert_close(out.stride, lengths.float() / forced.float())
    assert torch.isfinite(out.tokens).all() and out.penalty.item() == 0.0


def test_when_patching_is_fixed_then_stride_is_constant_and_there_is_no_mlp():
    cfg = StudentConfig.named("tiny", patching="fixed", fixed_stride=16.0)
    patching = AdaptivePatching(cfg)
    assert not list(patching.parameters())
    plan = patching.plan(torch.tensor([1_600, 50, 100_000]))
    assert plan.n_tokens.tolist() == [100, 4, 200]
    torch.testing.assert_close(plan.stride, torch.tensor([16.0, 16.0, 500.0]))  # capped: stretched to cover T
    fixed_n = AdaptivePatching(StudentConfig.named("tiny", patching="fixed", fixed_tokens=32))
    assert fixed_n.plan(torch.tensor([90, 90_000])).n_tokens.tolist() == [32, 32]


def test_when_windows_are_built_then_each_real_token_reads_only_its_own_neighbourhood():
    cfg = StudentConfig.named("tiny", sub_points=1)
    patching = AdaptivePatching(cfg)
    lengths = torch.tensor([1_000, 300])
    plan = patching.plan(lengths)
    idx, weights = patching.window_weights(plan, lengths)
    real = plan.token_mask()
    sums = weights.sum(-1)[..., 0]
    torch.testing.assert_close(sums[real], torch.ones(int(real.sum())))
    assert (sums[~real] == 0).all()
    read = weights[..., 0, :] > 0
    stride = plan.stride.detach()
    dist = (idx.float() + 0.5 - plan.centres().detach()[..., None]).abs()
    assert (dist[read] <= (stride[:, None, None].expand_as(dist))[read] + 1e-4).all()  # window ~ 2S
    assert (idx[1][read[1]] < 300).all()  # never past the end of the short record
    assert idx.shape[-1] <= math.ceil(2 * float(stride.max())) + 2  # no T x N matrix
