"""Bayesian LeNet-5: the Pyro model and guide, the Flipout ELBO against Pyro's, prediction and rejection."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

from ppl_audit.cache import load_weights
from ppl_audit.cards import load_card
from ppl_audit.classifiers.bayesian_lenet import (
    BayesianClassifier,
    BayesianLeNet,
    MeanFieldGuide,
    build_bayesian_lenet,
    check_threshold,
    logits_with_weights,
    median_probability,
    reject,
    site_shapes,
)
from ppl_audit.detectors.bnn import CertaintyDetector
from ppl_audit.errors import AuditFileError, InvalidInputError
from ppl_audit.training import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"conv_channels": (2, 4), "hidden": (8, 8)}


def tiny_net(init_scale=0.1, seed=0):
    torch.manual_seed(seed)
    return BayesianLeNet(**TINY, init_scale=init_scale)


def test_model_sites_have_the_stated_normal_priors_and_the_guide_matches_them():
    net = tiny_net()
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([0, 1, 2])
    model_trace = pyro.poutine.trace(net.model).get_trace(x, y)
    guide_trace = pyro.poutine.trace(net.guide).get_trace(x, y)
    weights = {n for n, s in model_trace.nodes.items()
               if s["type"] == "sample" and not s["is_observed"] and n != "data"}  # "data": the plate
    assert weights == {n for n, s in guide_trace.nodes.items() if s["type"] == "sample"}
    shapes = site_shapes(**TINY)
    assert weights == {f"bayesian_lenet5.{name}" for name in shapes}
    for name, shape in shapes.items():
        prior = model_trace.nodes[f"bayesian_lenet5.{name}"]["fn"].base_dist
        assert tuple(prior.batch_shape) == shape
        assert torch.all(prior.loc == 0) and torch.all(prior.scale == 1.0)
    assert model_trace.nodes["y"]["is_observed"]


def test_likelihood_is_scaled_to_the_data_set_size():
    net = tiny_net()
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    trace = pyro.poutine.trace(net.model).get_trace(x, y, 100)
    trace.compute_log_prob()
    site = trace.nodes["y"]
    assert math.isclose(float(site["scale"]), 100 / 4)


def test_functional_network_equals_the_pyro_model_with_the_same_weights():
    net = tiny_net()
    x = torch.rand(5, 1, 28, 28)
    weights = {name: t[0] for name, t in net.guide.draw(1, torch.Generator().manual_seed(1)).items()}
    conditioned = pyro.poutine.condition(net.model, data={f"bayesian_lenet5.{k}": v for k, v in weights.items()})
    torch.testing.assert_close(conditioned(x), logits_with_weights(x, weights))


def test_closed_form_kl_equals_torch_kl_divergence():
    net = tiny_net(init_scale=0.3)
    expected = sum(
        torch.distributions.kl_divergence(torch.distributions.Normal(net.guide.mean(n), net.guide.scale(n)),
                                          torch.distributions.Normal(0.0, 2.0)).sum()
        for n in net.guide.shapes)
    torch.testing.assert_close(net.guide.kl_to_prior(2.0), expected)


def test_flipout_and_pyro_elbo_estimate_the_same_elbo_and_flipout_varies_less():
    # Both estimators are unbiased for the same -ELBO (Flipout's per-example weights
    # have exactly the guide's marginal). With 1,500 draws each, the means must agree
    # within 4 standard errors of their difference (a 1-in-15,000 false alarm), and
    # Flipout's per-draw variance must be lower: its examples see decorrelated weights.
    net = tiny_net(init_scale=0.2)
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(0))
    pyro.set_rng_seed(0)
    generator = torch.Generator().manual_seed(0)
    draws = 1500
    with torch.no_grad():
        flip = torch.stack([net.negative_elbo(x, y, 32, generator=generator) for _ in range(draws)]).double()
        plain = torch.stack([net.negative_elbo(x, y, 32, estimator="weight-sample") for _ in range(draws)]).double()
    standard_error = math.sqrt(flip.var() / draws + plain.var() / draws)
    assert abs(float(flip.mean() - plain.mean())) < 4 * standard_error
    assert flip.var() < plain.var()


def test_unknown_estimator_is_refused():
    net = tiny_net()
    with pytest.raises(InvalidInputError, match="estimator must be one of"):
        net.negative_elbo(torch.rand(2, 1, 28, 28), torch.tensor([0, 1]), 2, estimator="reinforce")


def test_batched_predictive_equals_one_network_per_draw():
    net = tiny_net()
    clf = BayesianClassifier(net)
    x = torch.rand(7, 1, 28, 28)
    samples = clf.predictive(x, 4, generator=torch.Generator().manual_seed(3))
    weights = net.guide.draw(4, torch.Generator().manual_seed(3))
    for s in range(4):
        expected = logits_with_weights(x, {k: v[s] for k, v in weights.items()}).softmax(-1)
        torch.testing.assert_close(samples[s], expected)


def test_prediction_is_the_argmax_of_the_mean_and_certainty_is_the_median_of_its_probability():
    clf = BayesianClassifier(tiny_net(init_scale=0.3))
    pred = clf.predict(torch.rand(6, 1, 28, 28), 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pred.labels, pred.mean_probs.argmax(-1))
    expected = pred.samples[:, torch.arange(6), pred.labels].median(dim=0).values  # odd S: the middle draw
    torch.testing.assert_close(pred.certainty, expected)


def test_median_of_an_even_number_of_draws_averages_the_middle_two():
    samples = torch.tensor([[[0.9, 0.1]], [[0.6, 0.4]], [[0.7, 0.3]], [[0.2, 0.8]]])
    assert math.isclose(float(median_probability(samples, torch.tensor([0]))), 0.65, rel_tol=1e-6)
    assert math.isclose(float(median_probability(samples, torch.tensor([1]))), 0.35, rel_tol=1e-6)


def test_reject_rule_is_strictly_below_tau_and_thresholds_are_checked():
    assert reject(torch.tensor([0.49, 0.5, 0.51]), 0.5).tolist() == [True, False, False]
    assert not reject(torch.tensor([0.0]), 0.0).any() and reject(torch.tensor([0.999]), 1.0).all()
    for bad in (-0.1, 1.01, float("nan"), "0.5", True):
        with pytest.raises(InvalidInputError, match="tau must be a number in \\[0, 1\\]"):
            check_threshold(bad)


@pytest.mark.parametrize("images, message", [
    (torch.rand(2, 1, 32, 32), "shape"),
    (torch.rand(2, 28, 28), "shape"),
    (torch.rand(2, 1, 28, 28) * 255, r"\[0, 1\]"),
    (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "floating point"),
])
def test_bad_images_are_refused(images, message):
    with pytest.raises(InvalidInputError, match=message):
        BayesianClassifier(tiny_net()).predict(images, 2)


@pytest.mark.parametrize("s", [0, -1, 2.5])
def test_nonpositive_number_of_draws_is_refused(s):
    with pytest.raises(InvalidInputError, match="num_samples"):
        BayesianClassifier(tiny_net()).predict(torch.rand(1, 1, 28, 28), s)


def test_certainty_detector_scores_one_minus_certainty_and_rejects_below_tau():
    clf = BayesianClassifier(tiny_net(init_scale=0.3))
    detector = CertaintyDetector(clf, 5, seed=2).fit()
    x = torch.rand(8, 1, 28, 28)
    certainty = clf.predict(x, 5, generator=torch.Generator().manual_seed(2)).certainty
    torch.testing.assert_close(detector.score(x), 1 - certainty)
    tau = float(certainty.median())
    assert torch.equal(detector.rejects(x, tau), certainty < tau)


def test_probs_is_deterministic_and_sums_to_one():
    clf = BayesianClassifier(tiny_net(init_scale=0.3), num_samples=3)
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(clf.probs(x), clf.probs(x))
    torch.testing.assert_close(clf.probs(x).sum(1), torch.ones(4))


def test_sample_logits_is_differentiable_in_the_input_only():
    clf = BayesianClassifier(tiny_net())
    x = torch.rand(2, 1, 28, 28, requires_grad=True)
    clf.sample_logits(x, generator=torch.Generator().manual_seed(0)).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in clf.net.parameters())


@pytest.mark.parametrize("override, message", [
    ({"training": {"estimator": "reinforce"}}, "estimator must be one of"),
    ({"architecture": {"prior_scale": 0}}, "prior_scale must be a number > 0"),
    ({"training": {"eval_samples": 0}}, "eval_samples must be a positive integer"),
    ({"training": {"epochs": 0}}, "epochs must be a positive integer"),
    ({"architecture": {"dropout": 0.5}}, "unknown key"),
])
def test_card_values_are_checked(override, message):
    with pytest.raises(AuditFileError, match=message):
        build_bayesian_lenet(load_card("mnist-bayesian-lenet5").with_overrides(**override))


def test_tiny_training_raises_the_elbo_and_caches_only_the_guide(mnist_fixture_dir, cache_root):
    card = load_card("mnist-bayesian-lenet5").with_overrides(
        architecture={"conv_channels": [4, 8], "hidden": [16, 16]},
        data={"train_split": "test", "num_train": 100, "num_test": 100},
        training={"epochs": 3, "batch_size": 20, "learning_rate": 0.01, "eval_samples": 3},
        expected={"min_test_accuracy": 0.0})  # 100 images: no floor (the shipped 0.98 would fail the training)
    trained = load_model(card, cache=cache_root, data_dir=mnist_fixture_dir, device="cpu")
    elbo = trained.info["history"]["panels"]["ELBO per training image (nats)"]
    series = next(iter(elbo.values()))
    assert len(series) == 3 and series[-1] > series[0]
    state, info = load_weights(trained.weights_path)
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in state} == {"guide.loc", "guide.rho"}
    reloaded = load_model(card, cache=cache_root, data_dir="/nonexistent", device="cpu")  # cached: no data read
    x = torch.rand(3, 1, 28, 28)
    a = BayesianClassifier(trained.module).predictive(x, 2, generator=torch.Generator().manual_seed(0))
    b = BayesianClassifier(reloaded.module).predictive(x, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    assert 0 <= info["metrics"]["test_accuracy"] <= 1


def test_guide_state_dict_keys_are_loc_and_rho_per_site():
    guide = MeanFieldGuide(site_shapes(**TINY))
    assert sorted(guide.state_dict()) == sorted(f"{part}.{name.replace('.', '__')}"
                                                for part in ("loc", "rho") for name in site_shapes(**TINY))
