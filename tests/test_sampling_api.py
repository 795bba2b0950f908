import pytest
import torch

import ppl_audit as pa
from ppl_audit.errors import InvalidInputError


def test_black_box_callable_classifier_is_enough():
    # A non-differentiable Python classifier: "house" iff ink covers > 5% of the canvas.
    def clf(x):
        ink = (x > 0.5).float().mean((1, 2, 3))
        p = torch.where(ink > 0.05, 0.9, 0.1).to(x.dtype)
        return torch.stack([1 - p, p], -1).numpy()

    res = pa.sample_level_set(pa.HouseRocketWorld(), clf, [0.1, 0.9], num_particles=64, num_steps=20,
                              num_samples=32, seed=0, device="cpu")
    assert res.latents.shape == (32, 3) and res.images.shape == (32, 1, 64, 64) and res.probs.shape == (32, 2)
    assert res.metrics["num_samples"] == 32
    assert res.to_arviz().posterior["z"].sizes["chain"] == 64


def test_level_set_concentrates_on_the_target(tiny_classifier):
    world = pa.HouseRocketWorld()
    res = pa.sample_level_set(world, tiny_classifier, [0.999, 0.001], num_particles=200, num_steps=40,
                              seed=1, device="cpu", method="mh")
    with torch.no_grad():
        prior_rocket = tiny_classifier.probs(world.decode(world.sample(500, generator=torch.Generator().manual_seed(0))))[:, 0]
    # The prior is half rockets; the rocket level set must be far more confident.
    assert res.metrics["mean_confidence"] > 0.9 > float(prior_rocket.mean()) + 0.3
    assert res.metrics["classifier_evaluations"] == 200 * 4 + 200 * 41


def test_same_seed_same_samples(tiny_classifier):
    kw = dict(num_particles=32, num_steps=8, seed=3, device="cpu")
    a = pa.sample_level_set(pa.HouseRocketWorld(), tiny_classifier, [0.5, 0.5], **kw)
    b = pa.sample_level_set(pa.HouseRocketWorld(), tiny_classifier, [0.5, 0.5], **kw)
    assert torch.equal(a.latents, b.latents) and a.metrics == b.metrics


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"num_particles": 0}, "num_particles"),
        ({"num_steps": 0}, "num_steps"),
        ({"num_samples": 99}, "num_samples"),
        ({"method": "magic"}, "unknown method"),
        ({"concentration": 0.0}, "concentration"),
    ],
)
def test_bad_arguments(kwargs, message):
    base = dict(num_particles=8, num_steps=2, device="cpu")
    with pytest.raises(InvalidInputError, match=message):
        pa.sample_level_set(pa.HouseRocketWorld(), lambda x: torch.full((len(x), 2), 0.5), [0.5, 0.5], **(base | kwargs))


@pytest.mark.parametrize(
    "method,kwargs",
    [
        ("smc", {"num_particles": 64}),
        ("hmc", {"num_particles": 32, "num_steps": 12, "options": {"num_leapfrog": 3}}),
        ("nuts", {"num_particles": 2, "num_steps": 16}),
        ("svi", {"num_particles": 64, "num_steps": 20, "options": {"num_proposals": 256}}),
    ],
)
def test_every_backend_returns_level_set_samples(tiny_classifier, method, kwargs):
    res = pa.sample_level_set(pa.HouseRocketWorld(), tiny_classifier, [0.5, 0.5], method=method, seed=0,
                              device="cpu", num_samples=16, **kwargs)
    assert res.chain.method == method
    assert res.latents.shape == (16, 3) and res.probs.shape == (16, 2)
    assert torch.allclose(res.probs.sum(-1), torch.ones(16), atol=1e-5)
    assert res.metrics["method"] == method and res.metrics["classifier_evaluations"] > 0
    assert "verdict" in res.diagnostics


def test_smc_runs_are_superchains_judged_by_nested_rhat(tiny_classifier):
    res = pa.sample_level_set(pa.HouseRocketWorld(), tiny_classifier, [0.5, 0.5], method="smc",
                              num_particles=256, seed=0, device="cpu")
    assert res.chain.superchains == 16
    assert res.metrics["nested_rhat_max"] is not None
    assert res.chain.info["tempering_schedule"][0][-1] == 1.0


def test_gradient_methods_refuse_black_boxes():
    with pytest.raises(InvalidInputError, match="black box"):
        pa.sample_level_set(pa.HouseRocketWorld(), lambda x: torch.full((len(x), 2), 0.5), [0.5, 0.5],
                            method="hmc", num_particles=8, num_steps=4, device="cpu")


def test_gaussian_relaxation_through_the_api(tiny_classifier):
    res = pa.sample_level_set(pa.HouseRocketWorld(), tiny_classifier, [0.0, 1.0], relaxation="gaussian",
                              sigma=0.05, num_particles=64, num_steps=20, seed=0, device="cpu")
    assert res.metrics["mean_confidence"] > 0.8
