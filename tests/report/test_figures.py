"""Figure helpers: PCA on known answers, the latent embedding and the class profile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppl_audit.report import figures


def test_principal_components_match_the_covariance_eigenvectors():
    gen = torch.Generator().manual_seed(0)
    # Variance 9, 4, 1, 0.25 along a random rotation of the axes.
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=torch.float64))
    x = (torch.randn(20_000, 4, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0, 0.5])) @ q.T
    x = x + torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    mean, comps, explained = figures.principal_components(x, 2)
    evals, evecs = np.linalg.eigh(np.cov(x.numpy(), rowvar=False))
    order = np.argsort(evals)[::-1]
    for i in range(2):
        assert abs(float(comps[i] @ torch.from_numpy(evecs[:, order[i]]))) == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(comps @ comps.T, torch.eye(2, dtype=torch.float64), atol=1e-10)
    assert explained.tolist() == pytest.approx((evals[order[:2]] / evals.sum()).tolist(), rel=1e-6)
    assert explained.tolist() == pytest.approx([9 / 14.25, 4 / 14.25], abs=0.01)
    assert mean.tolist() == pytest.approx([1.0, -2.0, 0.5, 3.0], abs=0.1)


def test_principal_components_signs_are_deterministic():
    x = torch.tensor([[-2.0, 0.1], [2.0, -0.1], [0.0, 1.0], [0.0, -1.0]])
    _, a, _ = figures.principal_components(x, 2)
    _, b, _ = figures.principal_components(-x, 2)  # the same directions: same signs
    assert torch.equal(a, b)
    assert all(float(row[row.abs().argmax()]) > 0 for row in a)


@pytest.mark.parametrize("k, shape", [(0, (5, 2)), (3, (5, 2)), (1, (5,))])
def test_principal_components_reject_bad_shapes(k, shape):
    with pytest.raises(ValueError, match="1 <= k <= D"):
        figures.principal_components(torch.zeros(shape), k)


def test_latent_embedding_projects_both_sets():
    gen = torch.Generator().manual_seed(1)
    prior = torch.randn(300, 5, generator=gen)
    samples = torch.randn(40, 5, generator=gen) * 0.1 + 2.0
    fig = figures.latent_embedding("emb", "t", "c", prior, torch.arange(300) % 10, samples,
                                   [str(d) for d in range(10)])
    assert fig.png.startswith(b"\x89PNG")
    assert len(fig.data["prior_embedding"]) == 300 and len(fig.data["sample_embedding"]) == 40
    assert fig.data["prior_class"][:3] == [0, 1, 2]
    # The samples sit apart from the prior: the first component points at them.
    pc1_samples = np.mean([p[0] for p in fig.data["sample_embedding"]])
    pc1_prior = np.mean([p[0] for p in fig.data["prior_embedding"]])
    assert abs(pc1_samples - pc1_prior) > 3
    assert sum(fig.data["explained_variance_ratio"]) <= 1.0 + 1e-4


def test_class_profile_data():
    probs = torch.tensor([[0.1, 0.9], [0.3, 0.7], [0.2, 0.8]])
    fig = figures.class_profile("prof", "t", "c", ["a", "b"], probs, [0.25, 0.75])
    assert fig.png.startswith(b"\x89PNG")
    assert fig.data["mean"] == pytest.approx([0.2, 0.8])
    assert fig.data["target"] == [0.25, 0.75]
    assert fig.data["q05"][0] <= fig.data["mean"][0] <= fig.data["q95"][0]
