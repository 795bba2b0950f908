"""Unit-cube prior transforms (nested samplers' ``prior_transform``): they reproduce each prior's moments.

Tolerances: with ``n`` independent draws, a sample mean is off by more than ``Z_TOL`` standard errors
``sd / sqrt(n)`` with probability ~6e-5 per coordinate, and a sample sd by more than ``Z_TOL`` of its
standard error ``sqrt(m4 - var^2) / (2 sd sqrt(n))`` (delta method, ``m4`` the fourth central moment
estimated from the same draws) about as rarely; the seed is fixed, so the test is deterministic.
"""

import math

import pytest
import torch
from scipy import stats
from torch import nn

from ppl_audit.errors import InvalidInputError
from ppl_audit.priors import DecoderPrior, HouseRocketWorld
from ppl_audit.priors.house_rocket import CIRCLE_CENTRE_RANGE, CIRCLE_RADIUS, HOUSE_PROBABILITY, HOUSE_ROOF, \
    HOUSE_SHAPE, ROCKET_SHAPE

N = 200_000  # draws per moment check: each mean within ~0.01 sd
Z_TOL = 4.0  # standard errors allowed (two-sided p ~ 6e-5 per coordinate)


def _truncated_moments(mean, sd):
    d = stats.truncnorm(-mean / sd, math.inf, loc=mean, scale=sd)
    return d.mean(), d.var()


def _mixture_moments(circle: bool):
    """Exact means and sds of the house/rocket prior (class mixture of truncated normals, uniform centre)."""
    rocket = [ROCKET_SHAPE["w"], ROCKET_SHAPE["h"], ROCKET_SHAPE["t"]]
    house = [HOUSE_SHAPE["w"], HOUSE_SHAPE["h"], HOUSE_ROOF]
    if circle:
        rocket, house = rocket + [CIRCLE_RADIUS], house + [CIRCLE_RADIUS]
    means, sds = [], []
    for r, h in zip(rocket, house):
        (mr, vr), (mh, vh) = _truncated_moments(*r), _truncated_moments(*h)
        p = HOUSE_PROBABILITY
        m = (1 - p) * mr + p * mh
        means.append(m)
        sds.append(math.sqrt((1 - p) * (vr + mr ** 2) + p * (vh + mh ** 2) - m ** 2))
    if circle:
        lo, hi = CIRCLE_CENTRE_RANGE
        means += [(lo + hi) / 2] * 2
        sds += [(hi - lo) / math.sqrt(12)] * 2
    return torch.tensor(means, dtype=torch.float64), torch.tensor(sds, dtype=torch.float64)


def _assert_moments(z: torch.Tensor, mean: torch.Tensor, sd: torch.Tensor):
    z = z.double()
    n = z.shape[0]
    centred = z - z.mean(0)
    var = centred.square().mean(0)
    m4 = centred.pow(4).mean(0)
    mean_err = (z.mean(0) - mean).abs() / (sd / math.sqrt(n))
    sd_err = (var.sqrt() - sd).abs() / ((m4 - var ** 2).sqrt() / (2 * var.sqrt() * math.sqrt(n)))
    assert (mean_err < Z_TOL).all(), f"means {z.mean(0).tolist()} vs {mean.tolist()}: {mean_err.tolist()} SE"
    assert (sd_err < Z_TOL).all(), f"sds {var.sqrt().tolist()} vs {sd.tolist()}: {sd_err.tolist()} SE"


@pytest.mark.parametrize("circle", [False, True])
def test_house_rocket_transform_reproduces_the_prior_moments(circle):
    world = HouseRocketWorld(circle=circle)
    u = torch.rand(N, world.unit_cube_dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    z = world.from_unit_cube(u)
    assert z.shape == (N, world.latent_dim)
    assert torch.isfinite(world.log_prob(z)).all()
    _assert_moments(z, *_mixture_moments(circle))


def test_house_rocket_class_coordinate_picks_the_class():
    world = HouseRocketWorld()
    u = torch.full((2, 4), 0.5, dtype=torch.float64)
    u[0, 0], u[1, 0] = 0.25, 0.75  # below P(house) = 0.5: a house (wide, flat); above: a rocket (narrow, tall)
    z = world.from_unit_cube(u)
    assert z[0, 0] > z[1, 0] and z[0, 1] < z[1, 1]


def test_truncated_normal_quantiles_match_scipy():
    world = HouseRocketWorld()
    u = torch.tensor([[0.9, 1e-9, 0.5, 1 - 1e-9]], dtype=torch.float64)
    z = world.from_unit_cube(u)[0].double()
    want = [stats.truncnorm.ppf(q, -m / s, math.inf, loc=m, scale=s)
            for q, (m, s) in zip(u[0, 1:].tolist(), [ROCKET_SHAPE["w"], ROCKET_SHAPE["h"], ROCKET_SHAPE["t"]])]
    assert torch.allclose(z, torch.tensor(want, dtype=torch.float64), rtol=1e-5, atol=1e-5)  # float32 latents


def test_decoder_prior_transform_is_the_normal_inverse_cdf():
    prior = DecoderPrior(nn.Sequential(nn.Linear(5, 784), nn.Sigmoid()), 5)
    u = torch.rand(N, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    z = prior.from_unit_cube(u)
    assert torch.allclose(z, torch.special.ndtri(u))
    _assert_moments(z, torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64))


@pytest.mark.parametrize("prior", [HouseRocketWorld(), HouseRocketWorld(circle=True),
                                   DecoderPrior(nn.Sequential(nn.Linear(5, 784), nn.Sigmoid()), 5)],
                         ids=["house-rocket", "circle", "decoder"])
def test_the_cube_faces_map_to_finite_latents(prior):
    for face in (0.0, 1.0):
        z = prior.from_unit_cube(torch.full((1, prior.unit_cube_dim), face, dtype=torch.float64))
        assert torch.isfinite(z).all() and torch.isfinite(prior.log_prob(z.float())).all()


@pytest.mark.parametrize("prior", [HouseRocketWorld(), HouseRocketWorld(circle=True),
                                   DecoderPrior(nn.Sequential(nn.Linear(5, 784), nn.Sigmoid()), 5)],
                         ids=["house-rocket", "circle", "decoder"])
@pytest.mark.parametrize("bad", [-0.1, 1.0 + 1e-9, math.nan, math.inf])
def test_input_outside_the_cube_is_an_error(prior, bad):
    u = torch.full((3, prior.unit_cube_dim), 0.5, dtype=torch.float64)
    u[1, -1] = bad
    with pytest.raises(InvalidInputError, match="leaves the unit cube"):
        prior.from_unit_cube(u)


def test_wrong_shape_is_an_error():
    world = HouseRocketWorld()
    with pytest.raises(InvalidInputError, match=r"shape \(N, 4\)"):
        world.from_unit_cube(torch.full((2, 3), 0.5))
