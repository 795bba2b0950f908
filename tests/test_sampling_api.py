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


# --------------------------------------------------------------------------- issue 21: SMC over the unconstrained space


class _ExponentialPrior:
    """A one-latent prior on z > 0 (Exponential(1)), for a level-set likelihood written by hand."""

    latent_names = ("z",)
    normal_dim = 0

    def distribution(self):
        return torch.distributions.Independent(torch.distributions.Exponential(torch.ones(1)), 1)

    def sample(self, n, generator=None):
        return -torch.log(torch.rand(n, 1, generator=generator))

    def log_prob(self, z):
        return self.distribution().log_prob(z)


def test_smc_over_the_unconstrained_space_matches_quadrature():
    from ppl_audit.diagnostics import superchain_ess
    from ppl_audit.sampling import _smc_unconstrained

    # Posterior of z ~ Exp(1) after observing y = 0.3 ~ N(z, 0.5^2): its mass piles against z = 0,
    # where a proposal over z itself would often step out of the support.
    def log_likelihood(z):
        return torch.distributions.Normal(z[:, 0], 0.5).log_prob(torch.tensor(0.3)), None

    grid = torch.linspace(1e-6, 12, 200_001, dtype=torch.float64)
    dens = torch.exp(-grid) * torch.exp(torch.distributions.Normal(grid, 0.5).log_prob(torch.tensor(0.3)))
    evidence = torch.trapezoid(dens, grid)
    mean = float(torch.trapezoid(grid * dens, grid) / evidence)

    settings = dict(num_runs=8, particles_per_run=256, num_final_draws=10, move="independent",
                    min_moved_fraction=0.9, generator=torch.Generator().manual_seed(0), device="cpu")
    chain = _smc_unconstrained(_ExponentialPrior(), lambda z: log_likelihood(z)[0], ("z",), settings)
    draws = chain.trace.numpy()
    assert (draws > 0).all() and chain.latent_names == ("z",) and chain.info["space"] == "unconstrained"
    ess = float(superchain_ess(draws, 8)[0])
    mcse = float(draws.std()) / ess ** 0.5
    assert abs(float(draws.mean()) - mean) < 4 * mcse, (float(draws.mean()), mean, mcse)
    # log Z from each run: their mean within 3 standard errors of the quadrature's.
    log_z = torch.tensor(chain.info["log_evidence"])
    assert abs(float(log_z.mean()) - float(evidence.log())) < 3 * float(log_z.std()) / 8 ** 0.5 + 0.02


def test_smc_refuses_an_unknown_space():
    from ppl_audit.priors import HouseRocketWorld

    clf = lambda x: torch.stack([1 - x.mean((1, 2, 3)), x.mean((1, 2, 3))], -1)  # noqa: E731
    with pytest.raises(InvalidInputError, match="space must be one of unconstrained, normal, latent"):
        pa.sample_level_set(HouseRocketWorld(), clf, [0.5, 0.5], num_particles=64, options={"space": "warped"},
                         device="cpu")


# --------------------------------------------------------------------------- issue 21: SMC rounds


@pytest.mark.parametrize("summary,options,rounds,discarded", [
    ({"converged": True, "ess_per_superchain_min": 10.0}, {}, 1, 0),   # passed: no second round
    ({"converged": False, "ess_per_superchain_min": 20.0}, {}, 2, 0),  # too imprecise: a round of larger runs
    ({"converged": False, "ess_per_superchain_min": 2.0}, {}, 1, 1),   # the runs disagree: again, more gently
    # already tempering gently: another such round would not help, so none is run
    ({"converged": False, "ess_per_superchain_min": 2.0}, {"target_ess_fraction": 0.8}, 1, 0),
])
def test_smc_adds_a_round_only_where_it_can_help(tiny_classifier, monkeypatch, summary, options, rounds, discarded):
    import ppl_audit.sampling as sampling

    checked, real = [], sampling._smc_summary
    fractions, run_once = [], sampling._run_smc_once

    def first_round_reads(chain):  # the first round's verdict as the case says; later ones as they are
        checked.append(chain.num_chains)
        return {**real(chain), **summary} if len(checked) == 1 else real(chain)

    def recording_run_once(*args):
        fractions.append(args[-2].get("target_ess_fraction", 0.5))  # the round's options
        return run_once(*args)

    monkeypatch.setattr(sampling, "_smc_summary", first_round_reads)
    monkeypatch.setattr(sampling, "_run_smc_once", recording_run_once)
    res = pa.sample_level_set(pa.HouseRocketWorld(), tiny_classifier, [0.5, 0.5], method="smc", num_particles=64,
                              seed=0, device="cpu", options={"num_final_draws": 4, **options})
    # 64 particles make 4 runs of 16; a second round adds 4 runs of 32, superchain k pooling run k of each
    pooled = rounds == 2
    # one summary per round; a replacement round's runs are twice as large, like a second round's
    assert checked == ([64, 64 + 128] if pooled else [64, 128] if discarded else [64])
    assert res.chain.num_chains == (64 + 128 if pooled else 128 if discarded else 64) and res.chain.superchains == 4
    assert res.metrics["smc_rounds"] == rounds and res.metrics["smc_discarded_rounds"] == discarded
    first = options.get("target_ess_fraction", 0.5)
    assert fractions == [first] + [0.8] * discarded + [first] * (rounds - 1)  # a replacement tempers gently
    if discarded:
        (old,) = res.chain.info["discarded_rounds"]
        assert old["target_ess_fraction"] == 0.5 and old["ess_per_superchain_min"] == 2.0
        # the discarded round's evaluations are part of the cost; the verdict is the new round's alone
        assert res.chain.num_evaluations > old["classifier_evaluations"] > 0
        assert res.diagnostics["converged"] == real(res.chain)["converged"]
    elif rounds == 1:
        assert res.diagnostics["converged"] is summary["converged"]  # the report reads the rounds' own summary
    assert res.metrics["classifier_evaluations"] == res.chain.num_evaluations


def test_smc_rounds_option_is_checked():
    with pytest.raises(InvalidInputError, match="max_rounds"):
        pa.sample_level_set(pa.HouseRocketWorld(), lambda x: torch.full((len(x), 2), 0.5), [0.5, 0.5],
                            num_particles=64, options={"max_rounds": 0}, device="cpu")


def test_smc_min_particles_per_run_makes_fewer_larger_runs():
    from ppl_audit.sampling import smc_plan

    assert smc_plan(4000, {})[0] == 8 and smc_plan(4000, {"min_particles_per_run": 1000}) == (
        4, {"move": "rw", "min_moved_fraction": 0.9, "slow_ess_fraction": 0.8, "num_moves": 10})


def test_fitted_smc_takes_the_fewest_runs_of_at_least_eight():
    from ppl_audit.sampling import smc_fitted_run_count

    # 8 runs where N divides by 8; else the next count up that divides it; none under 8 runs of 125.
    assert [smc_fitted_run_count(n) for n in (1000, 1500, 1350, 4096, 64000)] == [8, 10, 9, 8, 8]
    assert smc_fitted_run_count(999) is None and smc_fitted_run_count(1997) is None  # 1997 is prime
    assert smc_fitted_run_count(4096, 1024) is None  # 4 runs of 1024 are too few for nested R-hat
    with pytest.raises(InvalidInputError, match="min_particles_per_run must be an integer in 1..64"):
        pa.sample_level_set(pa.HouseRocketWorld(), lambda x: torch.full((len(x), 2), 0.5), [0.5, 0.5],
                            num_particles=64, options={"min_particles_per_run": 65}, device="cpu")


def test_smc_chain_length_is_a_sampler_option_and_is_checked():
    from ppl_audit.sampling import check_sampler_options

    assert check_sampler_options("smc", {"chain_length": 4}) == {"chain_length": 4}
    # 64 particles make 4 runs of 16: 3 divides none
    with pytest.raises(InvalidInputError, match=r"chain_length must be an integer >= 2 that divides particles_per_run \(16\)"):
        pa.sample_level_set(pa.HouseRocketWorld(), lambda x: torch.full((len(x), 2), 0.5), [0.5, 0.5],
                            num_particles=64, options={"chain_length": 3}, device="cpu")
