import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.levelset import LevelSet, dirichlet_log_likelihood, dirichlet_log_likelihood_max, validate_target
from ppl_audit.priors import HouseRocketWorld


def _soft_classifier(x):
    m = x.mean((1, 2, 3)) * 8
    return torch.stack([1 - m.clamp(0.01, 0.99), m.clamp(0.01, 0.99)], -1)


def test_batched_log_density_equals_pyro_trace():
    world = HouseRocketWorld()
    ls = LevelSet(world, _soft_classifier, [0.3, 0.7], concentration=10.0)
    z = world.sample(50, generator=torch.Generator().manual_seed(0))
    conditioned = pyro.poutine.condition(ls.model, data={"z": z})
    trace = pyro.poutine.trace(conditioned).get_trace(num_particles=50)
    trace.compute_log_prob()
    per_particle = trace.nodes["z"]["log_prob"] + trace.nodes["prediction"]["log_prob"]
    assert torch.allclose(ls.log_density(z), per_particle, atol=1e-4)


def test_dirichlet_helper_matches_pyro():
    probs = torch.tensor([[0.2, 0.8], [0.5, 0.5], [0.999, 0.001]])
    target = torch.tensor([0.4, 0.6])
    ref = dist.Dirichlet(7.5 * probs).log_prob(target)
    assert torch.allclose(dirichlet_log_likelihood(probs, target, 7.5), ref, atol=1e-4)


@pytest.mark.parametrize("target, concentration", [
    ((0.5, 0.5), 10.0), ((0.001, 0.999), 20.0), ((0.001, 0.999), 1000.0), ((0.1,) * 10, 3000.0),
    ((0.46, 0.46) + (0.01,) * 8, 100.0), ((0.2, 0.3, 0.5), 0.5),
])
def test_dirichlet_maximum_bounds_every_prediction_and_is_reached(target, concentration):
    t = torch.tensor(target, dtype=torch.float64)
    top = dirichlet_log_likelihood_max(t, concentration)
    # 20,000 predictions around the target and across the simplex stay below it (float64 rounding aside) ...
    g = torch.Generator().manual_seed(0)
    near = torch.softmax(t.log() + 0.5 * torch.randn(10_000, len(t), generator=g, dtype=torch.float64), -1)
    anywhere = torch.distributions.Dirichlet(torch.ones(len(t), dtype=torch.float64)).sample((10_000,))
    values = dirichlet_log_likelihood(torch.cat([near, anywhere]), t, concentration)
    assert float(values.max()) <= top + 1e-9
    # ... and gradient ascent over the logits from the target ends at it.
    logits = t.log().clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=0.05)
    for _ in range(2000):
        opt.zero_grad()
        (-dirichlet_log_likelihood(torch.softmax(logits, -1)[None], t, concentration)).sum().backward()
        opt.step()
    reached = float(dirichlet_log_likelihood(torch.softmax(logits.detach(), -1)[None], t, concentration))
    assert reached == pytest.approx(top, abs=1e-4)


def test_level_set_likelihood_bound_is_the_relaxations_maximum():
    world = HouseRocketWorld()
    gaussian = LevelSet(world, _soft_classifier, [0.3, 0.7], relaxation="gaussian", sigma=0.05)
    at_target = gaussian.log_likelihood(torch.tensor([[0.3, 0.7]]))
    assert gaussian.log_likelihood_bound() == pytest.approx(float(at_target), abs=1e-5)
    dirichlet = LevelSet(world, _soft_classifier, [0.001, 0.999], concentration=20.0)
    assert dirichlet.log_likelihood_bound() == dirichlet_log_likelihood_max(torch.tensor([0.001, 0.999]), 20.0)


def test_saturated_prediction_keeps_the_log_density_finite():
    probs = torch.tensor([[1.0, 0.0]])
    assert torch.isfinite(dirichlet_log_likelihood(probs, torch.tensor([0.5, 0.5]), 10.0)).all()


@pytest.mark.parametrize(
    "target,message",
    [
        ([0.2, 0.3, 0.5], "3 entries"),
        ([-0.5, 1.5], "negative"),
        ([0.3, 0.3], "sum to 1"),
        ([0.0, 1.0], "boundary"),
        ([float("nan"), 0.5], "non-finite"),
    ],
)
def test_invalid_targets_are_named(target, message):
    with pytest.raises(InvalidInputError, match=message):
        validate_target(target, 2)


def test_sum_tolerance_is_1e6():
    validate_target([0.5, 0.5 + 5e-7], 2)
    with pytest.raises(InvalidInputError):
        validate_target([0.5, 0.5 + 5e-6], 2)


@pytest.mark.parametrize("alpha", [0, -1, float("inf"), float("nan")])
def test_invalid_concentration(alpha):
    with pytest.raises(InvalidInputError, match="concentration"):
        LevelSet(HouseRocketWorld(), _soft_classifier, [0.5, 0.5], concentration=alpha)


def test_nan_classifier_is_an_error():
    ls = LevelSet(HouseRocketWorld(), lambda x: torch.full((len(x), 2), math.nan), [0.5, 0.5])
    with pytest.raises(ModelOutputError, match="NaN"):
        ls.log_density(torch.full((3, 3), 10.0))


def test_chunking_gives_the_same_density():
    world = HouseRocketWorld()
    z = world.sample(37, generator=torch.Generator().manual_seed(1))
    a = LevelSet(world, _soft_classifier, [0.5, 0.5], chunk_size=5).log_density(z)
    b = LevelSet(world, _soft_classifier, [0.5, 0.5], chunk_size=256).log_density(z)
    assert torch.allclose(a, b, atol=1e-5)


def test_gaussian_relaxation_equals_its_pyro_trace():
    world = HouseRocketWorld()
    ls = LevelSet(world, _soft_classifier, [0.2, 0.8], relaxation="gaussian", sigma=0.1)
    z = world.sample(20, generator=torch.Generator().manual_seed(0))
    trace = pyro.poutine.trace(pyro.poutine.condition(ls.model, data={"z": z})).get_trace(num_particles=20)
    trace.compute_log_prob()
    expected = trace.nodes["z"]["log_prob"] + trace.nodes["prediction"]["log_prob"]
    assert torch.allclose(ls.log_density(z), expected, atol=1e-4)
    # The Gaussian density is finite on the simplex boundary, so boundary targets are allowed.
    LevelSet(world, _soft_classifier, [0.0, 1.0], relaxation="gaussian")


@pytest.mark.parametrize("kwargs,message", [({"relaxation": "cauchy"}, "unknown relaxation"),
                                            ({"relaxation": "gaussian", "sigma": 0.0}, "sigma")])
def test_bad_relaxation_arguments(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        LevelSet(HouseRocketWorld(), _soft_classifier, [0.5, 0.5], **kwargs)
