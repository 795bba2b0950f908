"""Pyro backends: the batched log density on hand-computed values, NUTS and
SVI + importance resampling on Gaussian targets with known answers."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions import constraints

from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.inference.pyro_backends import run_nuts, run_svi
from ppl_audit.inference.pyro_density import batched_log_density, constraint_transform
from ppl_audit.levelset import LevelSet
from ppl_audit.priors import HouseRocketWorld

Y_OBS = 2.0  # observation of the toy models


def toy_normal():
    z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    pyro.sample("obs", dist.Normal(z.sum(-1), 1.0), obs=torch.tensor(Y_OBS))


def toy_lognormal():
    z = pyro.sample("z", dist.LogNormal(0.0, 1.0).expand([2]).to_event(1))
    pyro.sample("obs", dist.Normal(z.sum(-1), 1.0), obs=torch.tensor(Y_OBS))


def toy_halfnormal():
    pyro.sample("z", dist.HalfNormal(torch.ones(2)).to_event(1))


def toy_plated(y=torch.tensor([0.5, -1.0, 2.0])):
    """Latent with batch shape (3,) declared by a plate: exercises the padding to the batch plate."""
    with pyro.plate("data", 3):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(z, 0.5), obs=y)


# NUTS target: independent Gaussian with unequal scales (the mass matrix must adapt).
NUTS_LOC, NUTS_SCALE = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])


def gaussian_2d():
    pyro.sample("z", dist.Normal(NUTS_LOC, NUTS_SCALE).to_event(1))


# Conjugate model: z ~ N(0, 2^2), y ~ N(z, 0.5^2), y = 1.3.
PRIOR_SD, NOISE_SD, Y = 2.0, 0.5, 1.3
POST_VAR = 1 / (1 / PRIOR_SD**2 + 1 / NOISE_SD**2)
POST_MEAN, POST_SD = POST_VAR * Y / NOISE_SD**2, math.sqrt(POST_VAR)
LOG_EVIDENCE = float(dist.Normal(0.0, math.sqrt(PRIOR_SD**2 + NOISE_SD**2)).log_prob(torch.tensor(Y)))


def conjugate():
    z = pyro.sample("z", dist.Normal(torch.zeros(1), PRIOR_SD).to_event(1))
    pyro.sample("y", dist.Normal(z.sum(-1), NOISE_SD), obs=torch.tensor(Y))


SVI_FAST = dict(num_steps=400, learning_rate=0.05, num_proposals=2048, num_samples=1000)


def _soft_classifier(x):
    m = x.mean((1, 2, 3)).clamp(0.01, 0.99)
    return torch.stack([1 - m, m], -1)


# -- batched log density -----------------------------------------------------------------------


def test_toy_model_equals_hand_computed_joint():
    z = torch.randn(7, 2, generator=torch.Generator().manual_seed(0))
    ref = dist.Normal(0.0, 1.0).log_prob(z).sum(-1) + dist.Normal(z.sum(-1), 1.0).log_prob(torch.tensor(Y_OBS))
    assert torch.allclose(batched_log_density(toy_normal)(z), ref, atol=1e-5)


def test_unconstrained_adds_the_log_jacobian():
    u = torch.randn(7, 2, generator=torch.Generator().manual_seed(1))
    z = u.exp()
    joint = dist.LogNormal(0.0, 1.0).log_prob(z).sum(-1) + dist.Normal(z.sum(-1), 1.0).log_prob(torch.tensor(Y_OBS))
    # z = exp(u): log|dz/du| = sum(u)
    assert torch.allclose(batched_log_density(toy_lognormal, unconstrained=True)(u), joint + u.sum(-1), atol=1e-4)
    assert torch.allclose(batched_log_density(toy_lognormal)(z), joint, atol=1e-4)
    assert torch.allclose(constraint_transform(toy_lognormal)(u), z)


def test_outside_the_support_is_minus_inf_and_gradients_flow():
    z = torch.tensor([[0.5, 1.0], [-0.5, 1.0]])
    out = batched_log_density(toy_halfnormal)(z)
    assert out[1] == -math.inf and torch.isfinite(out[0])
    u = torch.zeros(3, 2, requires_grad=True)
    batched_log_density(toy_halfnormal, unconstrained=True)(u).sum().backward()
    # log HalfNormal(e^u) + u: derivative -e^{2u} + 1 = 0 at u = 0
    assert torch.allclose(u.grad, torch.zeros(3, 2), atol=1e-6)


def test_plated_latent():
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0.5, -1.0, 2.0])
    ref = (dist.Normal(0.0, 1.0).log_prob(z) + dist.Normal(z, 0.5).log_prob(y)).sum(-1)
    assert torch.allclose(batched_log_density(toy_plated)(z), ref, atol=1e-5)


@pytest.mark.parametrize("circle", [False, True])
def test_levelset_model_equals_levelset_log_density(circle):
    world = HouseRocketWorld(circle=circle)
    ls = LevelSet(world, _soft_classifier, [0.3, 0.7], 10.0)
    z = world.sample(16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(batched_log_density(ls.model)(z), ls.log_density(z), atol=1e-4)
    t = constraint_transform(ls.model)
    u = t.inv(z)
    ref = ls.log_density(z) + t.log_abs_det_jacobian(u, z)
    assert torch.allclose(batched_log_density(ls.model, unconstrained=True)(u), ref, atol=1e-4)


def test_param_store_and_random_state_are_left_alone():
    def with_param():
        s = pyro.param("s", torch.tensor(1.0), constraint=constraints.positive)
        pyro.sample("z", dist.Normal(0.0, s).expand([1]).to_event(1))

    z = torch.zeros(2, 1)
    store = pyro.get_param_store()
    with store.scope():  # an empty store for this test; the session's comes back after
        rng = torch.get_rng_state()
        assert torch.allclose(batched_log_density(with_param)(z), dist.Normal(0.0, 1.0).log_prob(z).sum(-1))
        assert "s" not in store and torch.equal(rng, torch.get_rng_state())
        pyro.param("s", torch.tensor(2.0), constraint=constraints.positive)  # a trained value is read, not reset
        assert torch.allclose(batched_log_density(with_param)(z), dist.Normal(0.0, 2.0).log_prob(z).sum(-1))
        assert pyro.param("s").item() == pytest.approx(2.0)


def test_bad_site_and_shape_raise():
    with pytest.raises(InvalidInputError, match="no sample site"):
        batched_log_density(toy_normal, site="w")
    with pytest.raises(InvalidInputError, match="observed"):
        batched_log_density(toy_normal, site="obs")
    with pytest.raises(InvalidInputError, match="shape"):
        batched_log_density(toy_normal)(torch.zeros(3, 5))


# -- NUTS ------------------------------------------------------------------------------------------


def test_nuts_recovers_a_gaussian_and_is_reproducible():
    progress = []
    res = run_nuts(gaussian_2d, num_chains=2, num_warmup=150, num_samples=150, seed=0,
                   extras_fn=lambda z: z.sum(-1, keepdim=True), progress=lambda *a: progress.append(a))
    assert res.method == "nuts" and res.trace.shape == (2, 150, 2)
    # 300 draws of a well-adapted NUTS on an independent Gaussian carry an ESS
    # of at least ~150 per coordinate, so the mean's standard error is <= sd/12:
    # 0.3 sd is 3.6 SE. The sd's relative standard error is ~1/sqrt(2 ESS) <= 6%:
    # 20% is > 3 SE.
    mean, sd = res.trace.reshape(-1, 2).mean(0), res.trace.reshape(-1, 2).std(0)
    assert ((mean - NUTS_LOC).abs() < 0.3 * NUTS_SCALE).all(), mean
    assert ((sd / NUTS_SCALE - 1).abs() < 0.2).all(), sd
    for key in ("diverging", "acceptance_prob", "tree_depth", "n_steps", "lp"):
        assert res.sample_stats[key].shape == (2, 150)
    assert not res.sample_stats["diverging"].any()
    assert 0.5 < res.acceptance_rate <= 1.0
    assert res.num_evaluations >= int(res.sample_stats["n_steps"].sum()) > 0
    assert torch.allclose(res.extras_trace[..., 0], res.trace.sum(-1))
    assert progress[-1] == ("nuts", 600, 600)
    again = run_nuts(gaussian_2d, num_chains=2, num_warmup=150, num_samples=150, seed=0)
    assert torch.equal(res.trace, again.trace)


def test_nuts_on_a_levelset_runs():
    world = HouseRocketWorld()
    ls = LevelSet(world, _soft_classifier, [0.3, 0.7], 10.0)
    res = run_nuts(ls.model, num_chains=1, num_warmup=5, num_samples=5, latent_names=world.latent_names,
                   extras_fn=ls.predict, extras_names=world.class_names)
    assert res.trace.shape == (1, 5, 3) and (res.trace > 0).all()
    assert res.extras_trace.shape == (1, 5, 2)


# -- SVI + importance resampling -------------------------------------------------------------------


@pytest.mark.parametrize("guide", ["normal", "mvn"])
def test_svi_recovers_the_conjugate_posterior(guide):
    res = run_svi(conjugate, guide=guide, seed=0, **SVI_FAST)
    assert res.method == "svi" and res.trace.shape == (4, 250, 1)
    # The guide family contains the exact posterior, so the weights are nearly
    # flat. 1000 resampled draws from >= 1000 effective proposals: the mean's
    # standard error is ~ POST_SD / sqrt(1000) * sqrt(2) = 0.02; 0.1 is 5 SE.
    assert float(res.trace.mean()) == pytest.approx(POST_MEAN, abs=0.1)
    assert float(res.trace.std()) == pytest.approx(POST_SD, rel=0.15)
    assert res.info["importance_ess"] > 0.5 * res.info["num_proposals"]
    assert res.info["log_evidence"] == pytest.approx(LOG_EVIDENCE, abs=0.05)
    assert len(res.info["elbo"]) == SVI_FAST["num_steps"]
    assert res.info["elbo"][-1] <= LOG_EVIDENCE + 1.0  # a lower bound, up to one noisy particle
    assert res.num_evaluations == SVI_FAST["num_steps"] + SVI_FAST["num_proposals"]


def test_svi_leaves_the_global_param_store_alone_and_is_reproducible():
    store = pyro.get_param_store()
    with store.scope():  # an empty store for this test; the session's comes back after
        mine = pyro.param("my_weight", torch.tensor([3.0]))
        stale = pyro.param("AutoNormal.locs.z", torch.tensor([-50.0]))  # a stale guide of the user's
        before = {k: v.detach().clone() for k, v in store.items()}
        rng = torch.get_rng_state()
        res = run_svi(conjugate, seed=3, **SVI_FAST)
        assert set(store.keys()) == {"my_weight", "AutoNormal.locs.z"}
        assert store.get_param("my_weight").unconstrained() is mine.unconstrained()
        assert store.get_param("AutoNormal.locs.z").unconstrained() is stale.unconstrained()
        assert all(torch.equal(store[k], v) for k, v in before.items())
        assert torch.equal(rng, torch.get_rng_state())
        store.clear()
        clean = run_svi(conjugate, seed=3, **SVI_FAST)  # the stale guide did not seed ours
        assert torch.equal(res.trace, clean.trace)
        assert res.info["elbo"] == clean.info["elbo"]
        assert len(store.keys()) == 0


def test_svi_extras_and_log_density_fn():
    world = HouseRocketWorld()
    ls = LevelSet(world, _soft_classifier, [0.3, 0.7], 10.0)
    res = run_svi(ls.model, num_steps=5, num_proposals=64, num_samples=16, latent_names=world.latent_names,
                  log_density_fn=ls.log_density_and_probs, extras_names=world.class_names)
    assert res.trace.shape == (4, 4, 3) and res.extras_trace.shape == (4, 4, 2)
    assert torch.allclose(res.extras_trace.reshape(-1, 2), ls.predict(res.trace.reshape(-1, 3)), atol=1e-5)


# -- bad arguments -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_chains": 0}, "num_chains"),
        ({"num_samples": -1}, "num_samples"),
        ({"num_warmup": -1}, "num_warmup"),
        ({"num_samples": 2.5}, "num_samples"),
        ({"target_acceptance": 1.0}, "target_acceptance"),
        ({"seed": -1}, "seed"),
        ({"site": "nope"}, "no sample site"),
    ],
)
def test_nuts_bad_arguments_raise(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        run_nuts(gaussian_2d, **kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_steps": 0}, "num_steps"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"num_proposals": 0}, "num_proposals"),
        ({"num_samples": 0}, "num_samples"),
        ({"num_samples": 10}, "multiple of 4"),
        ({"guide": "flow"}, "unknown guide"),
    ],
)
def test_svi_bad_arguments_raise(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        run_svi(conjugate, **kwargs)


def test_svi_needs_a_single_latent():
    def two_latents():
        pyro.sample("z", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
        pyro.sample("w", dist.Normal(0.0, 1.0))

    with pytest.raises(InvalidInputError, match="latent sites besides"):
        run_svi(two_latents, num_steps=1)


def nan_model():
    z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
    pyro.sample("y", dist.Normal(z.sum(-1) * math.nan, 1.0), obs=torch.tensor(0.0))


@pytest.mark.parametrize("backend", [run_nuts, run_svi])
def test_nan_log_density_raises(backend):
    with pytest.raises(ModelOutputError, match="NaN"):
        backend(nan_model)


def test_nan_log_density_fn_raises():
    with pytest.raises(ModelOutputError, match="NaN"):
        run_svi(conjugate, num_steps=2, num_proposals=8, num_samples=4,
                log_density_fn=lambda z: torch.full((len(z),), math.nan))
