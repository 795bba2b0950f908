"""Adaptively tempered SMC: kernel pieces on hand-built cases, the driver on known answers.

Error bars on the driver's estimates come from the spread across its R
independent runs: particles within a run share ancestors through resampling,
so their scatter understates the Monte Carlo error, but the R run means are
independent and identically distributed, and their standard deviation / sqrt(R)
is an honest standard error.
"""

import math

import pytest
import torch

from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.inference import MCMCConfig, run_mh
from ppl_audit.inference.kernels import smc as kernel
from ppl_audit.inference.smc import SMCConfig, run_smc

Normal = torch.distributions.Normal
RUNS, PARTICLES = 16, 256


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def run_means(values: torch.Tensor, runs: int = RUNS) -> torch.Tensor:
    """Mean of each run's draws: ``values`` is ``(R*M, draws, ...)`` run-major."""
    return values.reshape(runs, -1, *values.shape[2:]).mean(dim=1)


# ----------------------------------------------------------------- kernel pieces


def test_log_mean_exp_matches_direct_computation_and_ignores_minus_inf():
    x = torch.tensor([[0.0, 1.0, 2.0], [-math.inf, 0.0, math.log(2.0)]])
    expected = torch.stack([x[0].exp().mean().log(), x[1].exp().mean().log()])
    assert torch.allclose(kernel.log_mean_exp(x), expected)
    assert kernel.log_mean_exp(torch.full((1, 3), -math.inf)).item() == -math.inf


def test_effective_sample_size_of_hand_built_weights():
    lw = torch.tensor([[0.0, 0.0, 0.0, 0.0], [5.0, 5.0, 5.0, 5.0], [0.0, -math.inf, -math.inf, -math.inf],
                       [0.0, 0.0, -math.inf, -math.inf]])
    assert kernel.effective_sample_size(lw).tolist() == pytest.approx([4.0, 4.0, 1.0, 2.0])
    # weights 1 and 3: (1 + 3)^2 / (1 + 9) = 1.6
    assert kernel.effective_sample_size(torch.tensor([[0.0, math.log(3.0)]])).item() == pytest.approx(1.6)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_plus_inf_weights_are_an_error(bad):
    with pytest.raises(ModelOutputError, match="NaN|inf"):
        kernel.effective_sample_size(torch.tensor([[0.0, bad]]))


def test_a_run_with_all_weights_zero_is_an_error_naming_the_run():
    lw = torch.tensor([[0.0, 0.0], [-math.inf, -math.inf]])
    for call in (kernel.effective_sample_size, lambda w: kernel.systematic_resample(seeded(), w),
                 lambda w: kernel.next_temperature(w, torch.zeros(2), 0.5)):
        with pytest.raises(ModelOutputError, match=r"run\(s\) \[1\]"):
            call(lw)


def test_next_temperature_hits_the_target_ess_per_run():
    ll = torch.randn(5, 300, generator=seeded(1), dtype=torch.float64) * 20
    beta = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0], dtype=torch.float64)
    new = kernel.next_temperature(ll, beta, 0.6)
    assert new[-1] == 1.0  # a run at 1 stays at 1
    moved = new[:-1]
    assert (moved > beta[:-1]).all() and (moved < 1).all()
    ess = kernel.effective_sample_size(kernel.tempered_log_weights(ll[:-1], moved - beta[:-1])) / 300
    assert torch.allclose(ess, torch.full_like(ess, 0.6), atol=1e-9)


def test_next_temperature_goes_straight_to_one_when_the_likelihood_is_flat():
    ll = torch.full((3, 10), -4.0)
    assert kernel.next_temperature(ll, torch.tensor([0.0, 0.3, 1.0]), 0.5).tolist() == [1.0, 1.0, 1.0]


def test_next_temperature_with_too_few_particles_in_the_support_still_moves():
    # 3 of 10 finite: no beta' reaches ESS 5, so the run takes the smallest step
    # the bisection resolves; the -inf particles already have weight 0 there.
    ll = torch.tensor([[0.0, -1.0, -2.0] + [-math.inf] * 7])
    new = kernel.next_temperature(ll, torch.zeros(1), 0.5)
    assert 0 < new.item() < 1e-12
    w = kernel.tempered_log_weights(ll, new)
    assert torch.isfinite(w[0, :3]).all() and (w[0, 3:] == -math.inf).all()


def test_next_temperature_rejects_a_bad_target():
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(InvalidInputError, match="target_ess_fraction"):
            kernel.next_temperature(torch.zeros(1, 4), torch.zeros(1), bad)


def test_next_temperature_with_a_bound_keeps_the_ess_with_a_virtual_particle_there():
    ll = torch.randn(4, 300, generator=seeded(2), dtype=torch.float64) * 5
    beta = torch.tensor([0.0, 0.1, 0.5, 0.9], dtype=torch.float64)
    bound = float(ll.max()) + 50.0  # far above every particle: the bound decides the step
    free = kernel.next_temperature(ll, beta, 0.6)
    new = kernel.next_temperature(ll, beta, 0.6, log_likelihood_bound=bound)
    assert (new > beta).all() and (new < free).all()
    with_virtual = torch.cat([ll, torch.full((4, 1), bound, dtype=torch.float64)], dim=1)
    ess = kernel.effective_sample_size(kernel.tempered_log_weights(with_virtual, new - beta)) / 301
    assert torch.allclose(ess, torch.full_like(ess, 0.6), atol=1e-9)


def test_a_bound_below_the_particles_counts_as_their_maximum_and_a_non_finite_one_is_refused():
    ll = torch.randn(3, 50, generator=seeded(3), dtype=torch.float64)
    at_max = kernel.next_temperature(ll, torch.zeros(3), 0.5, log_likelihood_bound=float(ll.max()))
    per_run_max = torch.stack([kernel.next_temperature(row[None], torch.zeros(1), 0.5,
                                                       log_likelihood_bound=float(row.max()))[0] for row in ll])
    below = kernel.next_temperature(ll, torch.zeros(3), 0.5, log_likelihood_bound=float(ll.min()) - 10)
    assert torch.equal(below, per_run_max) and (at_max <= per_run_max).all()
    for bad in (math.inf, math.nan):
        with pytest.raises(InvalidInputError, match="log_likelihood_bound"):
            kernel.next_temperature(ll, torch.zeros(3), 0.5, log_likelihood_bound=bad)


# A plateau with a small region of high likelihood: a saturated classifier far from its level set. The
# region z > 2.326 holds 1% of the N(0, 1) prior, so a run of 32 prior draws misses it with probability
# 0.99^32 = 72%, and a run that misses it sees a flat likelihood.
PLATEAU_EDGE = 2.326
PLATEAU_LOG_EVIDENCE = math.log(1 - Normal(0.0, 1.0).cdf(torch.tensor(PLATEAU_EDGE)).item())  # the region's mass


def plateau_likelihood(z):
    return torch.where(z[:, 0] > PLATEAU_EDGE, 0.0, -700.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_bound_keeps_runs_on_a_plateau_from_stepping_past_the_region_they_have_not_found(seed):
    def run(bound):
        return run_smc(lambda z: Normal(0.0, 1.0).log_prob(z).sum(-1), plateau_likelihood,
                       lambda n, g: torch.randn(n, 1, generator=g), num_runs=8, particles_per_run=32,
                       generator=seeded(seed), log_likelihood_bound=bound)

    blind = torch.tensor(run(None).info["log_evidence"])
    assert (blind < -600).any()  # without the bound, runs that missed the region jump to beta = 1 at once
    res = run(0.0)
    log_z = torch.tensor(res.info["log_evidence"])
    # Every run finds the region; the mean within 5 standard errors of the runs plus the Jensen bias (see
    # test_conjugate_gaussian_posterior_and_evidence), and no run more than 3 nats off.
    assert ((log_z - PLATEAU_LOG_EVIDENCE).abs() < 3).all(), log_z
    assert abs(log_z.mean() - PLATEAU_LOG_EVIDENCE) < 5 * log_z.std() / math.sqrt(8) + log_z.var() / 2
    assert bool((res.trace[..., 0] > PLATEAU_EDGE).all())


def test_a_bound_no_particle_can_reach_costs_at_most_the_guarded_stages():
    # A likelihood whose best is 1,000 nats below the bound it is given: every step of a run is held back
    # until its guard budget is spent, after which it tempers on its own ESS and still reaches beta = 1.
    from ppl_audit.inference.smc import GUARDED_STAGES

    def run(bound):
        return run_smc(lambda z: Normal(0.0, 1.0).log_prob(z).sum(-1), lambda z: -1000.0 - z[:, 0].square(),
                       lambda n, g: torch.randn(n, 1, generator=g), num_runs=4, particles_per_run=32,
                       generator=seeded(0), log_likelihood_bound=bound)

    free, guarded = run(None), run(0.0)
    assert free.info["guarded_stages"] == [0] * 4
    assert all(0 < n <= GUARDED_STAGES for n in guarded.info["guarded_stages"]), guarded.info["guarded_stages"]
    assert free.info["num_stages"] < guarded.info["num_stages"] <= free.info["num_stages"] + GUARDED_STAGES


def test_systematic_resampling_counts_are_floor_or_ceil_of_expected_and_skip_zero_weights():
    w = torch.tensor([[0.1, 0.0, 0.35, 0.05, 0.0, 0.5], [1 / 6] * 6])
    for seed in range(20):
        idx = kernel.systematic_resample(seeded(seed), w.log())
        assert idx.shape == (2, 6) and idx.dtype == torch.int64
        counts = torch.stack([torch.bincount(row, minlength=6) for row in idx])
        expected = 6 * w
        assert ((counts >= expected.floor() - 1e-9) & (counts <= expected.ceil() + 1e-9)).all()
        assert (counts[0, [1, 4]] == 0).all()  # weight 0 is never copied
        assert idx[1].tolist() == list(range(6))  # equal weights: the identity


# ---------------------------------------------------------------- known answers

# Conjugate Gaussian: z ~ N(0, 2^2 I), y | z ~ N(z, 0.5^2 I), y = [1.5, -1].
PRIOR_SD, NOISE_SD = 2.0, 0.5
Y = torch.tensor([1.5, -1.0])
POST_VAR = 1 / (1 / PRIOR_SD**2 + 1 / NOISE_SD**2)  # 1 / 4.25
POST_MEAN = POST_VAR * Y / NOISE_SD**2
LOG_EVIDENCE = Normal(0.0, math.sqrt(PRIOR_SD**2 + NOISE_SD**2)).log_prob(Y).sum().item()


def gaussian_prior(z):
    return Normal(0.0, PRIOR_SD).log_prob(z).sum(-1)


def gaussian_likelihood(z):
    return Normal(z, NOISE_SD).log_prob(Y).sum(-1)


def sample_gaussian_prior(n, generator):
    return PRIOR_SD * torch.randn(n, 2, generator=generator)


# Acceptance each kind of move should show on this posterior: random walk near
# its 0.3 target; independent proposals from a fitted mixture of a Gaussian
# posterior far above it (their proposal is nearly the target).
ACCEPTANCE = {"rw": (0.15, 0.5), "independent": (0.6, 0.95), "mixed": (0.35, 0.8)}


@pytest.mark.parametrize("move", ["independent", "rw", "mixed"])
def test_conjugate_gaussian_posterior_and_evidence(move):
    res = run_smc(gaussian_prior, gaussian_likelihood, sample_gaussian_prior, num_runs=RUNS,
                  particles_per_run=PARTICLES, generator=seeded(0), move=move)
    # Mean: the 16 run means are i.i.d.; 5 standard errors from their spread
    # (with 15 degrees of freedom, |t| > 5 has probability ~2e-4).
    means = run_means(res.trace)  # (R, 2)
    se = means.std(dim=0) / math.sqrt(RUNS)
    assert ((means.mean(dim=0) - POST_MEAN).abs() < 5 * se).all(), (means.mean(0), POST_MEAN, se)
    # Variance: likewise from the per-run variances (the within-run variance of
    # an SMC population is biased low by O(1/M), ~0.4% here, far inside this).
    variances = res.trace.reshape(RUNS, -1, 2).var(dim=1)
    se_var = variances.std(dim=0) / math.sqrt(RUNS)
    assert ((variances.mean(dim=0) - POST_VAR).abs() < 5 * se_var).all(), (variances.mean(0), POST_VAR, se_var)
    # Log evidence: each run's Z-hat is unbiased, so log Z-hat is biased low by
    # ~Var(log Z-hat) / 2 (Jensen, to second order); allow 5 standard errors of
    # the mean of the R independent estimates plus that bias.
    log_z = torch.tensor(res.info["log_evidence"])
    tolerance = 5 * log_z.std() / math.sqrt(RUNS) + log_z.var() / 2
    assert abs(res.info["log_evidence_mean"] - LOG_EVIDENCE) < tolerance, (log_z, LOG_EVIDENCE)
    low, high = ACCEPTANCE[move]
    assert low < res.acceptance_rate < high


# Bimodal: a wide prior and a likelihood with two narrow, far-apart modes of equal weight.
MODES = torch.tensor([[3.0, 3.0], [-3.0, -3.0]])
MODE_SD, WIDE_SD = 0.4, 5.0


def wide_prior(z):
    return Normal(0.0, WIDE_SD).log_prob(z).sum(-1)


def two_mode_likelihood(z):
    per_mode = Normal(MODES.unsqueeze(1), MODE_SD).log_prob(z.unsqueeze(0)).sum(-1)  # (2, N)
    return torch.logsumexp(per_mode, dim=0) - math.log(2)


def sample_wide_prior(n, generator):
    return WIDE_SD * torch.randn(n, 2, generator=generator)


@pytest.mark.parametrize("resampling", ["systematic", "ordered"])
def test_bimodal_posterior_keeps_both_modes_with_equal_weight(resampling):
    res = run_smc(wide_prior, two_mode_likelihood, sample_wide_prior, num_runs=RUNS,
                  particles_per_run=PARTICLES, generator=seeded(0), resampling=resampling)
    upper = (res.trace[..., 0] > 0).float()
    # By symmetry each mode holds exactly half the posterior. Which share a
    # run gives each mode is settled in the early stages and then frozen
    # (moves cannot cross), so the run shares scatter (sd ~0.1 at M = 256);
    # their mean is unbiased, with a standard error from their spread.
    shares = run_means(upper)
    se = shares.std() / math.sqrt(RUNS)
    assert abs(shares.mean().item() - 0.5) < max(5 * se.item(), 0.02), shares
    assert ((shares > 0.1) & (shares < 0.9)).all(), shares  # every run holds both modes
    # Within a mode: prior N(0, 25) x N(mode, 0.16) gives mean mode * 25 / 25.16.
    within = res.trace[upper.bool()].mean(dim=0)
    assert torch.allclose(within, MODES[0] * WIDE_SD**2 / (WIDE_SD**2 + MODE_SD**2), atol=0.1)
    # Evidence: 0.5 * sum over modes of N(mode; 0, (25 + 0.16) I).
    exact = (torch.logsumexp(Normal(0.0, math.sqrt(WIDE_SD**2 + MODE_SD**2)).log_prob(MODES).sum(-1), 0)
             - math.log(2)).item()
    log_z = torch.tensor(res.info["log_evidence"])
    assert abs(res.info["log_evidence_mean"] - exact) < 5 * log_z.std() / math.sqrt(RUNS) + log_z.var() / 2


def test_random_walk_mh_started_in_one_mode_never_finds_the_other():
    # The contrast that motivates SMC: the same target, random-walk MH from the upper mode.
    start = MODES[0] + MODE_SD * torch.randn(500, 2, generator=seeded(1))
    res = run_mh(lambda z: wide_prior(z) + two_mode_likelihood(z), start, MCMCConfig(200), generator=seeded(0))
    assert (res.trace[..., 0] > 0).all()


# -------------------------------------------------------------- contract details


def test_same_seed_same_draws_and_different_seed_different_draws():
    kwargs = dict(num_runs=3, particles_per_run=32, num_final_draws=4)
    a = run_smc(gaussian_prior, gaussian_likelihood, sample_gaussian_prior, generator=seeded(7), **kwargs)
    b = run_smc(gaussian_prior, gaussian_likelihood, sample_gaussian_prior, generator=seeded(7), **kwargs)
    c = run_smc(gaussian_prior, gaussian_likelihood, sample_gaussian_prior, generator=seeded(8), **kwargs)
    assert torch.equal(a.trace, b.trace) and torch.equal(a.accepted, b.accepted)
    assert a.info["log_evidence"] == b.info["log_evidence"]
    assert a.info["tempering_schedule"] == b.info["tempering_schedule"]
    assert not torch.equal(a.trace, c.trace)


def test_shapes_counts_and_info():
    runs, m, draws, moves = 3, 40, 6, 4

    def likelihood_with_extras(z):
        return gaussian_likelihood(z), torch.stack([z.sum(-1), gaussian_likelihood(z)], dim=-1)

    calls = []
    res = run_smc(gaussian_prior, likelihood_with_extras, sample_gaussian_prior, num_runs=runs,
                  particles_per_run=m, num_moves=moves, num_final_draws=draws, generator=seeded(0),
                  latent_names=["a", "b"], extras_names=["sum", "loglik"], device="cpu",
                  progress=lambda task, done, total: calls.append((task, done, total)))
    assert res.method == "smc" and res.latent_names == ("a", "b")
    assert res.trace.shape == (runs * m, draws, 2)
    assert res.accepted.shape == (runs * m, draws) and res.accepted.dtype == torch.bool
    assert res.extras_trace.shape == (runs * m, draws, 2) and res.extras_names == ("sum", "loglik")
    # extras ride along with their positions through resampling and accept/reject
    assert torch.allclose(res.extras_trace[..., 0], res.trace.sum(-1), atol=1e-5)
    assert torch.allclose(res.extras_trace[..., 1], gaussian_likelihood(res.trace.reshape(-1, 2)).reshape(runs * m, draws),
                          atol=1e-4)
    assert res.superchains == runs and res.num_warmup == 0
    stages = res.info["num_stages"]
    assert res.num_evaluations == runs * m * (1 + moves * stages + draws)
    assert len(res.info["ess_per_stage"]) == len(res.info["acceptance_per_stage"]) == stages
    assert len(res.acceptance_per_step) == moves * stages + draws
    assert len(res.info["log_evidence"]) == len(res.info["proposal_scale_factor"]) == runs
    assert len(res.info["proposal_scale"]) == runs and len(res.info["proposal_scale"][0]) == 2
    for schedule in res.info["tempering_schedule"]:
        assert schedule[0] == 0.0 and schedule[-1] == 1.0
        assert all(b < c for b, c in zip(schedule, schedule[1:]))
        assert len(schedule) <= stages + 1
    assert max(len(s) for s in res.info["tempering_schedule"]) == stages + 1
    assert all(0 < e <= 1 for e in res.info["ess_per_stage"])
    assert calls[-1] == ("sampling", draws, draws)
    assert ("tempering", 1000, 1000) in calls


def test_chains_are_ordered_run_major():
    # The second latent is flat (no prior, no likelihood) and starts at 10 x the
    # run id. A run's spread in it starts at 0, so its proposal starts at ~1e-3
    # (the spread floor) and grows with the spread it creates: it drifts by
    # ~0.1-0.4 over these moves, far less than the gap of 10 between runs. Each
    # chain's value then says which run it belongs to, if no resampling ever
    # crossed runs.
    runs, m, gap = 4, 32, 10.0

    def sample_tagged(n, generator):
        return torch.stack([torch.randn(n, generator=generator), gap * (torch.arange(n) // m).float()], dim=-1)

    res = run_smc(lambda z: Normal(0.0, 1.0).log_prob(z[:, 0]), lambda z: -2 * (z[:, 0] - 1) ** 2, sample_tagged,
                  num_runs=runs, particles_per_run=m, generator=seeded(0))
    run_of_chain = (torch.arange(runs * m) // m).unsqueeze(-1).expand(-1, res.num_draws)
    assert torch.equal(torch.round(res.trace[..., 1] / gap).long(), run_of_chain)


@pytest.mark.parametrize("target_ess_fraction", [0.3, 0.7])
def test_minus_inf_likelihood_regions_never_appear_and_evidence_counts_them(target_ess_fraction):
    # Prior N(0, 1); likelihood N(0.5; z, 1) on z > 0, zero elsewhere. The
    # evidence is N(0.5; 0, sqrt 2) * P(z > 0) under the untruncated posterior
    # N(0.25, 0.5). About half the prior draws are outside the support: with
    # target 0.7 no first step keeps that ESS, so the first stage is a
    # vanishing step that only drops them.
    def half_line_likelihood(z):
        inside = z[:, 0] > 0
        return torch.where(inside, Normal(z[:, 0], 1.0).log_prob(torch.tensor(0.5)), torch.tensor(-math.inf))

    res = run_smc(lambda z: Normal(0.0, 1.0).log_prob(z).sum(-1), half_line_likelihood,
                  lambda n, g: torch.randn(n, 1, generator=g), num_runs=8, particles_per_run=128,
                  target_ess_fraction=target_ess_fraction, generator=seeded(0))
    assert (res.trace > 0).all()
    exact = (Normal(0.0, math.sqrt(2)).log_prob(torch.tensor(0.5))
             + Normal(0.0, 1.0).cdf(torch.tensor(0.25 / math.sqrt(0.5))).log()).item()
    log_z = torch.tensor(res.info["log_evidence"])
    assert abs(res.info["log_evidence_mean"] - exact) < 5 * log_z.std() / math.sqrt(8) + log_z.var() / 2 + 0.02


def test_a_likelihood_that_is_zero_everywhere_is_an_error():
    with pytest.raises(ModelOutputError, match="-inf"):
        run_smc(gaussian_prior, lambda z: torch.full((z.shape[0],), -math.inf), sample_gaussian_prior,
                num_runs=2, particles_per_run=8, generator=seeded(0))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_plus_inf_likelihood_is_an_error(bad):
    with pytest.raises(ModelOutputError, match="log_likelihood_fn.*(NaN|inf)"):
        run_smc(gaussian_prior, lambda z: torch.full((z.shape[0],), bad), sample_gaussian_prior,
                num_runs=2, particles_per_run=8, generator=seeded(0))


def test_max_stages_is_a_named_error():
    with pytest.raises(ModelOutputError, match="max_stages=1"):
        run_smc(gaussian_prior, lambda z: 100 * gaussian_likelihood(z), sample_gaussian_prior,
                num_runs=2, particles_per_run=32, max_stages=1, generator=seeded(0))


@pytest.mark.parametrize("field, value", [
    ("num_runs", 0), ("num_runs", -1), ("num_runs", 2.0), ("particles_per_run", 0), ("particles_per_run", 1),
    ("num_moves", 0), ("num_final_draws", 0), ("max_stages", 0),
    ("target_ess_fraction", 0.0), ("target_ess_fraction", 1.0), ("target_ess_fraction", 1.2),
    ("move", "hmc"), ("particles_per_run", 4), ("defensive_weight", 1.0), ("defensive_weight", -0.1),
])
def test_bad_inputs_raise_naming_the_field(field, value):
    with pytest.raises(InvalidInputError, match=field):
        run_smc(gaussian_prior, gaussian_likelihood, sample_gaussian_prior, **{field: value})


def test_a_badly_shaped_prior_draw_is_an_input_error():
    with pytest.raises(InvalidInputError, match="sample_prior"):
        run_smc(gaussian_prior, gaussian_likelihood, lambda n, g: torch.zeros(n), num_runs=2, particles_per_run=16)


def test_a_stage_keeps_moving_until_enough_particles_have_moved():
    # A proposal scale far too large for a narrow likelihood accepts rarely: the
    # stages must add moves (up to max_moves) until 90% of each run has moved.
    narrow = lambda z: Normal(z, 0.05).log_prob(Y).sum(-1)  # noqa: E731
    res = run_smc(gaussian_prior, narrow, sample_gaussian_prior, num_runs=2, particles_per_run=64, move="rw",
                  num_moves=2, max_moves=40, min_moved_fraction=0.9, generator=seeded(0))
    moves = res.info["moves_per_stage"]
    assert all(2 <= k <= 40 for k in moves) and max(moves) > 2
    assert res.num_evaluations == 128 * (1 + sum(moves) + res.trace.shape[1])
    fixed = run_smc(gaussian_prior, narrow, sample_gaussian_prior, num_runs=2, particles_per_run=64, move="rw",
                    num_moves=2, generator=seeded(0))
    assert set(fixed.info["moves_per_stage"]) == {2}


@pytest.mark.parametrize("field, value", [("max_moves", 2), ("min_moved_fraction", 1.5), ("min_moved_fraction", -0.1)])
def test_bad_move_budget_raises_naming_the_field(field, value):
    with pytest.raises(InvalidInputError, match=field):
        run_smc(gaussian_prior, gaussian_likelihood, sample_gaussian_prior, num_moves=4, **{field: value})


def test_next_temperature_takes_one_target_per_run():
    ll = torch.randn(1, 300, generator=seeded(2), dtype=torch.float64).expand(2, 300) * 20
    new = kernel.next_temperature(ll, torch.zeros(2, dtype=torch.float64), torch.tensor([0.5, 0.8]))
    assert new[1] < new[0]  # keeping more ESS means a smaller step
    ess = kernel.effective_sample_size(kernel.tempered_log_weights(ll, new)) / 300
    assert torch.allclose(ess, torch.tensor([0.5, 0.8], dtype=torch.float64), atol=1e-9)


def test_runs_whose_moves_struggle_temper_more_gently():
    # One Gaussian fitted to two narrow, far-apart modes proposes mostly between them: the moves accept
    # rarely. With slow_ess_fraction the runs take more, smaller stages, and keep both modes.
    def narrow_modes(z):
        per_mode = Normal(MODES.unsqueeze(1), 0.1).log_prob(z.unsqueeze(0)).sum(-1)
        return torch.logsumexp(per_mode, dim=0) - math.log(2)

    kwargs = dict(num_runs=4, particles_per_run=128, move="independent", num_components=1, defensive_weight=0.0)
    plain = run_smc(wide_prior, narrow_modes, sample_wide_prior, generator=seeded(0), **kwargs)
    gentle = run_smc(wide_prior, narrow_modes, sample_wide_prior, slow_ess_fraction=0.9, generator=seeded(0), **kwargs)
    assert min(plain.info["acceptance_per_stage"]) < 0.15  # the rule has something to act on
    assert gentle.info["num_stages"] > plain.info["num_stages"]
    share = (gentle.trace[..., 0] > 0).float().mean()
    assert abs(float(share) - 0.5) < 0.1
    with pytest.raises(InvalidInputError, match="slow_ess_fraction"):
        run_smc(wide_prior, two_mode_likelihood, sample_wide_prior, target_ess_fraction=0.6, slow_ess_fraction=0.5)


# ----------------------------------------------------------------- waste-free SMC (chain_length)


@pytest.mark.parametrize("move, chain_length", [("independent", 4), ("independent", 16), ("mixed", 8), ("rw", 4)])
def test_waste_free_conjugate_gaussian_posterior_and_evidence(move, chain_length):
    res = run_smc(gaussian_prior, gaussian_likelihood, sample_gaussian_prior, num_runs=RUNS,
                  particles_per_run=PARTICLES, generator=seeded(0), move=move, chain_length=chain_length)
    # The same tolerances as the standard engine's test above, for the same reasons: the 16 runs are
    # independent whatever ties a run's chains together, so their spread gives honest standard errors.
    means = run_means(res.trace)
    se = means.std(dim=0) / math.sqrt(RUNS)
    assert ((means.mean(dim=0) - POST_MEAN).abs() < 5 * se).all(), (means.mean(0), POST_MEAN, se)
    variances = res.trace.reshape(RUNS, -1, 2).var(dim=1)
    se_var = variances.std(dim=0) / math.sqrt(RUNS)
    assert ((variances.mean(dim=0) - POST_VAR).abs() < 5 * se_var).all(), (variances.mean(0), POST_VAR, se_var)
    log_z = torch.tensor(res.info["log_evidence"])
    tolerance = 5 * log_z.std() / math.sqrt(RUNS) + log_z.var() / 2
    assert abs(res.info["log_evidence_mean"] - LOG_EVIDENCE) < tolerance, (log_z, LOG_EVIDENCE)
    # Every stage moves M / P chains P - 1 times: M (P - 1) / P evaluations per run, not M per move.
    stages = res.info["num_stages"]
    assert res.info["moves_per_stage"] == [chain_length - 1] * stages
    n = RUNS * PARTICLES
    assert res.num_evaluations == n + stages * n // chain_length * (chain_length - 1) + n * 10


def test_waste_free_keeps_every_state_of_its_chains():
    # A flat likelihood: one stage to beta = 1. Its equal weights resample every P-th particle (one per
    # chain slot), and the particles after it are those chains' P states, starts first.
    p, m = 4, 16
    res = run_smc(gaussian_prior, lambda z: torch.zeros(z.shape[0]), sample_gaussian_prior, num_runs=2,
                  particles_per_run=m, move="rw", chain_length=p, num_final_draws=1, generator=seeded(0))
    assert res.info["num_stages"] == 1 and res.info["moves_per_stage"] == [p - 1]
    assert res.num_evaluations == 2 * m + 2 * m // p * (p - 1) + 2 * m


@pytest.mark.parametrize("value", [1, 3, 128, 2.0, True, 0])
def test_bad_chain_length_is_a_one_line_error(value):
    # 3 does not divide 128; 128 leaves one chain per run (no spread to scale the random walk by).
    with pytest.raises(InvalidInputError, match="chain_length must be an integer >= 2 that divides") as err:
        run_smc(gaussian_prior, gaussian_likelihood, sample_gaussian_prior, num_runs=2, particles_per_run=128,
                chain_length=value)
    assert "\n" not in str(err.value)


def test_systematic_resampling_of_fewer_draws_than_particles():
    # Equal weights, M / P draws: one particle from each block of P (waste-free chain starts).
    idx = kernel.systematic_resample(seeded(0), torch.zeros(3, 12), num_draws=4)
    assert idx.shape == (3, 4) and ((idx // 3) == torch.arange(4)).all()
    with pytest.raises(InvalidInputError, match="num_draws"):
        kernel.systematic_resample(seeded(0), torch.zeros(1, 4), num_draws=0)


# ---------------------------------------------------------------- ordered resampling

def _three_clusters(seed: int, runs: int = 2, m: int = 90):
    """``(points (R, M, 4), cluster (R, M))``: three tight clusters far apart, particles shuffled."""
    g = seeded(seed)
    centres = torch.tensor([[0.0, 0, 0, 0], [8.0, 1, -3, 0], [-5.0, 6, 2, 9]])
    cluster = torch.stack([torch.randperm(m, generator=g) % 3 for _ in range(runs)])
    points = centres[cluster] + 0.1 * torch.randn(runs, m, 4, generator=g)
    return points, cluster


def test_spatial_order_is_a_permutation_that_keeps_clusters_in_few_stretches():
    for seed in range(5):
        points, cluster = _three_clusters(seed)
        order = kernel.spatial_order(points)
        assert (order.sort(dim=1).values == torch.arange(points.shape[1])).all()
        labels = cluster.gather(1, order)
        stretches = 1 + (labels[:, 1:] != labels[:, :-1]).sum(dim=1)
        # The first cut, at the middle of 90, falls inside one of the clusters of 30; no other cut does.
        assert (stretches <= 4).all()


def test_spatial_order_of_one_coordinate_is_a_full_sort():
    # In one dimension every level splits its blocks at their medians, so the order is the sort;
    # keys above a block's mid-range must keep their ranks (an earlier version tied them).
    # Square roots crowd the upper half of the range, where the ties would cross the middle cut.
    x = torch.randperm(64, generator=seeded(3)).to(torch.float64).view(1, 64, 1).sqrt()
    order = kernel.spatial_order(x)
    assert order[0].tolist() == x[0, :, 0].argsort().tolist()


def test_ordered_resampling_copies_each_cluster_by_its_weight_to_within_one_per_stretch():
    points, cluster = _three_clusters(1)
    m = points.shape[1]
    log_w = torch.randn(2, m, generator=seeded(2), dtype=torch.float64) * 2
    w = torch.softmax(log_w, dim=1)
    expected = torch.stack([torch.bincount(c, weights=wr, minlength=3) for c, wr in zip(cluster, w)]) * m
    worst = {"ordered": 0.0, "systematic": 0.0}
    for seed in range(50):
        for way, idx in (("ordered", kernel.ordered_systematic_resample(seeded(seed), log_w, points)),
                         ("systematic", kernel.systematic_resample(seeded(seed), log_w))):
            counts = torch.stack([torch.bincount(row, minlength=m) for row in idx])
            assert ((counts >= (m * w).floor() - 1e-9) & (counts <= (m * w).ceil() + 1e-9)).all()  # still unbiased
            per_cluster = torch.stack([torch.bincount(c[r], minlength=3) for c, r in zip(cluster, idx)])
            worst[way] = max(worst[way], float((per_cluster - expected).abs().max()))
    assert worst["ordered"] < 2  # at most two stretches per cluster (the test above), each within one
    assert worst["systematic"] > 3  # in the particles' own order, a cluster's copies stray further


def test_an_unknown_resampling_is_an_error_naming_the_choices():
    with pytest.raises(InvalidInputError, match="resampling must be one of systematic, ordered, got 'hilbert'"):
        SMCConfig(num_runs=2, particles_per_run=16, resampling="hilbert")
