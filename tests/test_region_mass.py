"""The confident-region rate estimator against known answers (issue 24, item 3).

The prior is a 2-d standard normal whose "image" shows the latent (``sigmoid(z)`` in the first pixels), and
the classifier reads it back: ``P(b) = sigmoid(s * z1)``. The region ``P(b) >= tau`` is then the half-plane
``z1 >= logit(tau) / s``, of prior mass ``Phi(-logit(tau) / s)``: 0.0108 at ``s = 2`` and ``2.2e-6`` at
``s = 1`` (``tau = 0.99``).
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from ppl_audit.errors import InvalidInputError
from ppl_audit.priors import DecoderPrior, HouseRocketWorld
from ppl_audit.region_mass import margin, sample_confident_region


class ShowLatent(nn.Module):
    """Decodes ``z (N, D)`` to a 28 x 28 image whose first ``D`` pixels are ``sigmoid(z)``."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # a parameter tells DecoderPrior its device

    def forward(self, z):
        x = torch.zeros(z.shape[0], 784, dtype=z.dtype, device=z.device)
        x[:, : z.shape[1]] = torch.sigmoid(z)
        return x


def reading_classifier(scale: float, cap: float = 1.0):
    """``P(b) = cap * sigmoid(scale * z1)``, read back from the image's first pixel."""
    def probs(x):
        p = x.flatten(1)[:, 0].double().clamp(1e-12, 1 - 1e-12)
        b = cap * torch.sigmoid(scale * (p.log() - torch.log1p(-p)))
        return torch.stack([1 - b, b], -1).float()

    return probs


def _truth(scale: float, confidence: float = 0.99) -> float:
    return 0.5 * math.erfc(math.log(confidence / (1 - confidence)) / scale / math.sqrt(2))


PRIOR = DecoderPrior(ShowLatent(), 2)


@pytest.mark.parametrize("scale", [2.0, 1.0])
def test_the_rate_matches_the_exact_prior_mass(scale):
    region = sample_confident_region(PRIOR, reading_classifier(scale), 1, class_names=["a", "b"], seed=0)
    truth = _truth(scale)
    assert region.estimable and region.checks["passed"]
    # The standard error is the spread of 8 independent runs' estimates: 3 of them is a 99.7% band. The
    # adaptive schedule adds a small downward bias: over seeds 0-11 the mean rate was 0.98x the truth at
    # 1e-2 and 0.96x at 2e-6 (13 nats of tempering; benchmarks/region_mass_bias.py), hence the 10% allowance.
    assert abs(region.rate - truth) < 3 * region.rate_se + 0.1 * truth, (region.rate, region.rate_se, truth)
    assert region.rate_se < 0.2 * truth  # precise enough to mean something
    low, high = region.interval
    assert low < region.rate < high <= region.upper_bound and truth <= region.upper_bound
    # the finds lie in the region, most confident first, as latents of the prior
    assert len(region.latents) > 100 and (region.latents[:, 0] >= math.log(99) / scale - 1e-4).all()
    assert (region.probs[:-1, 1] >= region.probs[1:, 1]).all()
    assert region.true_classes is None  # an unlabelled prior labels nothing


def test_an_unreachable_region_gives_a_bound_not_a_rate():
    region = sample_confident_region(PRIOR, reading_classifier(2.0, cap=0.9), 1, class_names=["a", "b"],
                                     num_particles=512, seed=1)
    assert not region.estimable and math.isnan(region.rate)
    assert len(region.latents) == 0
    assert 0 < region.upper_bound < 1e-20  # the soft indicator's evidence: the region is (at most) that rare
    assert region.interval == (0.0, region.upper_bound)


def saturated_classifier(edge: float):
    """``P(b) = 1`` where ``z1 >= edge``, else exactly 0: the float32 floor an overconfident network hits."""
    def probs(x):
        b = (x.flatten(1)[:, 0].double() >= torch.sigmoid(torch.tensor(edge, dtype=torch.float64))).double()
        return torch.stack([1 - b, b], -1).float()

    return probs


@pytest.mark.parametrize("seed", [0, 1])
def test_runs_that_start_on_a_saturated_plateau_still_find_the_region(seed):
    # Region z1 >= 3.09, prior mass 1.0e-3: about 3 in 4 runs of 256 draw nothing inside it, and every
    # draw outside has the same likelihood. Without the soft indicator's maximum as tempering's guard,
    # such a run leaps to beta = 1 and reports 0: at seed 0 four runs of 8 did, and at seed 1 the
    # "upper bound" (3.7e-4) fell below the truth. With it, over seeds 0-15 every run found the region
    # and the rate was 0.67-1.01x the truth (mean 0.85x: a step likelihood is adaptive tempering's worst
    # case for bias; benchmarks/region_mass_bias.py), hence the band.
    truth = 0.5 * math.erfc(3.09 / math.sqrt(2))
    region = sample_confident_region(PRIOR, saturated_classifier(3.09), 1, class_names=["a", "b"], seed=seed)
    assert region.estimable and min(region.run_rates) > 0, region.run_rates
    assert 0.6 * truth < region.rate < 1.2 * truth, (region.rate, truth)
    assert region.upper_bound > 0.6 * truth


def test_the_bound_is_the_estimators_own():
    with pytest.raises(InvalidInputError, match="log_likelihood_bound is set by the estimator"):
        sample_confident_region(PRIOR, reading_classifier(2.0), 1, class_names=["a", "b"], num_particles=256,
                                log_likelihood_bound=-1.0)


def test_the_same_seed_gives_the_same_rate():
    a, b = (sample_confident_region(PRIOR, reading_classifier(2.0), 1, class_names=["a", "b"], num_particles=256,
                                    seed=3) for _ in range(2))
    assert a.run_rates == b.run_rates and torch.equal(a.latents, b.latents)


def test_margin_is_the_logit_and_finite_at_the_edges():
    m = margin(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]), 1)
    assert m[0] == math.inf and torch.isfinite(m[1]) and m[1] < -600 and m[2] == 0


@pytest.mark.parametrize("bad, message", [
    (dict(class_index=2), "class_index must be an integer in [0, 2)"),
    (dict(confidence=1.0), "confidence must be a probability strictly between 0 and 1"),
    (dict(sharpness=float("inf")), "sharpness must be a finite number > 0"),
    (dict(num_particles=100, num_runs=3), "num_runs must be at least 2 and divide num_particles (100)"),
    (dict(num_particles=64, num_runs=16), "num_runs must be an integer in"),
])
def test_bad_arguments_are_named(bad, message):
    args = {**dict(class_index=1, class_names=["a", "b"], num_particles=256), **bad}
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        sample_confident_region(PRIOR, reading_classifier(2.0), **args)


def test_a_prior_without_a_normal_transform_is_refused():
    class NoTransform(HouseRocketWorld):
        normal_dim = 0

    with pytest.raises(InvalidInputError, match="needs a Prior with a standard-normal transform"):
        sample_confident_region(NoTransform(), lambda x: torch.full((len(x), 2), 0.5), 1)
