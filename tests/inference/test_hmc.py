import math

import pytest
import torch

from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.inference.adaptation import DualAveraging, WelfordVariance, warmup_windows
from ppl_audit.inference.kernels import hmc
from ppl_audit.inference.mcmc import MCMCConfig, run_hmc

MEAN = torch.tensor([1.0, -2.0])
SD = torch.tensor([0.5, 3.0])  # scales 6x apart: the mass matrix has something to learn


def gaussian(z):
    return -0.5 * (((z - MEAN) / SD) ** 2).sum(-1)


def standard_normal(z):
    return -0.5 * (z**2).sum(-1)


@pytest.fixture(scope="module")
def gaussian_run():
    # 2,000 chains started far from the target (sd 5 around 0), 300 steps of
    # which 150 warm-up (mass-matrix window at steps 75-100), 8 leapfrog steps.
    start = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1)) * 5
    return run_hmc(gaussian, start, MCMCConfig(300), generator=torch.Generator().manual_seed(0), superchains=4)


def test_gaussian_target_mean_and_variance(gaussian_run):
    final = gaussian_run.final_position
    n = final.shape[0]
    # The 2,000 final states are independent draws: 5 standard errors of the mean.
    assert ((final.mean(0) - MEAN).abs() < 5 * SD / math.sqrt(n)).all()
    # Sample variance of n normals: relative standard error sqrt(2/(n-1)) ~ 0.032; allow 5 of them.
    assert ((final.var(0) / SD**2 - 1).abs() < 5 * math.sqrt(2 / (n - 1))).all()


def test_adaptation_reaches_target_acceptance_and_learns_the_variances(gaussian_run):
    # Dual averaging keeps the *averaged* step size, so post-warm-up acceptance
    # lands near, not on, the target (measured 0.79 here); 0.1 either side.
    assert abs(gaussian_run.acceptance_rate - 0.8) < 0.1
    # The inverse mass is the pooled variance of 25 steps x 2,000 chains
    # (relative SE ~0.01 if independent, more with autocorrelation): within 20%.
    inverse_mass = torch.tensor(gaussian_run.info["inverse_mass"])
    assert ((inverse_mass / SD**2 - 1).abs() < 0.2).all()
    assert gaussian_run.info["num_divergences"] == 0


def test_result_shapes_counts_and_info(gaussian_run):
    res = gaussian_run
    assert res.method == "hmc"
    assert res.trace.shape == (2000, 150, 2)
    for key in ("accepted", "acceptance_prob", "diverging", "energy"):
        assert res.sample_stats[key].shape == (2000, 150)
    assert res.sample_stats["accepted"].dtype == torch.bool
    assert res.sample_stats["diverging"].dtype == torch.bool
    assert len(res.acceptance_per_step) == 300
    assert res.num_evaluations == 2000 * (1 + 300 * 8)
    assert res.superchains == 4
    assert res.info["num_leapfrog"] == 8
    assert len(res.info["step_size"]) == 2000 and len(set(res.info["step_size"])) == 1  # pooled adaptation
    assert res.info["step_size"][0] > 0
    assert res.num_warmup == 150


def test_evaluations_are_counted_exactly_and_to_arviz_works():
    rows = []

    def counting(z):
        rows.append(z.shape[0])
        return standard_normal(z)

    calls = []
    res = run_hmc(counting, torch.zeros(6, 3), MCMCConfig(10), generator=torch.Generator().manual_seed(0),
                  num_leapfrog=3, latent_names=["a", "b", "c"], progress=lambda *a: calls.append(a))
    assert sum(rows) == res.num_evaluations == 6 * (1 + 10 * 3)
    assert calls[-1] == ("sampling", 10, 10) and len(calls) == 10
    idata = res.to_arviz()
    assert idata.posterior["z"].shape == (6, 5, 3)
    assert "diverging" in idata.sample_stats


def test_short_warmup_keeps_a_usable_step_size():
    # 20 warm-up steps: the mass-matrix window ends 2 steps before warm-up does.
    # Restarting dual averaging with Stan's 10x pull left acceptance near 0 here.
    start = torch.randn(500, 2, generator=torch.Generator().manual_seed(10)) * 2
    res = run_hmc(gaussian, start, MCMCConfig(40), generator=torch.Generator().manual_seed(0))
    assert res.info["mass_matrix_windows"] == [[3, 18]]
    assert 0.6 < res.acceptance_rate < 1.0


def test_per_chain_step_size_adaptation():
    res = run_hmc(gaussian, torch.zeros(50, 2), MCMCConfig(60), generator=torch.Generator().manual_seed(0),
                  step_size_adaptation="per_chain")
    sizes = torch.tensor(res.info["step_size"])
    assert sizes.shape == (50,) and (sizes > 0).all() and len(set(sizes.tolist())) > 1
    assert torch.isfinite(res.trace).all()


def test_same_seed_same_trace():
    def run(seed):
        return run_hmc(gaussian, torch.zeros(8, 2), MCMCConfig(30), generator=torch.Generator().manual_seed(seed))

    a, b, c = run(5), run(5), run(6)
    assert torch.equal(a.trace, b.trace)
    assert torch.equal(a.sample_stats["acceptance_prob"], b.sample_stats["acceptance_prob"])
    assert not torch.equal(a.trace, c.trace)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_plus_inf_log_density_is_an_error(bad):
    def broken(z):
        return standard_normal(z) + bad

    with pytest.raises(ModelOutputError, match="NaN|inf"):
        run_hmc(broken, torch.zeros(4, 1), MCMCConfig(5))


def test_bad_inputs():
    z = torch.zeros(4, 2)
    with pytest.raises(InvalidInputError, match="num_steps"):
        MCMCConfig(0)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(InvalidInputError, match="step_size"):
            run_hmc(standard_normal, z, MCMCConfig(5), step_size=bad)
    with pytest.raises(InvalidInputError, match="step_size"):
        run_hmc(standard_normal, z, MCMCConfig(5), step_size=torch.tensor([0.1, 0.1, -0.1, 0.1]))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(InvalidInputError, match="num_leapfrog"):
            run_hmc(standard_normal, z, MCMCConfig(5), num_leapfrog=bad)
    with pytest.raises(InvalidInputError, match="non-finite"):
        run_hmc(standard_normal, torch.tensor([[0.0, math.nan]]), MCMCConfig(5))
    with pytest.raises(InvalidInputError, match="at least one chain"):
        run_hmc(standard_normal, torch.zeros(0, 2), MCMCConfig(5))
    with pytest.raises(InvalidInputError, match="superchains"):
        run_hmc(standard_normal, z, MCMCConfig(5), superchains=3)
    with pytest.raises(InvalidInputError, match="step_size_adaptation"):
        run_hmc(standard_normal, z, MCMCConfig(5), step_size_adaptation="global")
    with pytest.raises(InvalidInputError, match="latent names"):
        run_hmc(standard_normal, z, MCMCConfig(5), latent_names=["only_one"])
    # The kernel checks what it can without reading tensors back from the device.
    state = hmc.init(z, standard_normal)
    with pytest.raises(InvalidInputError, match="step_size"):
        hmc.step(None, state, standard_normal, step_size=0.0, inverse_mass=1.0, num_leapfrog=2)
    with pytest.raises(InvalidInputError, match="step_size"):
        hmc.step(None, state, standard_normal, step_size=torch.ones(3), inverse_mass=1.0, num_leapfrog=2)
    with pytest.raises(InvalidInputError, match="inverse_mass"):
        hmc.step(None, state, standard_normal, step_size=0.1, inverse_mass=torch.ones(3), num_leapfrog=2)
    with pytest.raises(InvalidInputError, match="num_leapfrog"):
        hmc.step(None, state, standard_normal, step_size=0.1, inverse_mass=1.0, num_leapfrog=0)


def test_starts_that_hmc_cannot_use():
    def half_plane(z):
        return torch.where(z[:, 0] > 0, -z[:, 0], torch.full_like(z[:, 0], -math.inf))

    with pytest.raises(InvalidInputError, match="-inf"):
        hmc.init(torch.tensor([[1.0], [-1.0]]), half_plane)
    with pytest.raises(ModelOutputError, match="gradient"):
        hmc.init(torch.ones(2, 1), lambda z: standard_normal(z).detach())
    with pytest.raises(ModelOutputError, match="gradient"):
        hmc.init(torch.zeros(2, 1), lambda z: -z.abs().sqrt().sum(-1))  # infinite slope at 0


def test_minus_inf_outside_a_half_space_is_never_left():
    def half_space(z):  # exponential in z0 on z0 > 0, standard normal in z1
        inside = z[:, 0] > 0
        return torch.where(inside, -z[:, 0] - 0.5 * z[:, 1] ** 2, torch.full_like(z[:, 0], -math.inf))

    start = torch.full((300, 2), 0.5)
    res = run_hmc(half_space, start, MCMCConfig(200), generator=torch.Generator().manual_seed(0))
    assert (res.trace[..., 0] > 0).all()
    assert torch.isfinite(res.trace).all()
    # Trajectories that cross the boundary are rejected and reported.
    assert res.info["num_divergences"] > 0
    # Exponential(1): mean 1, sd 1 / sqrt(300) per final state mean; 5 standard errors.
    assert abs(float(res.final_position[:, 0].mean()) - 1) < 5 / math.sqrt(300)


def test_nan_mid_trajectory_is_rejected_not_raised():
    def cliff(z):  # NaN beyond z = 3, as a model that breaks outside its domain would give
        return torch.where(z[:, 0] < 3, -0.5 * z[:, 0] ** 2, torch.full_like(z[:, 0], math.nan))

    state = hmc.init(torch.full((200, 1), 2.5), cliff)
    g = torch.Generator().manual_seed(0)
    diverged = torch.zeros(200, dtype=torch.bool)
    for _ in range(20):
        state, info = hmc.step(g, state, cliff, step_size=0.5, inverse_mass=1.0, num_leapfrog=5)
        assert (state.position < 3).all() and torch.isfinite(state.log_density).all()
        assert not (info.accepted & info.diverging).any()
        diverged |= info.diverging
    assert diverged.any()


def test_absurd_step_size_diverges():
    state = hmc.init(torch.randn(64, 3, generator=torch.Generator().manual_seed(1)), standard_normal)
    new, info = hmc.step(torch.Generator().manual_seed(0), state, standard_normal,
                         step_size=100.0, inverse_mass=1.0, num_leapfrog=8)
    assert info.diverging.all()
    assert not info.accepted.any()
    assert (info.energy_change > hmc.DIVERGENCE_THRESHOLD).all()
    assert torch.equal(new.position, state.position)
    # A small step conserves energy: no divergence, acceptance near 1.
    _, info = hmc.step(torch.Generator().manual_seed(0), state, standard_normal,
                       step_size=0.01, inverse_mass=1.0, num_leapfrog=8)
    assert not info.diverging.any() and (info.acceptance_prob > 0.99).all()


def test_kernel_carries_extras_of_accepted_states_and_no_graphs():
    def with_extras(z):
        logp = gaussian(z)
        return logp, torch.stack([z.sum(-1), logp], dim=-1)

    state = hmc.init(torch.zeros(100, 2), with_extras)
    g = torch.Generator().manual_seed(0)
    step_size = torch.full((100,), 0.8)  # per-chain step size and per-chain inverse mass
    inverse_mass = (SD**2).expand(100, 2)
    moved = torch.zeros(100, dtype=torch.bool)
    for _ in range(5):
        state, info = hmc.step(g, state, with_extras, step_size=step_size, inverse_mass=inverse_mass, num_leapfrog=4)
        moved |= info.accepted
        expected_logp, expected_extras = with_extras(state.position)
        assert torch.allclose(state.extras, expected_extras, atol=1e-5)
        assert torch.allclose(state.log_density, expected_logp, atol=1e-5)
        assert torch.allclose(state.grad, -(state.position - MEAN) / SD**2, atol=1e-4)
        for t in (state.position, state.log_density, state.grad, state.extras, info.acceptance_prob):
            assert not t.requires_grad and t.grad_fn is None
    assert moved.any()


def test_extras_trace_through_the_driver():
    def with_extras(z):
        return standard_normal(z), z[:, :1] * 2

    res = run_hmc(with_extras, torch.zeros(10, 2), MCMCConfig(20), generator=torch.Generator().manual_seed(0),
                  extras_names=["twice_z0"])
    assert res.extras_trace.shape == (10, 10, 1)
    assert torch.allclose(res.extras_trace[..., 0], 2 * res.trace[..., 0])
    assert res.extras_names == ("twice_z0",)


def test_dual_averaging_finds_the_target_step_size():
    # Acceptance exp(-eps) reaches 0.6 at eps = -log(0.6) ~ 0.51, from very different starts.
    da = DualAveraging(target=0.6)
    state = da.init(torch.tensor([1e-3, 1.0, 50.0]))
    for _ in range(500):
        state = da.update(state, torch.exp(-state.step_size))
    assert torch.allclose(da.final(state), torch.tensor(-math.log(0.6)).expand(3), rtol=0.05)
    with pytest.raises(InvalidInputError, match="target"):
        DualAveraging(target=1.0)


def test_welford_matches_the_pooled_sample_variance():
    batches = [torch.randn(n, 3, generator=torch.Generator().manual_seed(n)) * torch.tensor([0.1, 1.0, 10.0]) + 5
               for n in (7, 1, 40)]
    w = WelfordVariance(regularize=False)
    state = w.init(3)
    for b in batches:
        state = w.update(state, b)
    assert state.count == 48
    assert torch.allclose(w.variance(state), torch.cat(batches).var(0), rtol=1e-4)
    assert torch.allclose(state.mean, torch.cat(batches).mean(0), rtol=1e-5)
    with pytest.raises(InvalidInputError, match="2 draws"):
        w.variance(w.init(3))


@pytest.mark.parametrize("num_warmup", [0, 19, 20, 100, 149, 150, 151, 1000, 5000])
def test_warmup_windows_are_contiguous_and_inside_warmup(num_warmup):
    windows = warmup_windows(num_warmup)
    if num_warmup < 20:
        assert windows == []
        return
    assert windows[0][0] > 0 and windows[-1][1] < num_warmup
    assert all(a[1] == b[0] for a, b in zip(windows, windows[1:]))
    assert all(s < e for s, e in windows)
