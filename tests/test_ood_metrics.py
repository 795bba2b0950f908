import numpy as np
import pytest
import torch

from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.metrics import ood_metrics, reference_percentiles, roc_points


def test_perfect_separation():
    m = ood_metrics(torch.tensor([0.0, 0.1, 0.2]), torch.tensor([1.0, 2.0]))
    assert (m["auroc"], m["average_precision"], m["fpr_at_95_tpr"]) == (1.0, 1.0, 0.0)
    assert m["positive_class"] == "out-of-distribution"
    assert m["score_sign"] == "higher = more out-of-distribution"
    assert (m["num_in"], m["num_out"]) == (3, 2)


def test_reversed_sign_is_not_flipped():
    m = ood_metrics(np.array([1.0, 2.0]), np.array([0.0, 0.1, 0.2]))
    assert m["auroc"] == 0.0
    assert m["fpr_at_95_tpr"] == 1.0


def test_identical_scores_are_chance():
    m = ood_metrics(np.full(4, 0.3), np.full(6, 0.3))
    assert m["auroc"] == 0.5
    assert m["average_precision"] == pytest.approx(0.6)  # the share of positives
    assert m["fpr_at_95_tpr"] == 1.0


def test_hand_built_fpr_and_average_precision():
    # 20 OoD scores 1..20 and 4 in-distribution scores 0, 0, 10.5, 19.5.
    # Threshold 2 flags 19/20 OoD (TPR 0.95) and the in-distribution 10.5 and 19.5: FPR 2/4.
    s_out = np.arange(1, 21, dtype=float)
    s_in = np.array([0.0, 0.0, 10.5, 19.5])
    m = ood_metrics(s_in, s_out)
    assert m["fpr_at_95_tpr"] == 0.5
    # AP = sum over positives (descending) of precision at their rank / 20:
    # 20 -> 1/1; 19.5 is a negative; 19..11 -> k/(k+1) for k = 2..10; 10.5 negative; 10..1 -> k/(k+2), k = 11..20.
    precisions = [1.0] + [k / (k + 1) for k in range(2, 11)] + [k / (k + 2) for k in range(11, 21)]
    assert m["average_precision"] == pytest.approx(sum(precisions) / 20)
    # AUROC: pairs (in, out) with out > in: 20 + 20 + 10 + 1 = 51 of 80.
    assert m["auroc"] == pytest.approx(51 / 80)


def test_fpr_at_95_is_read_at_the_first_point_reaching_the_level():
    # Small set: TPR steps by 1/2, so the first ROC point with TPR >= 0.95 is TPR = 1.
    m = ood_metrics(np.array([0.0, 5.0]), np.array([4.0, 6.0]))
    assert m["fpr_at_95_tpr"] == 0.5


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_raises_with_count_and_set(bad):
    with pytest.raises(ModelOutputError, match="1 of 3 out-of-distribution"):
        ood_metrics(np.zeros(2), np.array([1.0, bad, 2.0]))
    with pytest.raises(ModelOutputError, match="2 of 2 in-distribution"):
        ood_metrics(torch.tensor([bad, bad]), torch.ones(2))


def test_empty_or_wrong_shape_raises():
    with pytest.raises(InvalidInputError, match="in-distribution scores are empty"):
        ood_metrics(np.array([]), np.ones(2))
    with pytest.raises(InvalidInputError, match="out-of-distribution scores are empty"):
        ood_metrics(np.ones(2), torch.tensor([]))
    with pytest.raises(InvalidInputError, match="shape"):
        ood_metrics(np.ones((2, 2)), np.ones(2))


def test_roc_points_end_to_end():
    pts = roc_points(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0]))
    assert pts["fpr"][0] == 0.0 and pts["tpr"][-1] == 1.0 and pts["fpr"][-1] == 1.0
    assert len(pts["fpr"]) == len(pts["tpr"])
    assert all(isinstance(v, float) for v in pts["fpr"] + pts["tpr"])


def test_reference_percentiles_by_hand_with_ties():
    # reference 0, 1, 1, 3: 1 has one below and two tied (1 + 2/2 of 4); 3 has three below, one tied.
    got = reference_percentiles(np.array([3.0, 1.0, 0.0, 1.0]), np.array([1.0, 3.0, 5.0, -2.0]))
    assert got.tolist() == [0.5, 0.875, 1.0, 0.0]


def test_mean_reference_percentile_is_the_auroc():
    # Ties counted half make the mean percentile of the OoD set the Mann-Whitney AUROC, ties included:
    # rounded scores force many ties across the two sets.
    rng = np.random.default_rng(0)
    s_in, s_out = rng.normal(size=300).round(1), (rng.normal(size=200) + 0.7).round(1)
    assert reference_percentiles(s_in, s_out).mean() == pytest.approx(ood_metrics(s_in, s_out)["auroc"], abs=1e-12)


def test_reference_percentiles_refuse_non_finite_scores():
    with pytest.raises(ModelOutputError, match="1 of 2 input scores are NaN or inf"):
        reference_percentiles(np.zeros(3), np.array([0.0, float("nan")]))
    with pytest.raises(InvalidInputError, match="reference scores are empty"):
        reference_percentiles(np.array([]), np.zeros(2))
