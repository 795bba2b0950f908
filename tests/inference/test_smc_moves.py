"""The measured-and-optional SMC moves (elliptical slice, covariance-scaled random walk) and pooling
independent SMC results into superchains of several runs.

Known answer throughout: prior N(0, I_2), one observation y = [1, -0.5] with noise sd 0.5, so the
posterior is N(0.8 y, 0.2 I) and the evidence N(y; 0, 1.25 I).
"""

import math

import pytest
import torch

from ppl_audit.errors import InvalidInputError
from ppl_audit.inference.kernels import elliptical, mh
from ppl_audit.inference.smc import pool_runs, run_smc

Normal = torch.distributions.Normal
Y = torch.tensor([1.0, -0.5])
NOISE_SD = 0.5
POST_VAR = 1 / (1 + 1 / NOISE_SD**2)  # 0.2
POST_MEAN = POST_VAR * Y / NOISE_SD**2  # 0.8 y
LOG_EVIDENCE = Normal(0.0, math.sqrt(1 + NOISE_SD**2)).log_prob(Y).sum().item()


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def standard_normal(z):
    return Normal(0.0, 1.0).log_prob(z).sum(-1)


def likelihood(z):
    return Normal(z, NOISE_SD).log_prob(Y).sum(-1)


def sample_prior(n, generator):
    return torch.randn(n, 2, generator=generator)


def test_elliptical_steps_leave_the_posterior_invariant():
    # 4,000 chains started at exact posterior draws, 10 steps: the moments stay put. The mean of
    # 4,000 independent draws has sd sqrt(0.2 / 4000) ~ 0.007; 0.03 is over 4 of those.
    g = seeded(0)
    start = POST_MEAN + math.sqrt(POST_VAR) * torch.randn(4000, 2, generator=g)
    state = elliptical.SliceState(start, likelihood(start))
    for _ in range(10):
        state, info = elliptical.step(g, state, lambda u, index: likelihood(u))
    assert info.moved.all() and (info.proposals >= 1).all()
    assert torch.allclose(state.position.mean(0), POST_MEAN, atol=0.03)
    assert torch.allclose(state.position.var(0), torch.full((2,), POST_VAR), rtol=0.1)
    assert torch.allclose(state.log_likelihood, likelihood(state.position))


def test_elliptical_step_evaluates_only_the_chains_still_searching():
    seen = []

    def ll(u, index):
        seen.append(index.clone())
        return torch.where(u[:, 0] > 0.9, 0.0, -math.inf)  # a thin region: many chains shrink

    state = elliptical.SliceState(torch.ones(50, 2), torch.zeros(50))
    state, info = elliptical.step(seeded(1), state, ll)
    assert (state.position[:, 0] > 0.9).all()
    assert sum(len(i) for i in seen) == int(info.proposals.sum())
    assert len(seen[-1]) < 50  # later proposals only for the chains that had not found the slice


def test_smc_with_elliptical_moves_recovers_the_conjugate_answer():
    runs = 16
    res = run_smc(standard_normal, likelihood, sample_prior, num_runs=runs, particles_per_run=128,
                  move="elliptical", generator=seeded(0))
    means = res.trace.reshape(runs, -1, 2).mean(1)
    se = means.std(0) / math.sqrt(runs)
    assert ((means.mean(0) - POST_MEAN).abs() < 5 * se).all()  # |t| > 5 with 15 dof: ~2e-4
    log_z = torch.tensor(res.info["log_evidence"])
    assert abs(res.info["log_evidence_mean"] - LOG_EVIDENCE) < 5 * log_z.std() / math.sqrt(runs) + log_z.var() / 2
    # elliptical moves cost a variable number of evaluations: counted, never assumed
    assert res.num_evaluations > runs * 128 * (1 + res.info["num_stages"] + 10)


def test_elliptical_moves_refuse_a_prior_that_is_not_standard_normal():
    with pytest.raises(InvalidInputError, match="standard-normal"):
        run_smc(lambda z: Normal(0.0, 2.0).log_prob(z).sum(-1), likelihood, lambda n, g: 2 * sample_prior(n, g),
                num_runs=2, particles_per_run=16, move="elliptical", generator=seeded(0))


def test_random_walk_with_a_covariance_factor_leaves_a_correlated_gaussian_invariant():
    cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]])
    chol = torch.linalg.cholesky(cov)
    target = torch.distributions.MultivariateNormal(torch.zeros(2), cov)
    g = seeded(2)
    start = torch.randn(4000, 2, generator=g) @ chol.T
    state = mh.init(start, target.log_prob)
    for _ in range(20):
        state, info = mh.step(g, state, target.log_prob, scale=(1.5 * chol).expand(4000, 2, 2))
    empirical = torch.cov(state.position.T)
    assert torch.allclose(empirical, cov, atol=0.08)  # sd of a covariance entry from 4,000 draws ~0.02


def test_smc_with_covariance_scaled_random_walk_recovers_the_posterior_mean():
    runs = 8
    res = run_smc(standard_normal, likelihood, sample_prior, num_runs=runs, particles_per_run=128, move="rw",
                  rw_covariance=True, num_moves=10, generator=seeded(3))
    means = res.trace.reshape(runs, -1, 2).mean(1)
    se = means.std(0) / math.sqrt(runs)
    assert ((means.mean(0) - POST_MEAN).abs() < 6 * se).all()  # |t| > 6 with 7 dof: ~5e-4
    assert len(res.info["proposal_scale"][0]) == 2  # per-latent sd, whatever the factor


def _result(seed, runs=2, m=8):
    return run_smc(standard_normal, likelihood, sample_prior, num_runs=runs, particles_per_run=m, move="rw",
                   num_final_draws=3, generator=seeded(seed))


def test_pooling_puts_run_k_of_every_result_into_superchain_k():
    a, b = _result(0, runs=2, m=8), _result(1, runs=2, m=16)
    pooled = pool_runs([a, b], superchains=2)
    expected = torch.cat([a.trace[:8], b.trace[:16], a.trace[8:], b.trace[16:]])
    assert torch.equal(pooled.trace, expected)
    assert torch.equal(pooled.accepted, torch.cat([a.accepted[:8], b.accepted[:16], a.accepted[8:], b.accepted[16:]]))
    assert pooled.superchains == 2 and pooled.info["rounds"] == 2
    assert pooled.info["log_evidence"] == [a.info["log_evidence"][0], b.info["log_evidence"][0],
                                           a.info["log_evidence"][1], b.info["log_evidence"][1]]
    # each superchain's evidence: its runs' unbiased estimates, weighted 8:16 by their particles
    for k in range(2):
        z = (a.info["log_evidence"][k], b.info["log_evidence"][k])
        expected_k = math.log(math.exp(z[0]) / 3 + 2 * math.exp(z[1]) / 3)
        assert pooled.info["log_evidence_superchains"][k] == pytest.approx(expected_k)
    assert pooled.num_evaluations == a.num_evaluations + b.num_evaluations


def test_pooling_refuses_a_result_with_another_number_of_runs():
    with pytest.raises(InvalidInputError, match="cannot pool"):
        pool_runs([_result(0, runs=2), _result(1, runs=4)], superchains=2)
