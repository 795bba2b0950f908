import math

import numpy as np
import pyro
import pytest
import torch
from scipy import stats

from ppl_audit.errors import InvalidInputError
from ppl_audit.priors import HouseRocketWorld, make_world
from ppl_audit.priors.house_rocket import HOUSE_ROOF, HOUSE_SHAPE, ROCKET_SHAPE


def _tn_logpdf(x, mean, sd):
    return stats.truncnorm.logpdf(x, -mean / sd, np.inf, loc=mean, scale=sd)


def test_log_prob_marginalises_the_class_exactly():
    world = HouseRocketWorld()
    z = world.sample(200, generator=torch.Generator().manual_seed(1)).double().numpy()
    rocket = sum(_tn_logpdf(z[:, i], *ROCKET_SHAPE[k]) for i, k in enumerate("wht"))
    house = sum(_tn_logpdf(z[:, i], *p) for i, p in enumerate([HOUSE_SHAPE["w"], HOUSE_SHAPE["h"], HOUSE_ROOF]))
    ref = np.logaddexp(np.log(0.5) + rocket, np.log(0.5) + house)
    got = world.log_prob(torch.from_numpy(z).float()).double().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_circle_world_adds_radius_and_uniform_centre():
    world = HouseRocketWorld(circle=True)
    plain = HouseRocketWorld()
    z = world.sample(100, generator=torch.Generator().manual_seed(2))
    assert z.shape == (100, 6)
    assert ((z[:, 4:] >= 20) & (z[:, 4:] <= 40)).all()
    expected = plain.log_prob(z[:, :3]) + torch.from_numpy(_tn_logpdf(z[:, 3].double().numpy(), 20.0, 10.0)).float() - 2 * math.log(20.0)
    assert torch.allclose(world.log_prob(z), expected, atol=1e-4)
    outside = z.clone()
    outside[0, 4] = 45.0
    assert world.log_prob(outside)[0] == -math.inf


def test_class_frequencies_and_means():
    world = HouseRocketWorld()
    z, c = world.sample_with_class(100_000, generator=torch.Generator().manual_seed(0))
    # Bernoulli(0.5): 5 standard deviations of 100,000 draws is 0.008
    assert abs(float(c.float().mean()) - 0.5) < 0.008
    assert abs(float(z[c == 0, 1].mean()) - 30.0) < 0.3  # rocket height: truncation barely moves N(30, 10^2)
    assert abs(float(z[c == 1, 0].mean()) - 30.0) < 0.3


def test_pyro_model_has_latent_site_z_and_plate():
    world = HouseRocketWorld()
    trace = pyro.poutine.trace(world.model).get_trace(num_particles=7)
    assert trace.nodes["z"]["value"].shape == (7, 3)
    assert torch.allclose(trace.nodes["z"]["fn"].log_prob(trace.nodes["z"]["value"]), world.log_prob(trace.nodes["z"]["value"]))


def test_unknown_world_and_bad_latent_shape():
    with pytest.raises(InvalidInputError, match="unknown world 'moon'"):
        make_world("moon")
    with pytest.raises(InvalidInputError, match=r"shape \(N, 3\)"):
        HouseRocketWorld().decode(torch.zeros(2, 4))


@pytest.mark.parametrize("circle", [False, True])
def test_the_standard_normal_transform_reproduces_the_prior(circle):
    world = HouseRocketWorld(circle=circle)
    n = 200_000
    u = torch.randn(n, world.normal_dim, generator=torch.Generator().manual_seed(0))
    z = world.from_normal(u)
    ref = world.sample(n, generator=torch.Generator().manual_seed(1))
    assert z.shape == ref.shape and bool(torch.isfinite(world.log_prob(z)).all())
    # Means and sds within 5 standard errors of two independent samples of 200,000.
    se = ref.std(0) * math.sqrt(2 / n)
    assert ((z.mean(0) - ref.mean(0)).abs() < 5 * se).all(), (z.mean(0), ref.mean(0))
    assert ((z.std(0) / ref.std(0) - 1).abs() < 0.01).all()
    # And whole marginals: the two-sample Kolmogorov-Smirnov test of every coordinate.
    for d in range(z.shape[1]):
        assert stats.ks_2samp(z[:20_000, d].numpy(), ref[:20_000, d].numpy()).pvalue > 1e-3


def test_the_class_coordinate_splits_at_the_class_probability():
    world = HouseRocketWorld()
    u = torch.zeros(2, world.normal_dim)
    u[0, 0], u[1, 0] = -1.0, 1.0  # Phi(-1) < 0.5: a house; Phi(1) > 0.5: a rocket
    z = world.from_normal(u)
    assert z[0, 0] > z[1, 0]  # at the median quantile a house is wider than a rocket


def test_from_normal_refuses_a_wrong_shape():
    with pytest.raises(InvalidInputError, match=r"u must have shape \(N, 4\)"):
        HouseRocketWorld().from_normal(torch.zeros(3, 3))
