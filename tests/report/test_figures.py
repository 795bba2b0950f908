"""Figure helpers: PCA on known answers, the latent embedding and the class profile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppl_audit.errors import InvalidInputError
from ppl_audit.report import figures
from tests.figure_checks import capture_figures, overlapping_texts


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


# --------------------------------------------------------------------------- figures a reader can read (issue 25)

SIX_LATENTS = ["w", "h", "t", "r", "cx", "cy"]  # the house-rocket-circle world's


@pytest.mark.parametrize("names", [SIX_LATENTS, ["w", "h", "t"]])
def test_latent_pairs_draw_every_pair_of_every_latent(monkeypatch, names):
    drawn = capture_figures(monkeypatch)
    gen = torch.Generator().manual_seed(0)
    d = len(names)
    fig = figures.latent_pairs("pairs", "Title", "c", names, torch.rand(200, d, generator=gen),
                               torch.rand(200, generator=gen), torch.rand(30, d, generator=gen), score_label="P(house)")
    expected = [[i, j] for i in range(d) for j in range(i + 1, d)]
    assert fig.data["pairs"] == expected and fig.data["latent_names"] == names
    (mpl,) = drawn
    panels = [ax for ax in mpl.axes if ax.collections and not hasattr(ax, "_colorbar")]
    assert len(panels) == len(expected)  # one panel per pair: 15 for six latents
    # Every latent is named on the corner's outer edge: x below the bottom row, y left of the first column.
    assert {ax.get_xlabel() for ax in panels} - {""} == set(names[:-1])
    assert {ax.get_ylabel() for ax in panels} - {""} == set(names[1:])
    for ax, (i, j) in zip(panels, expected):  # each panel draws the pair its data names
        prior, samples = ax.collections[:2]
        assert np.allclose(prior.get_offsets()[:, 0], np.array(fig.data["prior_latents"])[:, i], atol=1e-4)
        assert np.allclose(samples.get_offsets()[:, 1], np.array(fig.data["sample_latents"])[:, j], atol=1e-4)
    assert overlapping_texts(mpl) == []
    assert mpl.get_size_inches()[0] * figures.DPI <= 1400  # fits the page at 1,400 px


def test_latent_pairs_reject_bad_pairs():
    with pytest.raises(InvalidInputError, match="pairs must be"):
        figures.latent_pairs("p", "t", "c", ["a", "b"], torch.rand(5, 2), torch.rand(5), torch.rand(2, 2),
                             score_label="s", pairs=[(1, 0)])


def test_line_plot_labels_its_vertical_lines_and_records_them(monkeypatch):
    drawn = capture_figures(monkeypatch)
    fig = figures.line_plot("acc", "t", "c", {"acceptance rate": [0.3] * 60}, xlabel="move", ylabel="acc",
                            vlines={"kept draws start": [20, 50], "next round starts": [30]})
    assert fig.data["vlines"] == {"kept draws start": [20.0, 50.0], "next round starts": [30.0]}
    ax = drawn[0].axes[0]
    vertical = [line.get_xdata()[0] for line in ax.get_lines()[1:]]
    assert vertical == [20, 50, 30]  # drawn where the data says
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "acceptance rate", "kept draws start", "next round starts"]  # one legend entry per label
    warm = figures.line_plot("acc", "t", "c", {"a": [0.5, 0.4]}, xlabel="step", ylabel="a", vline=1)
    assert warm.data["vlines"] == {"end of warm-up": [1.0]}
    assert figures.line_plot("acc", "t", "c", {"a": [0.5]}, xlabel="s", ylabel="a").data["vlines"] == {}


def test_tempering_plot_draws_every_run(monkeypatch):
    drawn = capture_figures(monkeypatch)
    schedules = [[0.0, 0.1 * (r + 1), 1.0] for r in range(8)] + [[0.0, 0.2, 0.6, 1.0] for _ in range(8)]
    groups = [r % 2 for r in range(16)]
    fig = figures.tempering_plot("temp", "t", "c", schedules, groups, [[0.5, 0.9], [0.6, 0.7, 0.95]])
    assert len(fig.data["schedules"]) == 16 and fig.data["run_groups"] == groups
    beta, ess = drawn[0].axes
    assert len(beta.get_lines()) == 16  # every run, not the first four
    assert [t.get_text() for t in beta.get_legend().get_texts()] == ["round 1: 8 runs", "round 2: 8 runs"]
    assert [list(line.get_ydata()) for line in ess.get_lines()] == [[0.5, 0.9], [0.6, 0.7, 0.95]]
    assert overlapping_texts(drawn[0]) == []
    with pytest.raises(InvalidInputError, match="one group per run"):
        figures.tempering_plot("temp", "t", "c", schedules, groups[:3], [])


def test_score_histogram_records_its_class_and_target(monkeypatch):
    drawn = capture_figures(monkeypatch)
    fig = figures.score_histogram("h", "t", "c", {"samples": torch.tensor([0.1, 0.2, 0.95])}, xlabel="P(house)",
                                  band=(0.45, 0.55), target=0.999, bins=10)
    assert (fig.data["xlabel"], fig.data["band"], fig.data["target"]) == ("P(house)", [0.45, 0.55], 0.999)
    assert fig.data["counts"]["samples"] == [0, 1, 1, 0, 0, 0, 0, 0, 0, 1]
    ax = drawn[0].axes[0]
    assert ax.get_xlabel() == "P(house)"
    assert "target P(house) = 0.999" in [t.get_text() for t in ax.get_legend().get_texts()]
