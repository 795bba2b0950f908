import math

import pytest
import torch

from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.inference import MCMCConfig, run_mh
from ppl_audit.inference.kernels import mh

MEAN = torch.tensor([1.0, -2.0])
SD = torch.tensor([0.5, 3.0])


def gaussian(z):
    return -0.5 * (((z - MEAN) / SD) ** 2).sum(-1)


def test_gaussian_target_mean_and_variance():
    # 2,000 chains started away from the target, 400 steps (200 warm-up).
    start = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1)) * 5
    res = run_mh(gaussian, start, MCMCConfig(400), generator=torch.Generator().manual_seed(0))
    final = res.final_position
    # The 2,000 final states are independent draws: 5 standard errors of the mean.
    se = SD / math.sqrt(2000)
    assert ((final.mean(0) - MEAN).abs() < 5 * se).all()
    # Sample variance of 2,000 normals: relative standard error sqrt(2/1999) ~ 0.032; allow 5 of them.
    assert ((final.var(0) / SD**2 - 1).abs() < 0.16).all()
    assert 0.2 < res.acceptance_rate < 0.45


def test_trace_shapes_and_counts():
    res = run_mh(gaussian, torch.zeros(16, 2), MCMCConfig(30, warmup_fraction=0.5),
                 generator=torch.Generator().manual_seed(0), latent_names=["a", "b"])
    assert res.trace.shape == (16, 15, 2)
    assert res.accepted.shape == (16, 15)
    assert len(res.acceptance_per_step) == 30
    assert res.num_evaluations == 16 * 31
    assert res.to_arviz().posterior["z"].shape == (16, 15, 2)


def test_same_seed_same_chain():
    a = run_mh(gaussian, torch.zeros(8, 2), MCMCConfig(20), generator=torch.Generator().manual_seed(5))
    b = run_mh(gaussian, torch.zeros(8, 2), MCMCConfig(20), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.trace, b.trace)


def test_minus_inf_proposals_are_rejected():
    def half_line(z):
        return torch.where(z[:, 0] > 0, -z[:, 0], torch.full_like(z[:, 0], -math.inf))

    res = run_mh(half_line, torch.ones(200, 1), MCMCConfig(200), generator=torch.Generator().manual_seed(0))
    assert (res.trace > 0).all()


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_plus_inf_log_density_is_an_error(bad):
    with pytest.raises(ModelOutputError, match="NaN|inf"):
        run_mh(lambda z: torch.full((z.shape[0],), bad), torch.zeros(4, 1), MCMCConfig(5))


def test_bad_inputs():
    with pytest.raises(InvalidInputError, match="num_steps"):
        MCMCConfig(0)
    with pytest.raises(InvalidInputError, match="non-finite"):
        mh.init(torch.tensor([[math.nan]]), gaussian)
    with pytest.raises(InvalidInputError, match="at least one chain"):
        mh.init(torch.zeros(0, 2), gaussian)
