import math

import numpy as np
import pytest
import torch

from training.pooling import POOLINGS, GatedAttentionPool, NoisyAndPool, build_pooling

B, C, H, W = 3, 4, 5, 6


def make(name):
    params = {"a": 7.5} if name == "noisy_and" else {}
    return build_pooling(name, n_classes=C, in_features=C, params=params)


@pytest.mark.parametrize("name", POOLINGS)
def test_shape_range_and_finite_gradients(name):
    torch.manual_seed(0)
    pool = make(name)
    maps = torch.rand(B, C, H, W, requires_grad=True)
    out = pool(maps)
    assert out.shape == (B, C)
    assert torch.all((out >= 0) & (out <= 1))
    out.sum().backward()
    assert torch.isfinite(maps.grad).all() and maps.grad.abs().sum() > 0
    for p in pool.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", POOLINGS)
def test_extreme_maps_stay_in_range(name):
    pool = make(name)
    for value in (0.0, 1.0):
        out = pool(torch.full((B, C, H, W), value))
        assert torch.all((out >= 0) & (out <= 1))
        assert torch.allclose(out, torch.full_like(out, value), atol=1e-4) or name == "noisy_and"


@pytest.mark.parametrize("name", POOLINGS)
def test_invariant_to_permuting_instances(name):
    torch.manual_seed(1)
    pool = make(name)
    maps = torch.rand(B, C, H, W)
    perm = torch.randperm(H * W)
    shuffled = maps.flatten(2)[:, :, perm].view(B, C, H, W)
    # the attention embedding is the map itself here, so it moves with the instances
    assert torch.allclose(pool(maps), pool(shuffled), atol=1e-6)


def test_noisy_and_matches_the_paper_formula_by_hand():
    pool = NoisyAndPool(1, a=10.0, b_init=0.3)
    maps = torch.tensor([0.2, 0.4, 0.6, 0.8]).view(1, 1, 2, 2)  # mean 0.5
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    a, b, m = 10.0, 0.3, 0.5
    expected = (sig(a * (m - b)) - sig(-a * b)) / (sig(a * (1 - b)) - sig(-a * b))
    assert expected == pytest.approx(0.8757, abs=1e-4)  # by hand: (0.8808 - 0.0474) / (0.9991 - 0.0474) = 0.8334 / 0.9517
    assert pool(maps).item() == pytest.approx(expected, abs=1e-5)
    assert pool.b.item() == pytest.approx(0.3, abs=1e-6)


def test_noisy_and_end_points_and_threshold_bounds():
    pool = NoisyAndPool(2, a=5.0)
    assert torch.allclose(pool(torch.zeros(1, 2, 3, 3)), torch.zeros(1, 2), atol=1e-6)
    assert torch.allclose(pool(torch.ones(1, 2, 3, 3)), torch.ones(1, 2), atol=1e-6)
    with torch.no_grad():
        pool.b_logit.fill_(50.0)
    assert torch.all((pool.b >= 0) & (pool.b <= 1))
    with pytest.raises(ValueError, match="slope"):
        NoisyAndPool(2, a=0)


def test_max_and_mean_equal_numpy():
    maps = torch.rand(B, C, H, W)
    ref = maps.numpy().reshape(B, C, -1)
    np.testing.assert_allclose(make("max")(maps).numpy(), ref.max(-1), rtol=1e-6)
    np.testing.assert_allclose(make("mean")(maps).numpy(), ref.mean(-1), rtol=1e-6)


def test_lse_and_gm_lie_between_mean_and_max():
    maps = torch.rand(B, C, H, W)
    lo, hi = maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))
    for name in ("lse", "gm"):
        out = make(name)(maps)
        assert torch.all(out >= lo - 1e-6) and torch.all(out <= hi + 1e-6)


def test_attention_weights_are_exposed_and_sum_to_one():
    pool = GatedAttentionPool(in_features=8, n_classes=C)
    maps, features = torch.rand(B, C, H, W), torch.randn(B, 8, H, W)
    out = pool(maps, features)
    weights = pool.weights(maps, features)
    assert weights.shape == (B, C, H, W)
    assert torch.allclose(weights.sum(dim=(2, 3)), torch.ones(B, C), atol=1e-5)
    assert torch.allclose(pool.last_weights, weights)
    assert torch.allclose(out, (weights * maps).sum(dim=(2, 3)), atol=1e-6)


def test_unknown_pooling_and_bad_parameters_are_errors():
    with pytest.raises(ValueError, match="unknown pooling 'median'"):
        build_pooling("median", n_classes=2, in_features=2)
    with pytest.raises(ValueError, match="bad parameters"):
        build_pooling("max", n_classes=2, in_features=2, params={"r": 2})


@pytest.mark.parametrize("name", POOLINGS)
def test_mask_pools_only_the_valid_instances(name):
    """A masked bag pools exactly as its valid part alone; padding values do not matter."""
    torch.manual_seed(2)
    pool = make(name)
    maps = torch.rand(B, C, H, W)
    mask = torch.zeros(B, H, W, dtype=torch.bool)
    mask[:, :3, :4] = True
    padded = maps.clone()
    padded[~mask[:, None].expand_as(maps)] = 0.9  # padding that would pull every pooling up
    assert torch.allclose(pool(padded, mask=mask), pool(maps[:, :, :3, :4]), atol=1e-6)
    assert not torch.allclose(pool(padded), pool(maps[:, :, :3, :4]), atol=1e-3)
    with pytest.raises(ValueError, match="does not fit"):
        pool(maps, mask=mask[:, :2])


def test_model_pools_padded_images_over_their_own_instances():
    """MILCNN.forward(x, sizes): an image padded with background to share a batch gets the pooling
    of its valid map pixels only (ceil(size / stride) of them)."""
    from training.model import MILCNN, ModelConfig, valid_instances

    torch.manual_seed(3)
    model = MILCNN(ModelConfig(channels=("a",), classes=("x", "y"), pooling="noisy_and")).eval()
    with torch.no_grad():  # maps that differ between image and background
        model.head.weight.mul_(20.0)
        model.head.bias.zero_()
    x = torch.zeros(2, 1, 96, 96)
    x[0, :, :70, :66] = torch.rand(1, 70, 66)
    x[1] = torch.rand(1, 96, 96)
    with torch.no_grad():
        out = model(x, sizes=torch.tensor([[70, 66], [96, 96]]))
        plain = model(x)
        alone = model.pooling(out.class_maps[:1, :, :18, :17])
    assert valid_instances(torch.tensor([[70, 66]]), (24, 24), 4).sum() == 18 * 17
    assert torch.allclose(out.probabilities[0], alone[0], atol=1e-6)
    assert torch.allclose(out.probabilities[1], plain.probabilities[1], atol=1e-6)
    assert not torch.allclose(out.probabilities[0], plain.probabilities[0], atol=1e-4)
