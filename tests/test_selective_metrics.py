"""Risk-coverage curves and AURC on hand-built cases."""

from __future__ import annotations

import math

import pytest
import torch

from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.metrics import risk_coverage


def test_a_perfect_ranking_has_zero_risk_until_the_errors():
    # two right answers ranked above two wrong ones: risk 0, 0, 1/3, 1/2
    rc = risk_coverage([0.9, 0.8, 0.2, 0.1], [True, True, False, False])
    assert rc["risk"] == pytest.approx([0.0, 0.0, 1 / 3, 0.5])
    assert rc["aurc"] == pytest.approx((0 + 0 + 1 / 3 + 0.5) / 4)
    assert rc["min_risk"] == 0.0 and rc["coverage_at_min_risk"] == 0.5
    assert rc["risk_at_full_coverage"] == 0.5


def test_ties_are_never_split():
    # Three inputs at confidence 1.0, one of them wrong: no threshold accepts only the two right ones.
    rc = risk_coverage([1.0, 1.0, 1.0, 0.5], [False, True, True, True])
    assert rc["coverage"] == [0.75, 1.0]
    assert rc["risk"] == pytest.approx([1 / 3, 0.25])
    assert rc["aurc"] == pytest.approx((3 * (1 / 3) + 0.25) / 4)
    assert rc["min_risk"] == pytest.approx(0.25) and rc["coverage_at_min_risk"] == 1.0
    # the same answers in another order among the ties give the same curve
    assert risk_coverage([1.0, 1.0, 1.0, 0.5], [True, True, False, True]) == rc


def test_all_right_or_all_wrong():
    assert risk_coverage(torch.rand(5), torch.ones(5, dtype=torch.bool))["aurc"] == 0.0
    assert risk_coverage(torch.rand(5), torch.zeros(5, dtype=torch.bool))["aurc"] == 1.0


def test_a_worse_ranking_has_a_larger_aurc():
    correct = [True, True, False, False]
    good = risk_coverage([0.9, 0.8, 0.2, 0.1], correct)["aurc"]
    bad = risk_coverage([0.1, 0.2, 0.8, 0.9], correct)["aurc"]
    assert bad > good and math.isclose(bad, (1 + 1 + 2 / 3 + 0.5) / 4)


@pytest.mark.parametrize("confidence, correct, error, message", [
    ([], [], InvalidInputError, "at least one input"),
    ([0.1, 0.2], [True], InvalidInputError, "2 entries but correct has 1"),
    ([0.1, float("nan")], [True, False], ModelOutputError, "1 of 2 confidences are NaN"),
])
def test_bad_inputs_are_refused(confidence, correct, error, message):
    with pytest.raises(error, match=message):
        risk_coverage(confidence, correct)


def test_selective_risk_at_a_threshold_and_its_range_errors():
    from ppl_audit.metrics import selective_risk

    out = selective_risk(torch.tensor([3.0, 2.0, 2.0, 1.0]), torch.tensor([True, False, True, False]), 2.0)
    assert out == {"threshold": 2.0, "coverage": 0.75, "risk": 1 / 3, "kept": 3}  # ties at 2.0 are all kept
    with pytest.raises(InvalidInputError, match="would reject nothing"):
        selective_risk([3.0, 2.0], [True, True], 0.5)
    with pytest.raises(InvalidInputError, match="threshold must be a number"):
        selective_risk([3.0, 2.0], [True, True], float("nan"))
