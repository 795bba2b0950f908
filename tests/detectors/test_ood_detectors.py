import numpy as np
import pytest
import torch

from ppl_audit.detectors import (
    CriticDetector,
    CriticVarianceDetector,
    Detector,
    LogLikelihoodDetector,
    RateDetector,
    WAICDetector,
    score_all,
    waic_per_input,
)
from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.metrics import ood_metrics

CENTRES = (0.45, 0.5, 0.55)


def gaussian_ensemble(x):
    """Toy ensemble: member k's log density is -||x - c_k||^2, shape (K, N)."""
    return torch.stack([-(x - c).pow(2).flatten(1).sum(1) for c in CENTRES])


def images(n, value, seed=0):
    noise = 0.02 * torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    return (value + noise).clamp(0, 1)


def test_waic_per_input_hand_computed_3x2():
    log_lik = torch.tensor([[-1.0, -4.0], [-2.0, -6.0], [-3.0, -8.0]], dtype=torch.float64)
    # column 0: mean -2, unbiased var ((1 + 0 + 1) / 2) = 1 -> -3
    # column 1: mean -6, unbiased var ((4 + 0 + 4) / 2) = 4 -> -10
    assert waic_per_input(log_lik).tolist() == [-3.0, -10.0]
    # population variance (ArviZ's p_waic convention): 2/3 and 8/3
    assert waic_per_input(log_lik, ddof=0).tolist() == pytest.approx([-2 - 2 / 3, -6 - 8 / 3])
    assert waic_per_input(np.array([[1, 2], [3, 4]])).dtype == torch.float64


def test_waic_per_input_needs_two_members_and_a_matrix():
    with pytest.raises(InvalidInputError, match="at least 2 members"):
        waic_per_input(torch.zeros(1, 3))
    with pytest.raises(InvalidInputError, match=r"\(K, N\)"):
        waic_per_input(torch.zeros(3))


def test_detector_sign_conventions():
    x = torch.zeros(2, 1, 28, 28)
    values = torch.tensor([[1.0, -2.0], [3.0, 0.0]])
    fn = lambda _: values  # noqa: E731
    assert LogLikelihoodDetector(fn).score(x).tolist() == [-1.0, 2.0]
    assert LogLikelihoodDetector(fn, member=1).score(x).tolist() == [-3.0, 0.0]
    assert RateDetector(fn).score(x).tolist() == [1.0, -2.0]
    assert CriticDetector(fn, member=1).score(x).tolist() == [-3.0, 0.0]
    assert CriticVarianceDetector(fn).score(x).tolist() == [2.0, 2.0]  # ddof=1: (d^2 / 2)
    assert WAICDetector(fn).score(x).tolist() == [-2.0 + 2.0, 1.0 + 2.0]
    for det in (WAICDetector(fn), LogLikelihoodDetector(fn), RateDetector(fn), CriticDetector(fn),
                CriticVarianceDetector(fn)):
        assert isinstance(det, Detector) and det.name and "higher" in det.score_meaning
        assert det.fit() is det


def test_in_distribution_scores_lower_than_noise():
    x_in, x_out = images(16, 0.5), torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    for det in (WAICDetector(gaussian_ensemble), LogLikelihoodDetector(gaussian_ensemble)):
        assert ood_metrics(det(x_in), det(x_out))["auroc"] == 1.0


def test_non_finite_output_raises_with_counts():
    values = torch.tensor([[0.0, float("nan"), 1.0], [0.0, float("inf"), float("nan")]])
    det = WAICDetector(lambda _: values)
    with pytest.raises(ModelOutputError, match=r"3 NaN or inf value\(s\) of 6 .*2 input\(s\) affected"):
        det.score(torch.zeros(3, 1, 28, 28))


@pytest.mark.parametrize("output", [torch.zeros(4), torch.zeros(2, 3), torch.zeros(2, 4, 1)])
def test_wrong_output_shape_raises(output):
    with pytest.raises(ModelOutputError, match="rate_fn returned shape"):
        RateDetector(lambda _: output).score(torch.zeros(4, 1, 28, 28))


def test_variance_detectors_need_two_members_and_member_must_exist():
    one = lambda x: torch.zeros(1, x.shape[0])  # noqa: E731
    with pytest.raises(ModelOutputError, match="K >= 2"):
        WAICDetector(one).score(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ModelOutputError, match="K >= 2"):
        CriticVarianceDetector(one).score(torch.zeros(2, 1, 28, 28))
    with pytest.raises(InvalidInputError, match="member=1"):
        CriticDetector(one, member=1).score(torch.zeros(2, 1, 28, 28))
    with pytest.raises(InvalidInputError, match="member"):
        LogLikelihoodDetector(one, member=-1)
    with pytest.raises(InvalidInputError, match="callable"):
        RateDetector(None)


def test_images_are_checked():
    det = LogLikelihoodDetector(gaussian_ensemble)
    with pytest.raises(InvalidInputError):
        det.score(torch.zeros(2, 1, 32, 32))
    with pytest.raises(InvalidInputError):
        det.score(torch.full((2, 1, 28, 28), 2.0))
    assert LogLikelihoodDetector(gaussian_ensemble, image_shape=(1, 8, 8)).score(torch.zeros(3, 1, 8, 8)).shape == (3,)


def test_scores_carry_no_graph():
    weight = torch.ones((), requires_grad=True)
    det = LogLikelihoodDetector(lambda x: weight * gaussian_ensemble(x))
    assert not det.score(images(2, 0.5)).requires_grad


class Ensemble:
    def __init__(self):
        self.calls = 0

    def log_likelihood(self, x):
        self.calls += 1
        return gaussian_ensemble(x)


def test_score_all_calls_a_shared_callable_once_and_matches_score():
    ens = Ensemble()
    critic = lambda x: gaussian_ensemble(x) / 10  # noqa: E731
    detectors = {
        "waic": WAICDetector(ens.log_likelihood),  # two bound methods of one object: one call
        "nll": LogLikelihoodDetector(ens.log_likelihood, member=2),
        "var_d": CriticVarianceDetector(critic),
        "d": CriticDetector(critic),
    }
    x = images(5, 0.4)
    out = score_all(x, detectors)
    assert ens.calls == 1
    assert list(out) == list(detectors)
    for key, det in detectors.items():
        assert torch.equal(out[key], det.score(x))
    ens.calls = 0
    score_all(images(5, 0.6), detectors)
    assert ens.calls == 1  # a new batch is never served from a previous call


def test_score_all_uses_plain_detectors_as_they_are():
    class Constant(Detector):
        name = "constant"

        def score(self, x):
            return torch.zeros(x.shape[0])

    out = score_all(torch.zeros(2, 1, 28, 28), {"c": Constant(), "rate": RateDetector(gaussian_ensemble)})
    assert out["c"].tolist() == [0.0, 0.0] and out["rate"].shape == (2,)
