"""The graded sweep (issue 24, item 5): a path of level sets between two classes, at tiny size.

On the labelled house/rocket world with the Bayes classifier of ``test_calibration_audit.py`` the answer is
known: each step's samples are predicted near its target, and their true share of houses equals it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ppl_audit.audits import load_audit_file, sweep
from ppl_audit.audits.sweep import SweepAuditSpec
from ppl_audit.errors import InvalidInputError
from ppl_audit.report import write_report

from tests.labelled_world import LatentImageWorld, bayes_classifier

SMALL = dict(world="house-rocket", classifier="bayes", pair=("rocket", "house"), path=(0.2, 0.5, 0.8),
             concentration=300.0, num_particles=512, images_per_step=4, device="cpu")


def test_the_sweep_follows_its_path_and_draws_it(tmp_path):
    world = LatentImageWorld()
    results = sweep.evaluate(SweepAuditSpec(**SMALL), seed=0, world=world, classifier=bayes_classifier(world))
    for step in results.steps:
        # concentration 300 keeps predictions within ~0.05 of the target; the Bayes classifier is calibrated,
        # so the true share of houses matches to the runs' precision (~0.03 at 512 particles)
        assert abs(step.mean_probs[1] - step.p) < 0.05 and abs(step.true_share_b - step.p) < 0.06, step
        assert len(step.images) == 4 and all(abs(v - step.p) < 0.1 for v in step.image_probs_b)
    report = sweep.present(results)
    doc = json.loads((write_report(report, tmp_path / "r") / "report.json").read_text())
    assert doc["kind"] == "sweep" and [s["p"] for s in doc["metrics"]["steps"]] == [0.2, 0.5, 0.8]
    assert {"steps.png", "profile.png"} <= {p.name for p in (tmp_path / "r" / "figures").iterdir()}


@pytest.mark.parametrize("fields, message", [
    (dict(path=(0.5,)), "path must list 2 to"),
    (dict(path=(0.5, 1.2)), r"path leaves the simplex at \[1.2\]"),
    (dict(path=(0.0, 0.5)), "leaves the simplex"),
    (dict(pair=("1", "1")), "two different classes"),
    (dict(images_per_step=0), "images_per_step"),
])
def test_bad_paths_are_named(fields, message):
    with pytest.raises(InvalidInputError, match=message):
        SweepAuditSpec(**fields)


def test_the_analyses_file_smoke_runs(tiny_classifier):
    path = Path(__file__).resolve().parents[2] / "analyses" / "mnist-sweep.toml"
    module, spec, seed = load_audit_file(path)
    assert module is sweep and spec.pair == ("1", "7") and len(spec.path) == 10
    small = dataclasses.replace(spec, world="house-rocket", classifier="tiny", pair=("rocket", "house"),
                                path=(0.3, 0.7), num_particles=256, device="cpu")
    report = module.run(small, seed=seed, classifier=tiny_classifier)
    assert report.kind == "sweep" and len(report.metrics["steps"]) == 2
