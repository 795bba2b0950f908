import math

import pytest
import torch
from scipy import stats

from ppl_audit.priors import LowerTruncatedNormal


@pytest.mark.parametrize("loc,scale", [(10.0, 5.0), (8.0, 2.0), (-1.0, 2.0)])
def test_log_prob_matches_scipy(loc, scale):
    x = torch.linspace(0.01, 30.0, 50, dtype=torch.float64)
    d = LowerTruncatedNormal(torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
    ref = stats.truncnorm.logpdf(x.numpy(), (0 - loc) / scale, math.inf, loc=loc, scale=scale)
    assert torch.allclose(d.log_prob(x), torch.from_numpy(ref), atol=1e-10)


def test_log_prob_is_minus_inf_below_zero():
    d = LowerTruncatedNormal(torch.tensor(10.0), torch.tensor(5.0))
    assert d.log_prob(torch.tensor([-1.0, 0.0])).tolist() == [-math.inf, -math.inf]


def test_samples_match_analytic_mean_and_stay_positive():
    # loc 1, scale 2: a heavy truncation where the mean shifts far from loc.
    d = LowerTruncatedNormal(torch.tensor(1.0), torch.tensor(2.0))
    x = d.sample((200_000,), generator=torch.Generator().manual_seed(0))
    ref_mean, ref_var = stats.truncnorm.stats(-0.5, math.inf, loc=1.0, scale=2.0, moments="mv")
    assert (x > 0).all()
    # 5 standard errors of the mean of 200,000 draws
    assert abs(float(x.mean()) - ref_mean) < 5 * math.sqrt(ref_var / 200_000)
    assert abs(float(d.mean) - ref_mean) < 1e-5


def test_sampling_is_seeded():
    d = LowerTruncatedNormal(torch.tensor(10.0), torch.tensor(5.0))
    a = d.sample((5,), generator=torch.Generator().manual_seed(3))
    b = d.sample((5,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
