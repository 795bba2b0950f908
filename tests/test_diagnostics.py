import dataclasses
import math

import numpy as np
import pytest
import torch

from ppl_audit import diagnostics
from ppl_audit.errors import InvalidInputError
from ppl_audit.inference import MCMCConfig, run_mh
from tests.figure_checks import capture_figures, overlapping_texts


def test_nested_rhat_hand_computed():
    # Superchain 1: chains [0, 2] and [2, 4]; superchain 2: [4, 6] and [6, 8].
    # Within-chain variance 2, between chains of a superchain 2 -> W = 4;
    # superchain means 2 and 6 -> B = 8; nested R-hat = sqrt(1 + 8 / 4).
    draws = np.array([[0, 2], [2, 4], [4, 6], [6, 8]], dtype=float)[..., None]
    assert diagnostics.nested_rhat(draws, 2)[0] == pytest.approx(math.sqrt(3.0))


def test_nested_rhat_needs_equal_superchains():
    with pytest.raises(ValueError, match="superchains"):
        diagnostics.nested_rhat(np.zeros((10, 2, 1)), 3)


def test_superchain_ess_of_independent_draws_is_about_their_number():
    rng = np.random.default_rng(0)
    draws = rng.normal(size=(64 * 32, 1, 1))
    ess = [diagnostics.superchain_ess(rng.normal(size=(2048, 1, 1)), 32)[0] for _ in range(20)]
    # var(superchain means) has 31 degrees of freedom: the ESS estimate scatters by ~25%;
    # its median over 20 repetitions sits within 20% of the true 2,048.
    assert abs(np.median(ess) / 2048 - 1) < 0.2
    assert diagnostics.superchain_ess(draws, 32)[0] <= draws.size


def test_summary_verdicts_and_netcdf_round_trip(tmp_path):
    res = run_mh(lambda z: -0.5 * (z**2).sum(-1), torch.randn(64, 2, generator=torch.Generator().manual_seed(0)),
                 MCMCConfig(200), generator=torch.Generator().manual_seed(1))
    res = dataclasses.replace(res, superchains=8)
    idata = res.to_arviz()
    summary = diagnostics.summarize(idata, superchains=8)
    assert set(summary["per_latent"]["z0"]) >= {"rhat", "ess_bulk", "ess_tail", "mcse_mean", "nested_rhat", "ess_superchains"}
    assert summary["nested_rhat_max"] < 1.05
    assert isinstance(summary["verdict"], str) and summary["verdict"]
    path = tmp_path / "trace.nc"
    diagnostics.save_netcdf(res, path)
    back = diagnostics.load_netcdf(path)
    assert np.array_equal(back.posterior["z"].values, idata.posterior["z"].values)
    assert list(back.posterior["z"].coords["latent"].values) == ["z0", "z1"]


def test_verdict_flags_disagreeing_superchains():
    summary = {"nested_rhat_max": 1.3, "superchains": 8}
    ok, text = diagnostics.convergence_verdict(summary)
    assert not ok and "Not converged" in text


def test_trace_and_rank_plots_are_pngs():
    res = run_mh(lambda z: -0.5 * (z**2).sum(-1), torch.zeros(8, 2), MCMCConfig(40),
                 generator=torch.Generator().manual_seed(0))
    trace_png, rank_png = diagnostics.trace_and_rank_png(res.to_arviz())
    assert trace_png[:4] == rank_png[:4] == b"\x89PNG"


SIX_LATENTS = ("w", "h", "t", "r", "cx", "cy")  # the house-rocket-circle world's


def test_trace_and_rank_plots_have_one_labelled_row_per_latent(monkeypatch):
    drawn = capture_figures(monkeypatch)
    res = run_mh(lambda z: -0.5 * (z**2).sum(-1), torch.zeros(16, 6), MCMCConfig(40),
                 generator=torch.Generator().manual_seed(0), latent_names=SIX_LATENTS)
    chains, labels = [0, 4, 8, 12], ["run 0", "run 1", "run 2", "run 3"]
    diagnostics.trace_and_rank_png(res.to_arviz(), chains=chains, chain_labels=labels)
    trace, rank = drawn
    # Trace: a (latent x [density, draws]) grid, each row titled with its latent's name alone.
    rows = {}
    for ax in trace.axes:
        rows.setdefault(round(ax.get_position().y0, 3), []).append(ax.get_title())
    assert [titles for _, titles in sorted(rows.items(), reverse=True)] == [[n, n] for n in SIX_LATENTS]
    assert [t.get_text() for t in trace.legends[0].get_texts()] == labels  # the chains are named
    assert len(trace.axes[1].get_lines()) == len(chains)  # the draws panel: one line per chain
    # Rank: one row per latent, one band per chain, named as in the trace's legend.
    assert [ax.get_title() for ax in rank.axes] == list(SIX_LATENTS)
    assert len({round(ax.get_position().x0, 3) for ax in rank.axes}) == 1
    assert [t.get_text() for t in rank.axes[0].get_yticklabels()] == labels
    for fig in (trace, rank):
        assert overlapping_texts(fig) == []
        assert fig.get_size_inches()[1] > 6  # grows with the latents: 6 rows of readable height


def test_trace_and_rank_plots_default_to_the_first_chains(monkeypatch):
    drawn = capture_figures(monkeypatch)
    res = run_mh(lambda z: -0.5 * (z**2).sum(-1), torch.zeros(12, 1), MCMCConfig(20),
                 generator=torch.Generator().manual_seed(0))
    diagnostics.trace_and_rank_png(res.to_arviz(), max_chains=3)
    assert [t.get_text() for t in drawn[0].legends[0].get_texts()] == ["0", "1", "2"]
    assert [ax.get_title() for ax in drawn[1].axes] == ["z0"]
    with pytest.raises(InvalidInputError, match="one label per chain"):
        diagnostics.trace_and_rank_png(res.to_arviz(), chains=[0, 1], chain_labels=["a"])


def _hand_elpd_waic(log_lik, ddof):
    from scipy.special import logsumexp

    lppd = logsumexp(log_lik, axis=0) - np.log(log_lik.shape[0])
    return float(np.sum(lppd - log_lik.var(axis=0, ddof=ddof)))


def test_ensemble_waic_matches_hand_formula():
    log_lik = np.array([[-1.0, -2.0, -0.3], [-1.5, -0.5, -0.2],
                        [-0.8, -3.0, -0.4], [-1.1, -1.0, -0.35]])
    out = diagnostics.ensemble_waic_loo(log_lik)
    # arviz 0.23: log scale (higher is better) and the population variance (ddof=0) in p_waic.
    assert out["scale"] == "log"
    assert out["elpd_waic"] == pytest.approx(_hand_elpd_waic(log_lik, ddof=0), rel=1e-12)
    assert out["elpd_waic"] != pytest.approx(_hand_elpd_waic(log_lik, ddof=1), rel=1e-3)
    assert out["p_waic"] == pytest.approx(log_lik.var(axis=0, ddof=0).sum(), rel=1e-12)
    assert (out["num_members"], out["num_inputs"]) == (4, 3)
    assert np.isfinite(out["elpd_loo"]) and np.isfinite(out["se_waic"])


def test_ensemble_waic_records_arviz_warnings_and_is_json_safe(recwarn):
    import json

    log_lik = torch.tensor([[-1.0, -9.0], [-2.0, -1.0], [-1.5, -5.0]])  # large variance: WAIC warns
    out = diagnostics.ensemble_waic_loo(log_lik, pointwise=True)
    emitted = [str(w.message) for w in recwarn.list]
    assert not [m for m in emitted if "log predictive" in m or "Pareto" in m]  # recorded, not emitted
    assert out["waic_warning"] is True and out["loo_warning"] is True
    assert any("0.4" in m for m in out["arviz_warnings"])
    # Three members are too few to fit a Pareto tail: ArviZ reports k = inf for every input.
    assert out["pareto_k_over_0_7"] == 2 and out["pareto_k_max"] == float("inf")
    assert len(out["elpd_waic_i"]) == len(out["pareto_k"]) == 2
    assert sum(out["elpd_waic_i"]) == pytest.approx(out["elpd_waic"])
    for key, value in out.items():
        assert isinstance(value, (bool, int, float, str, list)), key
    json.dumps(out)


def test_ensemble_waic_rejects_nan_and_bad_shapes():
    from ppl_audit.errors import InvalidInputError, ModelOutputError

    with pytest.raises(ModelOutputError, match="1 NaN or inf value"):
        diagnostics.ensemble_waic_loo(np.array([[0.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(InvalidInputError, match="K >= 2"):
        diagnostics.ensemble_waic_loo(np.zeros((1, 3)))
    with pytest.raises(InvalidInputError):
        diagnostics.ensemble_waic_loo(np.zeros(3))


# --------------------------------------------------------------------------- issue 21: honest ESS, SMC's own checks


def copied_particles(runs=8, distinct=5, copies=100, draws=10, seed=0):
    """``runs`` independent runs, each ``distinct`` independent N(0, 1) values copied ``copies`` times,
    held for ``draws`` draws: SMC particles after resampling with moves that never accepted.
    The true ESS of the posterior mean is ``runs * distinct``."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(runs, distinct, 1, 1, 1))
    return np.broadcast_to(values, (runs, distinct, copies, draws, 1)).reshape(-1, draws, 1).copy()


def idata_of(draws):
    from ppl_audit.inference.result import SamplingResult

    res = SamplingResult(method="smc", latent_names=("z0",), trace=torch.as_tensor(draws, dtype=torch.float32))
    return res.to_arviz()


def test_smc_particles_are_not_counted_as_independent_chains():
    draws = copied_particles()
    truth = 8 * 5
    as_chains = diagnostics.summarize(idata_of(draws), superchains=8)
    honest = diagnostics.summarize(idata_of(draws), superchains=8, chains_independent=False)
    assert as_chains["ess_bulk_min"] > 25 * truth  # ArviZ counts the 4,000 copies as chains
    # From the runs' spread: a chi-square with 7 degrees of freedom, so within a factor ~4 of the truth.
    assert truth / 4 < honest["ess_bulk_min"] < truth * 4
    assert honest["ess_tail_min"] < truth * 4
    assert honest["per_latent"]["z0"]["ess_bulk"] == honest["ess_bulk_min"]
    assert honest["ess_per_superchain_min"] == pytest.approx(honest["ess_superchains_min"] / 8)


def test_without_independent_runs_smc_has_no_ess_to_report():
    summary = diagnostics.summarize(idata_of(copied_particles(runs=1)), chains_independent=False)
    assert math.isnan(summary["ess_bulk_min"]) and not summary["converged"]


def test_smc_checks_name_each_failure():
    ok = diagnostics.smc_checks([-3.0, -3.1, -2.9, -3.05], final_acceptance=0.3, distinct_share_min=0.9)
    assert ok["passed"] and ok["failed"] == [] and ok["log_evidence_sd"] == pytest.approx(0.0854, abs=1e-3)
    bad = diagnostics.smc_checks([-3.0, -9.0, -2.0, -3.0], final_acceptance=0.01, distinct_share_min=0.2)
    assert not bad["passed"] and len(bad["failed"]) == 3
    summary = {"nested_rhat_max": 1.004, "superchains": 4, "ess_superchains_min": 900.0, "smc": bad}
    converged, text = diagnostics.convergence_verdict(summary)
    assert not converged
    for words in ("log evidence spreads by sd 3.20", "20% distinct", "accept 1.0%", "--particles"):
        assert words in text, text
    assert bad["lagging_runs"] == 1 and "1 of 4 runs lie 6.0 nats below the median run" in text


def test_runs_far_below_the_median_evidence_are_counted_and_named():
    # Twelve runs agree within 0.6 nat (median -13.1); four lost the main region and lie 4.4-5.9 nats below.
    log_z = [-13.0, -13.2, -12.8, -13.1, -12.9, -13.3, -13.0, -12.7, -13.1, -13.2, -12.9, -13.0,
             -17.5, -19.0, -18.1, -17.6]
    checks = diagnostics.smc_checks(log_z, final_acceptance=0.2, distinct_share_min=0.9)
    assert checks["lagging_runs"] == 4
    assert "4 of 16 runs lie 4.4-5.9 nats below the median run" in checks["failed"][0]
    # A wide but even spread names no lagging run: no run stands apart from the rest.
    even = diagnostics.smc_checks([-10.0, -11.0, -12.0, -13.0, -14.0], final_acceptance=0.2, distinct_share_min=0.9)
    assert even["lagging_runs"] == 0 and "lie" not in even["failed"][0]


def test_the_nested_rhat_threshold_asks_for_about_50_effective_particles_per_run():
    # At stationarity nested R-hat^2 ~ 1 + 1/E: 50 effective particles a run give 1.01.
    rng = np.random.default_rng(3)
    runs, per_run = 400, 50  # many runs, so B is estimated precisely
    draws = rng.normal(size=(runs * per_run, 1, 1))
    assert diagnostics.nested_rhat(draws, runs)[0] == pytest.approx(math.sqrt(1 + 1 / per_run), abs=2e-3)
    summary = {"nested_rhat_max": 1.0154, "superchains": 8, "ess_per_superchain_min": 33.0}
    converged, text = diagnostics.convergence_verdict(summary)
    assert not converged and "1.0154 (> 1.01" in text and "these were worth about 33.0 each" in text
