"""Classification by synthesis: the batched latent search against known answers, the contracts, errors."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chi2

from ppl_audit.classifiers.synthesis import (
    SearchConfig,
    SynthesisClassifier,
    _squared_distances,
    latent_search,
    prior_ball_radius,
    refine_contested,
)
from ppl_audit.detectors.synthesis import HybridDetector, SynthesisDetector
from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.generative.class_generators import ClassGAN
from ppl_audit.generative.vae_ensemble import VAEEnsemble
from ppl_audit.report.figures import explanation_figure

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = SearchConfig(draws=64, steps=30, learning_rate=0.1)


@pytest.fixture(scope="module")
def gan():
    return ClassGAN(3, 2, (16,), (8,), seed=0).eval()


def _own_generations(gan, classes, latents):
    with torch.no_grad():
        z = torch.zeros(gan.num_members, len(classes), gan.latent_dim)
        for i, (c, zc) in enumerate(zip(classes, latents)):
            z[c, i] = torch.tensor(zc)
        return torch.stack([gan.decode(z)[c, i] for i, c in enumerate(classes)])


def test_search_finds_each_generators_own_images(gan):
    """Images made by class c's generator are at distance ~0 from class c: the label is c."""
    classes = [1, 0, 2, 1]
    x = _own_generations(gan, classes, [(0.5, -0.3), (1.0, 1.0), (-1.2, 0.4), (0.0, 0.0)])
    result = latent_search(gan, x, SearchConfig(draws=256, steps=200, learning_rate=0.05))
    assert result.labels.tolist() == classes
    own = result.distances[torch.arange(4), torch.tensor(classes)]
    # 784 pixels: a distance of 0.05 is an rms pixel error below 0.002
    assert bool((own < 0.05).all()), own


def test_batched_search_equals_each_image_searched_alone(gan):
    """The C x N problems do not interact: searching together gives each image's lone answer."""
    x = torch.rand(5, 1, 28, 28)
    together = latent_search(gan, x, FAST)
    for i in range(5):
        alone = latent_search(gan, x[i:i + 1], FAST)
        torch.testing.assert_close(alone.distances[0], together.distances[i], rtol=1e-4, atol=1e-4)


def test_chunks_do_not_change_the_answer(gan):
    x = torch.rand(7, 1, 28, 28)
    one = latent_search(gan, x, FAST)
    chunked = latent_search(gan, x, SearchConfig(draws=64, steps=30, learning_rate=0.1, chunk=3))
    torch.testing.assert_close(one.distances, chunked.distances, rtol=1e-4, atol=1e-4)


def test_the_optimiser_never_ends_worse_than_its_start_and_stays_in_the_prior_ball(gan):
    x = torch.rand(6, 1, 28, 28)
    result = latent_search(gan, x, SearchConfig(draws=32, steps=20, learning_rate=0.5, prior_mass=0.3))
    assert bool((result.distances <= result.start_distances + 1e-6).all())
    radius = prior_ball_radius(0.3, gan.latent_dim)
    assert float(result.latents.norm(dim=-1).max()) <= radius + 1e-5
    # a large step size pushes latents to the boundary, so the projection is exercised
    assert float(result.latents.norm(dim=-1).max()) > 0.9 * radius
    assert result.generator_seconds <= result.seconds


def test_the_encoder_start_is_never_worse_than_monte_carlo_alone():
    vae = VAEEnsemble(3, 2, (16,), seed=0).eval()
    x = torch.rand(6, 1, 28, 28)
    mc = latent_search(vae, x, SearchConfig(draws=8, steps=0, use_encoder=False))
    both = latent_search(vae, x, SearchConfig(draws=8, steps=0, use_encoder=True))
    assert bool((both.distances <= mc.distances + 1e-6).all())


def test_squared_distances_match_brute_force():
    flat, gen = torch.rand(4, 10), torch.rand(3, 5, 10)
    brute = (gen[:, None, :, :] - flat[None, :, None, :]).square().sum(-1)
    torch.testing.assert_close(_squared_distances(flat, gen), brute, rtol=1e-5, atol=1e-5)


def test_probabilities_and_detector_follow_the_distances(gan):
    clf = SynthesisClassifier(gan, ("a", "b", "c"), FAST, pixel_noise=2.0)
    x = torch.rand(4, 1, 28, 28)
    result = clf.search(x)
    probs = clf.probs_from(result)
    torch.testing.assert_close(probs.sum(1), torch.ones(4))
    assert probs.argmax(1).tolist() == result.labels.tolist()
    expected = torch.softmax(-result.distances.square() / 8.0, dim=1)
    torch.testing.assert_close(probs, expected)
    scores = SynthesisDetector(clf).scores_from(result)
    torch.testing.assert_close(scores, result.distances.min(1).values)  # higher = farther = reject


def test_hybrid_takes_the_cnn_label_and_the_synthesis_confidence(gan, tiny_classifier):
    clf = SynthesisClassifier(gan, ("a", "b", "c"), FAST)

    class ThreeClass:
        class_names = ("a", "b", "c")
        num_classes = 3

        def probs(self, x):
            return torch.tensor([[0.1, 0.2, 0.7]]).expand(len(x), 3)

    labels, confidence = HybridDetector(ThreeClass(), clf).decide(torch.rand(2, 1, 28, 28))
    assert labels.tolist() == [2, 2]
    assert confidence.shape == (2,)
    with pytest.raises(InvalidInputError, match="2 classes but the generative classifier 3"):
        HybridDetector(tiny_classifier, clf)


def test_explanation_figure_names_the_winner():
    fig = explanation_figure(torch.rand(2, 1, 28, 28), torch.rand(2, 3, 1, 28, 28),
                             torch.tensor([[3.0, 1.0, 5.0], [2.0, 4.0, 0.5]]), class_names=("a", "b", "c"),
                             true_labels=[1, None])
    assert fig.data["predicted"] == [1, 2] and fig.png[:4] == b"\x89PNG"
    with pytest.raises(InvalidInputError, match="matching images"):
        explanation_figure(torch.rand(1, 1, 28, 28), torch.rand(2, 3, 1, 28, 28), torch.rand(2, 3),
                           class_names=("a", "b", "c"))


def test_bad_inputs_are_named(gan):
    with pytest.raises(InvalidInputError, match="empty batch"):
        latent_search(gan, torch.zeros(0, 1, 28, 28), FAST)
    with pytest.raises(InvalidInputError, match=r"shape \(N, 1, 28, 28\)"):
        latent_search(gan, torch.rand(2, 1, 32, 32), FAST)
    with pytest.raises(InvalidInputError, match="3 generators"):
        SynthesisClassifier(gan, ("a", "b"))
    with pytest.raises(InvalidInputError, match="object has no num_members"):
        latent_search(object(), torch.rand(1, 1, 28, 28), FAST)
    with pytest.raises(InvalidInputError, match="pixel_noise"):
        SynthesisClassifier(gan, ("a", "b", "c"), pixel_noise=0)
    for mass in (-1, 0, 1, True):
        with pytest.raises(InvalidInputError, match="prior_mass"):
            SearchConfig(prior_mass=mass)
    for kwargs, message in (({"refine_restarts": -1}, "refine_restarts must be an integer >= 0"),
                            ({"refine_ratio": 0.9}, "refine_ratio must be a number >= 1"),
                            ({"refine_draws": 0}, "refine_draws must be a positive integer"),
                            ({"refine_learning_rate": float("nan")}, "refine_learning_rate must be a number > 0")):
        with pytest.raises(InvalidInputError, match=message):
            SearchConfig(**kwargs)


def test_refinement_finds_what_a_poor_search_missed_and_only_touches_contested_images(gan):
    """A 1-draw, 0-step search misses class 1's own generation; the refinement of contested images finds it."""
    x = torch.cat([_own_generations(gan, [1], [(0.7, -0.4)]), torch.rand(3, 1, 28, 28)])
    poor = SearchConfig(draws=1, steps=0)
    base = latent_search(gan, x, poor)
    assert float(base.distances[0, 1]) > 0.5  # the poor search is far from the answer
    every = latent_search(gan, x, SearchConfig(draws=1, steps=0, refine_restarts=2, refine_ratio=1e6,
                                               refine_draws=256, refine_steps=200, refine_learning_rate=0.05))
    assert int(every.labels[0]) == 1 and float(every.distances[0, 1]) < 0.05  # its own generation, found
    assert bool((every.distances <= base.distances).all())  # a refinement keeps each (image, class)'s best
    torch.testing.assert_close(every.start_distances, base.start_distances)
    assert every.timings["refined_images"] == 4
    # with ratio 1 no image is contested: the answer is the poor search's, bit for bit
    none = latent_search(gan, x, SearchConfig(draws=1, steps=0, refine_restarts=2, refine_ratio=1.0))
    assert none.timings["refined_images"] == 0 and torch.equal(none.distances, base.distances)
    # only the contested images change; the others keep the poor search's distances exactly
    closest = base.distances.topk(2, dim=1, largest=False).values
    ratio = float((closest[:, 1] / closest[:, 0]).median())
    some = latent_search(gan, x, SearchConfig(draws=1, steps=0, refine_restarts=1, refine_ratio=ratio,
                                              refine_draws=64, refine_steps=20))
    contested = closest[:, 1] < ratio * closest[:, 0]
    assert some.timings["refined_images"] == int(contested.sum())
    assert torch.equal(some.distances[~contested], base.distances[~contested])


def test_each_refinement_restart_reports_progress_under_its_own_name(gan):
    calls = []
    latent_search(gan, torch.rand(3, 1, 28, 28), SearchConfig(draws=4, steps=2, refine_restarts=2, refine_ratio=1e6,
                                                              refine_draws=8, refine_steps=3),
                  progress=lambda task, done, total: calls.append((task, done, total)))
    finals = [c for c in calls if c[1] == c[2]]
    assert finals == [("latent search", 2, 2),
                      ("latent search: refinement 1 of 2 (3 contested images)", 3, 3),
                      ("latent search: refinement 2 of 2 (3 contested images)", 3, 3)]


def test_refining_a_result_leaves_it_unchanged_and_refuses_other_images(gan):
    x = torch.rand(4, 1, 28, 28)
    base = latent_search(gan, x, SearchConfig(draws=1, steps=0))
    kept = base.distances.clone()
    refined = refine_contested(gan, x, base, SearchConfig(refine_restarts=1, refine_ratio=1e6, refine_draws=32,
                                                          refine_steps=5))
    assert torch.equal(base.distances, kept) and bool((refined.distances <= kept).all())
    with pytest.raises(InvalidInputError, match="3 images for a search result of 4"):
        refine_contested(gan, x[:3], base, SearchConfig(refine_restarts=1))


@pytest.mark.parametrize("dim", [1, 2, 10, 15, 64])
@pytest.mark.parametrize("mass", [0.1, 0.5, 0.9, 0.999])
def test_the_prior_ball_holds_the_asked_mass(dim, mass):
    # known answer: ||z||^2 of a standard normal in `dim` dimensions is chi-squared(dim)
    expected = chi2.ppf(mass, dim) ** 0.5
    assert prior_ball_radius(mass, dim) == pytest.approx(expected, rel=1e-9)


def test_a_nan_generator_is_a_model_error():
    broken = ClassGAN(2, 2, (8,), (8,), seed=0)
    with torch.no_grad():
        broken.generator[0].weight.fill_(float("nan"))
    with pytest.raises(ModelOutputError, match="NaN"):
        latent_search(broken, torch.rand(2, 1, 28, 28), FAST)
