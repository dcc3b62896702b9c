"""Statistics compensation: exact masked statistics at any magnitude, and scale restored as a feature."""
import numpy as np
import pytest
import torch

from step_dist.model import STEPEncoder, StudentConfig, collate
from step_dist.model.stats import compensate


@pytest.mark.parametrize("scale,offset", [(1e-21, 0.0), (1e-9, 3e-9), (1.0, 0.0), (1e3, -5e4), (1e9, 2e9)])
def test_when_values_have_extreme_magnitude_then_stats_match_float64_reference(scale, offset):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((3, 400)) * scale + offset).astype(np.float32)
    b = (rng.standard_normal((2, 150)) * scale + offset).astype(np.float32)
    values, lengths, _ = collate([a, b])
    z, feats = compensate(values, lengths)
    for rec, arr in ((0, a), (1, b)):
        ref = arr.astype(np.float64)
        mean, std = ref.mean(1), ref.std(1)
        np.testing.assert_allclose(np.log(std), feats[rec, : arr.shape[0], 1].numpy(), rtol=1e-5, atol=1e-5)
        sl = np.sign(mean) * np.log1p(np.abs(mean))
        np.testing.assert_allclose(sl, feats[rec, : arr.shape[0], 0].numpy(), rtol=1e-5, atol=1e-6)
        zr = (ref - mean[:, None]) / std[:, None]
        np.testing.assert_allclose(z[rec, : arr.shape[0], : arr.shape[1]].numpy(), zr, atol=2e-4)
    assert torch.isfinite(z).all() and torch.isfinite(feats).all()
    assert (z[1, :, 150:] == 0).all(), "padding must stay zero"


@pytest.mark.parametrize("level", [0.0, 7.0, -1e9, 1e-20])
def test_when_channel_is_constant_then_z_is_zero_and_features_finite(level):
    values = torch.full((1, 2, 64), level)
    values[0, 1] = torch.linspace(-1, 1, 64)
    z, feats = compensate(values, torch.tensor([64]))
    assert torch.all(z[0, 0] == 0)
    assert torch.isfinite(feats).all()
    assert z[0, 1].std(unbiased=False).item() == pytest.approx(1.0, rel=1e-4)


def test_when_padding_holds_garbage_then_statistics_ignore_it():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 100)).astype(np.float32)
    values = torch.full((1, 2, 300), float("nan"))
    values[0, :, :100] = torch.from_numpy(a)
    z, feats = compensate(values, torch.tensor([100]))
    z_ref, f_ref = compensate(torch.from_numpy(a)[None], torch.tensor([100]))
    assert torch.equal(z[..., :100], z_ref) and torch.equal(feats, f_ref)
    assert (z[..., 100:] == 0).all()


def _embed(cfg, arr):
    torch.manual_seed(0)
    enc = STEPEncoder(cfg).eval()
    return enc.encode(arr)


def test_when_inputs_differ_only_by_scale_then_compensation_tells_them_apart():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((2, 500)) + 0.3).astype(np.float32)
    for factor in (1024.0, 1e-6 * 1024):
        on = StudentConfig.named("tiny", stats_compensation=True)
        off = StudentConfig.named("tiny", stats_compensation=False)
        e_on = _embed(on, x), _embed(on, x * np.float32(factor))
        e_off = _embed(off, x), _embed(off, x * np.float32(factor))
        assert np.abs(e_on[0] - e_on[1]).max() > 1e-3, "with compensation the scale must reach the embedding"
        # a power of two commutes with every step of the z-scoring: the scale-blind model is bit-identical
        if factor == 1024.0:
            np.testing.assert_array_equal(e_off[0], e_off[1])
        np.testing.assert_allclose(e_off[0], e_off[1], atol=1e-5)
    # a non power of two differs only by float32 rounding of the inputs
    e_off = _embed(off, x), _embed(off, x * np.float32(1000.0))
    np.testing.assert_allclose(e_off[0], e_off[1], atol=1e-4)
