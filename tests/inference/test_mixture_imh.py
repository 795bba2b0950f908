"""Gaussian-mixture proposals and the independent MH kernel: known answers, fixed seeds."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from ppl_audit.errors import InvalidInputError
from ppl_audit.inference.kernels import imh, mh, mixture


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def two_clusters(n=4000, seed=0):
    """0.3 N((-4,-4), I) + 0.7 N((4,4), 0.25 I) in 2-D, as one group (1, n, 2)."""
    g = seeded(seed)
    first = torch.rand(n, generator=g) < 0.3
    x = torch.where(first.unsqueeze(-1), torch.randn(n, 2, generator=g) - 4, 0.5 * torch.randn(n, 2, generator=g) + 4)
    return x.unsqueeze(0), float(first.float().mean())


def test_fit_recovers_the_weights_and_means_of_two_clusters():
    x, share = two_clusters()
    mix = mixture.fit(x, num_components=2, generator=seeded(1))
    order = mix.means[0, :, 0].argsort()
    # 4,000 points: the weight's standard error is ~0.007, the means' ~0.03; tolerances are > 3 of them.
    assert mix.log_weights[0, order].exp().tolist() == pytest.approx([share, 1 - share], abs=1e-3)
    assert mix.means[0, order].flatten().tolist() == pytest.approx([-4, -4, 4, 4], abs=0.1)
    cov = mix.scale_tril[0, order] @ mix.scale_tril[0, order].transpose(-1, -2)
    assert torch.diagonal(cov, dim1=-2, dim2=-1).flatten().tolist() == pytest.approx([1, 1, 0.25, 0.25], rel=0.1)


def test_one_component_is_the_weighted_gaussian_fit_exactly():
    g = seeded(2)
    x = torch.randn(1, 500, 3, generator=g, dtype=torch.float64) @ torch.tensor(
        [[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 2.0]], dtype=torch.float64)
    mix = mixture.fit(x, num_components=1, inflation=1.5, generator=g)
    mean = x[0].mean(0)
    cov = torch.cov(x[0].T, correction=0)
    cov = cov + torch.diag(mixture.RIDGE_FRACTION * torch.diagonal(cov))
    expected = MultivariateNormal(mean, 1.5**2 * cov)
    points = torch.randn(50, 3, generator=g, dtype=torch.float64)
    got = mix.log_prob(points, torch.zeros(50, dtype=torch.long))
    assert torch.allclose(got, expected.log_prob(points), atol=1e-9)


def test_zero_weight_points_are_ignored():
    x, _ = two_clusters(n=1000)
    log_w = torch.zeros(1, 1000).masked_fill(x[0, :, 0] < 0, -math.inf)  # keep only the right cluster
    mix = mixture.fit(x, log_w, num_components=1, generator=seeded(0))
    assert mix.means[0, 0].tolist() == pytest.approx([4, 4], abs=0.1)


def test_log_prob_with_a_defensive_component_integrates_to_one():
    x = torch.randn(1, 300, 1, generator=seeded(3), dtype=torch.float64) * 2 + 1
    mix = mixture.fit(x, num_components=3, inflation=1.2, defensive_weight=0.1, generator=seeded(4))
    assert mix.log_weights.shape == (1, 4)
    assert float(mix.log_weights.exp().sum()) == pytest.approx(1.0, abs=1e-12)
    assert float(mix.log_weights[0, -1].exp()) == pytest.approx(0.1)
    grid = torch.linspace(-30, 30, 60001, dtype=torch.float64).unsqueeze(-1)
    density = mix.log_prob(grid, torch.zeros(grid.shape[0], dtype=torch.long)).exp()
    assert float(torch.trapezoid(density, grid[:, 0])) == pytest.approx(1.0, abs=1e-6)


def test_draws_follow_the_mixture_of_their_group():
    # Two groups with known one-component mixtures: N(-2, 0.5^2) and N(3, 2^2).
    mix = mixture.GaussianMixture(torch.zeros(2, 1), torch.tensor([[[-2.0]], [[3.0]]]),
                                  torch.tensor([[[[0.5]]], [[[2.0]]]]))
    group = torch.tensor([0, 1]).repeat_interleave(20000)
    z = mix.sample(seeded(5), group)
    # 20,000 draws each: standard errors 0.0035 and 0.014 for the means.
    assert z[:20000].mean().item() == pytest.approx(-2.0, abs=0.02)
    assert z[20000:].mean().item() == pytest.approx(3.0, abs=0.07)
    assert z[:20000].std().item() == pytest.approx(0.5, rel=0.03)
    assert z[20000:].std().item() == pytest.approx(2.0, rel=0.03)
    lp = mix.log_prob(torch.tensor([[0.0], [0.0]]), torch.tensor([0, 1]))
    assert lp.tolist() == pytest.approx([Normal(-2.0, 0.5).log_prob(torch.tensor(0.0)).item(),
                                         Normal(3.0, 2.0).log_prob(torch.tensor(0.0)).item()], abs=1e-5)


@pytest.mark.parametrize("kwargs", [{"num_components": 0}, {"inflation": 0.9}])
def test_bad_fit_settings_are_input_errors(kwargs):
    with pytest.raises(InvalidInputError):
        mixture.fit(torch.randn(1, 10, 2), **kwargs)


def standard_normal(z):
    return Normal(0.0, 1.0).log_prob(z).sum(-1)


def test_independent_mh_leaves_its_target_invariant_with_a_poor_proposal():
    # Chains start exactly at N(0, 1) and propose from a shifted, wider N(1, 2^2):
    # invariance keeps them at N(0, 1) (without the q-ratio they would drift to q).
    n = 40000
    g = seeded(6)
    q = mixture.GaussianMixture(torch.zeros(1, 1), torch.ones(1, 1, 1), 2.0 * torch.ones(1, 1, 1, 1))
    state = mh.init(torch.randn(n, 1, generator=g), standard_normal)
    group = torch.zeros(n, dtype=torch.long)
    for _ in range(5):
        state, info = imh.step(g, state, standard_normal, proposal=q, group=group)
    z = state.position[:, 0]
    # Standard errors with 40,000 independent chains: 0.005 (mean), ~0.007 (variance).
    assert abs(float(z.mean())) < 0.03
    assert float(z.var()) == pytest.approx(1.0, abs=0.04)
    assert 0.3 < float(info.accepted.float().mean()) < 0.9


def test_independent_mh_jumps_from_a_bad_start_in_a_few_steps():
    n = 20000
    g = seeded(7)
    q = mixture.GaussianMixture(torch.zeros(1, 1), torch.zeros(1, 1, 1), 1.2 * torch.ones(1, 1, 1, 1))
    state = mh.init(torch.full((n, 1), 6.0), standard_normal)
    for _ in range(20):
        state, _ = imh.step(g, state, standard_normal, proposal=q, group=torch.zeros(n, dtype=torch.long))
    assert abs(float(state.position.mean())) < 0.05
    assert float(state.position.var()) == pytest.approx(1.0, abs=0.05)


def test_independent_mh_needs_one_group_per_chain():
    q = mixture.GaussianMixture(torch.zeros(1, 1), torch.zeros(1, 1, 1), torch.ones(1, 1, 1, 1))
    state = mh.init(torch.zeros(4, 1), standard_normal)
    with pytest.raises(InvalidInputError, match="group"):
        imh.step(seeded(), state, standard_normal, proposal=q, group=torch.zeros(3, dtype=torch.long))
