"""The level-set audit's figures, as a reader sees them (issue 25, "plots a reader can read").

Each sampler figure is checked against the run it draws: the acceptance plot's boundary sits where
SMC's tempering moves end (not at step 0), the tempering plot holds every run, trace and rank plots
one row per latent; the house/rocket target section uses one class, P(house), in all its figures.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from ppl_audit.audits import levelset
from ppl_audit.audits.levelset import LevelSetAuditSpec, TargetSpec
from ppl_audit.inference import MCMCConfig, run_mh
from ppl_audit.inference.smc import pool_runs, run_smc

KEPT = "tempering moves end, kept draws start"
NAMES = ("w", "h", "t")
TINY = dict(num_particles=32, num_steps=8, num_samples=32, num_prior_samples=50, device="cpu")


def _smc(runs: int, particles: int, seed: int, draws: int = 5):
    """A small SMC run on a 3-latent Gaussian whose likelihood needs several tempering stages."""
    prior = torch.distributions.Normal(0.0, 1.0)
    return run_smc(lambda z: prior.log_prob(z).sum(-1), lambda z: -8.0 * (z - 1.0).square().sum(-1),
                   lambda n, g: torch.randn(n, 3, generator=g), num_runs=runs, particles_per_run=particles,
                   num_final_draws=draws, move="rw", latent_names=NAMES, generator=torch.Generator().manual_seed(seed))


def _figures(chain) -> dict:
    """``_method_figures`` of a run, by the part of their name after the key."""
    samples = types.SimpleNamespace(chain=chain, to_arviz=chain.to_arviz)
    target = TargetSpec("ambiguous", (0.5, 0.5))
    return {f.name.removeprefix("key_"): f for f in levelset._method_figures("key", "world", target, samples)}


def test_smc_boundary_is_where_the_tempering_moves_end():
    chain = _smc(runs=4, particles=16, seed=0)
    moves = chain.info["moves_per_stage"]
    assert chain.info["num_stages"] > 1 and chain.num_warmup == 0
    figs = _figures(chain)
    acceptance = figs["acceptance"].data
    # The line sits after every tempering move, where the kept draws start: not at step 0.
    assert acceptance["vlines"] == {KEPT: [float(sum(moves))]}
    assert sum(moves) == len(acceptance["series"]["acceptance rate"]) - chain.trace.shape[1]
    assert "dashed line marks where the tempering moves end" in figs["acceptance"].caption
    # Every run's schedule, in one group (one round).
    tempering = figs["tempering"].data
    assert tempering["schedules"] == [pytest.approx(s, abs=1e-4) for s in chain.info["tempering_schedule"]]
    assert len(tempering["schedules"]) == 4 and tempering["run_groups"] == [0, 0, 0, 0]
    assert tempering["ess_per_stage"] == [pytest.approx(chain.info["ess_per_stage"], abs=1e-4)]
    assert "every one of the 4 independent SMC runs" in figs["tempering"].caption
    # Trace and rank: 8 chains taken in turn from the 4 runs, every latent, the draws as drawn.
    picked = [0, 16, 32, 48, 1, 17, 33, 49]
    for name in ("trace", "rank"):
        data = figs[name].data
        assert data["chains"] == picked
        assert data["chain_labels"] == ["run 0", "run 1", "run 2", "run 3", "run 0, particle 1",
                                        "run 1, particle 1", "run 2, particle 1", "run 3, particle 1"]
        assert data["latent_names"] == list(NAMES)
        assert np.allclose(data["draws"], chain.trace[picked].numpy(), atol=1e-4)
        assert "taken in turn from each of the 4 SMC runs" in figs[name].caption
    pooled = _figures(pool_runs([_smc(runs=16, particles=4, seed=3)], superchains=16))["trace"]
    assert pooled.data["chains"] == [4 * k for k in range(8)]  # one particle from each of 8 of 16 runs
    assert "particle 0 of SMC runs 0-7 (of 16)" in pooled.caption


def test_pooled_rounds_mark_each_rounds_kept_draws_and_colour_runs_by_round():
    first, second = _smc(runs=4, particles=8, seed=1), _smc(runs=4, particles=16, seed=2)
    chain = pool_runs([first, second], superchains=4)
    draws = chain.trace.shape[1]
    m1, m2 = sum(first.info["moves_per_stage"]), sum(second.info["moves_per_stage"])
    figs = _figures(chain)
    assert figs["acceptance"].data["vlines"] == {KEPT: [float(m1), float(m1 + draws + m2)],
                                                 "next round starts": [float(m1 + draws)]}
    tempering = figs["tempering"].data
    assert len(tempering["schedules"]) == 8  # both rounds' runs
    assert tempering["run_groups"] == [0, 1] * 4  # pooled order: run k of every round, in turn
    assert tempering["ess_per_stage"] == [pytest.approx(first.info["ess_per_stage"], abs=1e-4),
                                          pytest.approx(second.info["ess_per_stage"], abs=1e-4)]
    assert "2 rounds of 4 runs" in figs["tempering"].caption


def test_a_discarded_first_round_is_named_in_the_tempering_caption():
    import dataclasses

    chain = _smc(runs=4, particles=8, seed=1)
    assert "discarded" not in _figures(chain)["tempering"].caption
    old = {"target_ess_fraction": 0.5, "ess_per_superchain_min": 1.23, "nested_rhat_max": 3.1,
           "log_evidence_sd": 2.55, "lagging_runs": 5, "classifier_evaluations": 2609152, "seconds": 40.0}
    chain = dataclasses.replace(chain, info={**chain.info, "discarded_rounds": [old]})
    caption = _figures(chain)["tempering"].caption
    for words in ("first round of runs tempering at ESS fraction 0.5 was discarded", "worth 1.2 effective",
                  "log-evidence sd 2.55", "discarded round's 2,609,152"):
        assert words in caption, caption


def test_mh_draws_its_warm_up_where_it_ends():
    chain = run_mh(lambda z: -0.5 * (z**2).sum(-1), torch.zeros(8, 3), MCMCConfig(20),
                   generator=torch.Generator().manual_seed(0), latent_names=NAMES)
    figs = _figures(chain)
    assert chain.num_warmup > 0 and "tempering" not in figs
    assert figs["acceptance"].data["vlines"] == {"end of warm-up": [float(chain.num_warmup)]}
    assert figs["trace"].data["chains"] == list(range(8))


@pytest.fixture(scope="module")
def circle_report(tiny_classifier):
    """A tiny audit of the six-latent circle world, ambiguous target (P(rocket) is its top class)."""
    spec = LevelSetAuditSpec(worlds=("house-rocket-circle",), targets=(TargetSpec("ambiguous", (0.5, 0.5)),),
                             **TINY)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(levelset, "YIELD_PRIOR_DRAWS", 500)
        report = levelset.run(spec, seed=0, classifier=tiny_classifier)
    return {f.name.removeprefix("house_rocket_circle_ambiguous_"): f for f in report.iter_figures()}


def test_circle_world_figures_show_every_latent(circle_report):
    latents = ["w", "h", "t", "r", "cx", "cy"]
    pairs = circle_report["latents"].data
    assert pairs["latent_names"] == latents
    assert sorted({i for pair in pairs["pairs"] for i in pair}) == list(range(6))  # r, cx, cy too
    assert len(pairs["pairs"]) == 15
    for name in ("trace", "rank"):
        assert circle_report[name].data["latent_names"] == latents
        assert np.array(circle_report[name].data["draws"]).shape[-1] == 6


def test_house_rocket_histogram_uses_the_grids_class(circle_report):
    histogram, grid, pairs = circle_report["confidence"], circle_report["samples"], circle_report["latents"]
    assert histogram.data["xlabel"] == "P(house)" == pairs.data["score_label"]
    assert "P(house)" in histogram.title and "P(rocket)" not in histogram.title
    assert histogram.data["target"] == 0.5
    # The prior's histogram counts P(house), the score the latent pairs colour by (not P(rocket)).
    prior_house = np.array(pairs.data["prior_score"])
    counts, _ = np.histogram(prior_house, bins=np.array(histogram.data["bin_edges"]))
    assert np.abs(counts - np.array(histogram.data["counts"]["prior"])).sum() <= 2  # 4-decimal rounding at edges
    counts_rocket, _ = np.histogram(1 - prior_house, bins=np.array(histogram.data["bin_edges"]))
    assert not np.array_equal(counts_rocket, counts)  # the check can tell the two classes apart
    assert "P(house)" in grid.caption  # the grid beside it labels P(house) too
