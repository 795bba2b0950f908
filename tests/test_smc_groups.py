"""SMC run groups (smc option ``run_groups``): a round's runs split into groups on streams of their own,
which an executor may run anywhere, in any order, with the same samples."""

from __future__ import annotations

import pytest
import torch

from ppl_audit.errors import InvalidInputError
from ppl_audit.priors import HouseRocketWorld
from ppl_audit.sampling import sample_level_set, sample_smc_group, smc_groups

WORLD = HouseRocketWorld()
TARGET = [0.3, 0.7]
RUN = dict(num_particles=256, seed=4, device="cpu")  # 16 runs of 16 particles, random-walk moves


def classifier(x):
    """A smooth, cheap stand-in: P(rocket) grows with the image's mean brightness."""
    p = torch.sigmoid(40 * (x.mean((1, 2, 3)) - 0.12))
    return torch.stack([1 - p, p], -1)


@pytest.fixture(scope="module")
def grouped():
    return sample_level_set(WORLD, classifier, TARGET, options={"run_groups": 3, "max_rounds": 1}, **RUN)


def test_groups_split_the_runs_evenly_with_a_stream_each():
    groups = smc_groups(7, 0, 16, 16, 3)
    assert [g.runs for g in groups] == [6, 5, 5] and {g.particles_per_run for g in groups} == {16}
    assert len({g.seed for g in groups}) == 3
    assert groups[1].seed == smc_groups(7, 0, 16, 16, 5)[1].seed  # a group's seed: its level set's seed and place
    assert groups[1].seed != smc_groups(7, 1, 16, 16, 3)[1].seed != smc_groups(8, 0, 16, 16, 3)[1].seed


def test_grouped_runs_are_every_group_run_alone_in_order(grouped):
    groups = smc_groups(RUN["seed"], 0, 16, 16, 3)
    alone = [sample_smc_group(WORLD, classifier, TARGET, g, num_particles=256, device="cpu",
                              options={"run_groups": 3, "max_rounds": 1}) for g in groups]
    chain = grouped.chain
    assert chain.superchains == 16 and chain.num_chains == 256
    assert torch.equal(chain.trace, torch.cat([a.trace for a in alone]))
    assert chain.info["log_evidence"] == [v for a in alone for v in a.info["log_evidence"]]
    assert chain.num_evaluations == sum(a.num_evaluations for a in alone)


def test_where_and_in_which_order_groups_run_does_not_change_the_samples(grouped):
    seen = []

    def backwards(groups):  # an executor that finishes the last group first
        seen.extend(g.name for g in groups)
        done = {g.index: sample_smc_group(WORLD, classifier, TARGET, g, num_particles=256, device="cpu",
                                          options={"run_groups": 3, "max_rounds": 1}) for g in reversed(groups)}
        return [done[g.index] for g in groups]

    again = sample_level_set(WORLD, classifier, TARGET, options={"run_groups": 3, "max_rounds": 1},
                             map_groups=backwards, **RUN)
    assert seen == ["round 1 group 1", "round 1 group 2", "round 1 group 3"]
    assert torch.equal(again.latents, grouped.latents) and torch.equal(again.probs, grouped.probs)
    assert again.metrics == grouped.metrics


def test_one_group_is_the_ungrouped_run_byte_for_byte():
    plain = sample_level_set(WORLD, classifier, TARGET, options={"max_rounds": 1}, **RUN)
    one = sample_level_set(WORLD, classifier, TARGET, options={"max_rounds": 1, "run_groups": 1}, **RUN)
    assert torch.equal(plain.latents, one.latents) and plain.metrics == one.metrics


def test_grouped_runs_sample_the_same_level_set(grouped):
    plain = sample_level_set(WORLD, classifier, TARGET, options={"max_rounds": 1}, **RUN)
    # Other streams, same posterior: the mean P(rocket) of two samples of this level set (posterior sd of P
    # 0.14, ESS over 130 per sample, so a standard error under 0.012 each) agree within 0.05 (3 standard
    # errors of their difference).
    assert abs(float(grouped.probs[:, 1].mean()) - float(plain.probs[:, 1].mean())) < 0.05


@pytest.mark.parametrize("value", [0, 17, True, 1.5, "2"])
def test_a_bad_run_groups_is_a_one_line_error(value):
    with pytest.raises(InvalidInputError, match="run_groups") as caught:
        sample_level_set(WORLD, classifier, TARGET, options={"run_groups": value}, **RUN)
    assert "\n" not in str(caught.value)


def test_a_map_groups_that_loses_a_group_is_an_error():
    with pytest.raises(InvalidInputError, match="2 results for 3 SMC groups"):
        sample_level_set(WORLD, classifier, TARGET, options={"run_groups": 3}, map_groups=lambda gs: [None, None],
                         **RUN)


def test_groups_are_runs_of_smc_only():
    with pytest.raises(InvalidInputError, match="not 'mh'"):
        sample_smc_group(WORLD, classifier, TARGET, smc_groups(0, 0, 2, 8, 1)[0], method="mh")


def test_a_replacement_rounds_groups_temper_as_gently_as_the_round(monkeypatch):
    import ppl_audit.sampling as sampling

    real, calls = sampling._smc_summary, []

    def first_round_disagrees(chain):
        calls.append(chain.num_chains)
        return {**real(chain), "converged": False, "ess_per_superchain_min": 1.0} if len(calls) == 1 else real(chain)

    fractions, run_once = [], sampling._run_smc_once

    def recording_run_once(*args):
        fractions.append(args[-2].get("target_ess_fraction", 0.5))
        return run_once(*args)

    seen = []

    def in_process(groups):
        seen.extend((g.name, g.particles_per_run, g.target_ess_fraction) for g in groups)
        return [sample_smc_group(WORLD, classifier, TARGET, g, num_particles=256, device="cpu",
                                 options={"run_groups": 2}) for g in groups]

    monkeypatch.setattr(sampling, "_smc_summary", first_round_disagrees)
    monkeypatch.setattr(sampling, "_run_smc_once", recording_run_once)
    res = sample_level_set(WORLD, classifier, TARGET, options={"run_groups": 2}, map_groups=in_process, **RUN)
    assert seen == [("round 1 group 1", 16, None), ("round 1 group 2", 16, None),
                    ("round 2 group 1", 32, 0.8), ("round 2 group 2", 32, 0.8)]
    assert fractions == [0.5, 0.5, 0.8, 0.8]  # each group ran as its round asked, wherever it ran
    assert res.metrics["smc_discarded_rounds"] == 1 and res.chain.num_chains == 512


def test_grouped_and_ungrouped_runs_refuse_the_same_tempering_options():
    # Groups carry their round's ESS fractions as the round holds them, so a setting an ungrouped run
    # refuses (a target above the slow stages' fraction) is refused in groups too, not quietly mended.
    options = {"target_ess_fraction": 0.9, "max_rounds": 1}
    for groups in (1, 2):
        with pytest.raises(InvalidInputError, match=r"slow_ess_fraction must be in \[target_ess_fraction, 1\)"):
            sample_level_set(WORLD, classifier, TARGET, options={**options, "run_groups": groups}, **RUN)
