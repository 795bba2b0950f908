"""The level-set calibration audit against known answers (issue 24, item 2).

The world is the house/rocket prior with each latent shown as its own "image" (``z / (1 + z)``, so the
classifier can read ``z`` back), and the classifiers compute the world's Bayes posterior from it: one
exactly, so that its true-class frequency on every level set is its prediction (``q = p``); one with its
logit divided by a temperature ``T``, so that where it says ``p`` the truth is ``sigmoid(T logit p)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from ppl_audit.audits import calibration, load_audit_file
from tests.labelled_world import LatentImageWorld, bayes_classifier
from ppl_audit.audits.calibration import CalibrationAuditSpec
from ppl_audit.errors import InvalidInputError
from ppl_audit.priors import make_world
from ppl_audit.report import write_report

GRID = (0.3, 0.7)
SETTINGS = dict(grid=GRID, concentration=1000.0, num_particles=1024, device="cpu")


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_the_audit_recovers_a_known_calibration(temperature):
    world = LatentImageWorld()
    results = calibration.evaluate(CalibrationAuditSpec(**SETTINGS), seed=0, world=world,
                                   classifier=bayes_classifier(world, temperature))
    for point in results.points:
        expected = 1 / (1 + math.exp(-temperature * _logit(point.p)))
        # The interval is 1.96 standard errors over the runs; the level set's own width (predictions within
        # ~0.02 of p at concentration 1,000) smooths q by less than 0.02.
        tolerance = max(1.5 * (point.q_high - point.q_low), 0.02)
        assert abs(point.q - expected) < tolerance, (temperature, point)
    if temperature == 1.0:
        assert all(pt.q_low - 0.02 <= pt.p <= pt.q_high + 0.02 for pt in results.points)
    else:  # an under-confident classifier: the truth is more extreme than what it says
        low, high = results.points
        assert low.q < low.p and high.q > high.p


def test_the_report_draws_the_reliability_diagram(tmp_path):
    world = LatentImageWorld()
    report = calibration.run(CalibrationAuditSpec(**{**SETTINGS, "grid": (0.5,), "num_particles": 256}), seed=1,
                             world=world, classifier=bayes_classifier(world, 2.0))
    doc = json.loads((write_report(report, tmp_path / "r") / "report.json").read_text())
    assert doc["kind"] == "calibration" and len(doc["metrics"]["points"]) == 1
    assert (tmp_path / "r" / "figures" / "reliability.png").exists()


def test_an_unlabelled_prior_is_refused():
    from ppl_audit.priors import DecoderPrior

    prior = DecoderPrior(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid(),
                                             torch.nn.Unflatten(1, (1, 1, 3))), 2)
    with pytest.raises(InvalidInputError, match="needs a labelled prior"):
        calibration.evaluate(CalibrationAuditSpec(**SETTINGS), world=prior,
                             classifier=bayes_classifier(make_world("house-rocket")))


@pytest.mark.parametrize("fields,message", [
    (dict(grid=()), "grid must list 1 to"), (dict(grid=(0.0, 0.5)), "strictly between 0 and 1"),
    (dict(concentration=-1.0), "concentration must be a number > 0"), (dict(pair=("house", "house")), "two different"),
    (dict(num_particles=0), "num_particles"),
])
def test_bad_settings_are_named(fields, message):
    with pytest.raises(InvalidInputError, match=message):
        CalibrationAuditSpec(**fields)


def test_a_pair_the_classifier_lacks_is_named():
    world = LatentImageWorld()
    with pytest.raises(InvalidInputError, match=r"pair \['rocket', 'ship'\] names classes \['ship'\]"):
        calibration.evaluate(CalibrationAuditSpec(**{**SETTINGS, "pair": ("rocket", "ship")}), world=world,
                             classifier=bayes_classifier(world))


def test_the_audit_file_is_read(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[audit]\nkind = "calibration"\ngrid = [0.25, 0.75]\npair = ["rocket", "house"]\n')
    module, spec, seed = load_audit_file(path)
    assert module is calibration and spec.grid == (0.25, 0.75) and spec.pair == ("rocket", "house")


def test_the_analyses_file_smoke_runs(tiny_classifier):
    path = Path(__file__).resolve().parents[2] / "analyses" / "house-rocket-calibration.toml"
    module, spec, seed = load_audit_file(path)
    assert module is calibration and spec.grid == tuple(round(0.1 * k, 1) for k in range(1, 10))
    report = module.run(dataclasses.replace(spec, grid=(0.5,), num_particles=256, device="cpu"), seed=seed,
                        classifier=tiny_classifier)
    assert report.kind == "calibration" and [pt["p"] for pt in report.metrics["points"]] == [0.5]
