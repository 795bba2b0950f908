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
