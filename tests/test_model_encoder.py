"""The encoder on ragged batches: shapes, masks, padding invariance, encode() on raw numpy arrays."""
import numpy as np
import pytest
import torch

from step_dist.model import STEPEncoder, StudentConfig, collate


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return STEPEncoder(StudentConfig.named("tiny")).eval()


def _records(spec, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((c, t)) * 10.0 ** rng.uniform(-6, 6)).astype(np.float32) for c, t in spec]


def test_when_batch_is_ragged_then_shapes_and_masks_cover_only_real_parts(tiny):
    spec = [(64, 30), (3, 777), (1, 5_000), (17, 240)]
    values, lengths, cmask = collate(_records(spec))
    assert values.shape == (4, 64, 5_000) and cmask.sum(1).tolist() == [64, 3, 1, 17]
    with torch.no_grad():
        out = tiny(values, lengths, cmask, sampling_rate_hz=torch.tensor([100.0, 1.2e-5, 3.2e6, 250.0]))
    b, c, n, d = out.channel_tokens.shape
    assert (b, c, d) == (4, 64, 64) and n == int(out.n_tokens.max())
    assert out.tokens.shape == (4, n, 64) and out.pooled.shape == (4, 64) and out.token_mask.shape == (4, n)
    assert out.token_mask.sum(1).tolist() == out.n_tokens.tolist()
    assert torch.isfinite(out.channel_tokens).all() and torch.isfinite(out.pooled).all()
    # padding is exactly zero, real parts are not
    assert (out.channel_tokens[~cmask] == 0).all()
    assert (out.tokens[~out.token_mask] == 0).all()
    assert (out.tokens[out.token_mask].abs().sum(-1) > 0).all()


def test_when_a_record_is_a_million_samples_long_then_one_forward_works():
    torch.manual_seed(0)
    enc = STEPEncoder(StudentConfig.named("tiny")).eval()
    values = torch.randn(1, 1, 1_000_000) * 1e-21  # strain-like magnitude
    with torch.no_grad():
        out = enc(values, torch.tensor([1_000_000]), sampling_rate_hz=torch.tensor([4096.0]))
    n = int(out.n_tokens[0])
    assert 1 <= n <= enc.config.token_cap and out.tokens.shape == (1, n, 64)
    assert torch.isfinite(out.pooled).all()


def test_when_a_record_is_padded_into_a_batch_then_its_output_is_unchanged(tiny):
    a, long, wide = _records([(3, 123), (2, 4_000), (9, 600)], seed=3)
    with torch.no_grad():
        v, l, m = collate([a])
        alone = tiny(v, l, m, sampling_rate_hz=torch.tensor([50.0]))
        v, l, m = collate([long, a, wide])
        v[1, :, 123:] = 1e30  # garbage in the padding must never be read
        v[1, 3:, :] = float("nan")
        batch = tiny(v, l, m, sampling_rate_hz=torch.tensor([1.0, 50.0, 2.0]))
    n = int(alone.n_tokens[0])
    assert int(batch.n_tokens[1]) == n
    torch.testing.assert_close(batch.channel_tokens[1, :3, :n], alone.channel_tokens[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batch.tokens[1, :n], alone.tokens[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(batch.pooled[1], alone.pooled[0], atol=1e-5, rtol=1e-4)


def test_when_token_count_is_forced_in_a_padded_batch_then_the_real_part_is_unchanged(tiny):
    a, long = _records([(2, 300), (1, 3_000)], seed=4)
    with torch.no_grad():
        v, l, m = collate([a])
        alone = tiny(v, l, m, num_tokens=torch.tensor([25]))
        v, l, m = collate([a, long])
        batch = tiny(v, l, m, num_tokens=torch.tensor([25, 180]))
    assert batch.tokens.shape[1] == 180 and int(batch.n_tokens[0]) == 25
    torch.testing.assert_close(batch.tokens[0, :25], alone.tokens[0], atol=1e-5, rtol=1e-4)
    assert (batch.tokens[0, 25:] == 0).all()


def test_when_encoding_raw_arrays_then_batching_and_order_do_not_change_embeddings(tiny):
    recs = _records([(1, 30), (4, 2_000), (2, 333), (1, 90), (3, 1_500)], seed=5)
    rates = [1.0, 100.0, 20.0, 1e-5, 500.0]
    together = tiny.encode(recs, rates, batch_size=3)
    assert together.shape == (5, 64) and together.dtype == np.float32
    for i, r in enumerate(recs):
        np.testing.assert_allclose(tiny.encode(r, rates[i]), together[i], atol=1e-5, rtol=1e-4)
    pooled, tokens = tiny.encode(recs[1].ravel(), return_tokens=True)  # 1-D input = one channel
    assert pooled.shape == (64,) and tokens.ndim == 2 and tokens.shape[1] == 64


def test_when_input_has_nan_or_no_channel_then_the_error_says_which_record(tiny):
    bad = np.ones((2, 50), dtype=np.float32)
    bad[1, 7] = np.nan
    with pytest.raises(ValueError, match=r"record 1: non-finite value at channel 1, sample 7"):
        tiny.encode([np.ones((1, 40), np.float32), bad])
    with pytest.raises(ValueError, match="record 0 in the batch has no real channel"):
        tiny(torch.zeros(1, 2, 10), torch.tensor([10]), torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="record 1 in the batch has length 0"):
        tiny(torch.zeros(2, 1, 10), torch.tensor([10, 0]))


def test_when_sizes_are_named_then_base_has_about_120m_parameters():
    counts = {n: STEPEncoder(StudentConfig.named(n)).num_parameters() for n in ("tiny", "small", "base")}
    print("student parameters:", counts)
    assert counts["tiny"] < counts["small"] < counts["base"]
    assert 110e6 < counts["base"] < 130e6


def test_when_gradient_checkpointing_is_on_then_gradients_match():
    torch.manual_seed(0)
    cfg = StudentConfig.named("tiny")
    a = STEPEncoder(cfg)
    b = STEPEncoder(StudentConfig.named("tiny", gradient_checkpointing=True))
    b.load_state_dict(a.state_dict())
    x, lengths = torch.randn(2, 3, 800), torch.tensor([800, 500])
    for m in (a, b):
        out = m(x, lengths)
        (out.pooled.square().sum() + out.penalty).backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_when_run_under_bfloat16_autocast_then_stride_and_windows_stay_float32():
    torch.manual_seed(0)
    tiny = STEPEncoder(StudentConfig.named("tiny")).eval()
    values, lengths = torch.randn(2, 2, 200_000), torch.tensor([200_000, 777])
    with torch.no_grad():
        tiny.patching.mlp[2].bias.fill_(-0.7123)  # a trained-looking MLP whose output bf16 would round
        tiny.patching.mlp[2].weight.normal_(0, 0.3)
        ref = tiny(values, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = tiny(values, lengths)
    assert low.stride.dtype == torch.float32
    torch.testing.assert_close(low.stride, ref.stride)
    assert torch.equal(low.n_tokens, ref.n_tokens) and torch.isfinite(low.pooled.float()).all()
    cos = torch.nn.functional.cosine_similarity(low.pooled.float(), ref.pooled, dim=-1)
    assert (cos > 0.95).all(), cos


def test_when_attention_sees_a_single_key_then_the_shortcut_equals_full_attention_in_value_and_gradient():
    """Attention over one key (the channel axis of single-channel records) skips the attention kernel; the
    result and every gradient must be the ones the full softmax attention gives."""
    from step_dist.model.layers import Attention

    torch.manual_seed(0)
    attn = Attention(dim=32, heads=4, dropout=0.0)
    x = torch.randn(6, 1, 32)
    short = attn(x, None)
    short.square().sum().backward()
    grads_short = {n: p.grad.clone() for n, p in attn.named_parameters()}
    attn.zero_grad()
    # the full path: the same module with the key repeated twice, where a mask hides the copy
    full = attn(torch.cat([x, x], dim=1), torch.tensor([[True, False]] * 6))[:, :1]
    full.square().sum().backward()
    torch.testing.assert_close(short, full, rtol=1e-5, atol=1e-6)
    for n, p in attn.named_parameters():
        torch.testing.assert_close(grads_short[n], p.grad, rtol=1e-4, atol=1e-6, msg=f"gradient of {n}")
