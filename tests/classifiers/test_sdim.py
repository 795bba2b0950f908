"""SDIM: the maths on hand-computed cases, the classifier and detector contracts, bad input, tiny training."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import pytest
import torch
from torch.distributions import Normal

from ppl_audit.training import registry
from ppl_audit.cache import load_weights
from ppl_audit.cards import load_card
from ppl_audit.classifiers import sdim
from ppl_audit.classifiers.base import Classifier
from ppl_audit.classifiers.sdim import (
    SDIM,
    SDIMClassifier,
    fit_thresholds,
    gaussian_log_likelihoods,
    jsd_mi_estimate,
    margin_loss,
    ood_rejection_rate,
    percentile_threshold,
    selective_table,
    thresholds_from_log_likelihoods,
)
from ppl_audit.detectors.base import Detector
from ppl_audit.detectors.sdim import SDIMDetector
from ppl_audit.errors import AuditFileError, InvalidInputError, ModelOutputError, WeightsError
from ppl_audit.training import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_ARCHITECTURE = {"channels": [4, 8, 8], "representation_dim": 8, "mi_units": 8}
TINY_TRAINING = {"epochs": 1, "batch_size": 25}
TINY_DATA = {"train_split": "test", "num_train": 100, "num_test": 100}  # the fixture has only a test split
# One epoch on 100 images: no floors (the shipped card's 0.995 would make the training fail, as it should).
TINY_EXPECTED = {"min_test_accuracy": 0.0, "min_test_kept_accuracy_p1": 0.0, "max_test_rejection_rate_p1": 1.0}


def tiny_card(**training_overrides):
    return load_card("mnist-sdim").with_overrides(architecture=TINY_ARCHITECTURE, data=TINY_DATA,
                                                  training={**TINY_TRAINING, **training_overrides},
                                                  expected=TINY_EXPECTED)


def tiny_net(seed: int = 0) -> SDIM:
    torch.manual_seed(seed)
    return SDIM(channels=(2, 4, 4), representation_dim=3, mi_units=4)


@pytest.fixture(scope="module")
def fitted():
    """A tiny untrained SDIM with thresholds fitted on random images (two per class)."""
    net = tiny_net()
    generator = torch.Generator().manual_seed(1)
    fit_thresholds(net, torch.rand(40, 1, 28, 28, generator=generator), torch.arange(40) % 10)
    return SDIMClassifier(net)


# --------------------------------------------------------------------------- the maths


def test_shapes():
    net = tiny_net()
    x = torch.rand(5, 1, 28, 28)
    local, f = net.encoder(x)
    assert local.shape == (5, 4, 7, 7) and f.shape == (5, 3)
    assert net(x).shape == net.log_likelihoods(x).shape == (5, 10)
    out = net.losses(x, torch.arange(5), margin=10.0)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"mi": (), "nll": (), "margin": (),
                                                             "log_likelihoods": (5, 10)}
    assert SDIM().mu.shape == (10, 64)  # the paper's d = 64


def test_class_conditional_log_density_equals_torch_normal():
    generator = torch.Generator().manual_seed(0)
    f, mu, log_sigma = (torch.randn(shape, generator=generator) for shape in [(4, 3), (2, 3), (2, 3)])
    expected = torch.stack([Normal(mu[c], log_sigma[c].exp()).log_prob(f).sum(-1) for c in range(2)], dim=1)
    assert torch.allclose(gaussian_log_likelihoods(f, mu, log_sigma), expected, atol=1e-5)


def test_margin_loss_on_a_hand_computed_case():
    ll = torch.tensor([[0.0, -4.0, -20.0],   # y = 0: (10 - 4 - 0)^2 + max(0, 10 - 20 - 0)^2 = 36
                       [-3.0, -1.0, 5.0]])   # y = 2: (10 - 3 - 5)^2 + (10 - 1 - 5)^2 = 4 + 16
    assert float(margin_loss(ll, torch.tensor([0, 2]), 10.0)) == pytest.approx((36 + 20) / 2)
    # the true class never contributes; an all-far case costs nothing
    assert float(margin_loss(torch.tensor([[0.0, -50.0]]), torch.tensor([0]), 10.0)) == 0.0


def test_jsd_mi_estimate_known_values_and_sign():
    # T = 0 everywhere: -softplus(0) - softplus(0) = -2 log 2
    assert float(jsd_mi_estimate(torch.zeros(4, 3, 5), torch.zeros(4, 3))) == pytest.approx(-2 * math.log(2))
    # Two images, one unit, one position: T_ij = a_i * b_j with a = (2, -1), b = (1, 3).
    local, glob = torch.tensor([[[2.0]], [[-1.0]]]), torch.tensor([[1.0], [3.0]])
    sp = torch.nn.functional.softplus
    pos = torch.tensor([2.0, -3.0])  # T_00, T_11
    neg = torch.tensor([6.0, -1.0])  # T_01, T_10
    expected = (-sp(-pos)).mean() - sp(neg).mean()
    assert float(jsd_mi_estimate(local, glob)) == pytest.approx(float(expected))
    # Critics that separate positive from negative pairs estimate more information than ones that do not.
    separated = jsd_mi_estimate(torch.eye(3)[:, :, None] * 5, torch.eye(3))
    assert float(separated) > float(jsd_mi_estimate(torch.ones(3, 3, 1), torch.ones(3, 3))) and float(separated) < 0
    with pytest.raises(InvalidInputError, match="at least 2 images"):
        jsd_mi_estimate(torch.zeros(1, 3, 5), torch.zeros(1, 3))


def test_percentile_thresholds_on_known_numbers():
    values = torch.arange(300.0)[torch.randperm(300, generator=torch.Generator().manual_seed(0))]
    assert float(percentile_threshold(values, 1)) == 3.0 and float(percentile_threshold(values, 2)) == 6.0
    assert int((values < percentile_threshold(values, 2)).sum()) == 6  # floor(q n / 100) fall below
    assert float(percentile_threshold(torch.tensor([5.0]), 1)) == 5.0
    # Per class, only correctly classified images count: the misclassified class-0 image (-100) is ignored.
    ll = torch.tensor([[-1.0, -9.0], [-2.0, -9.0], [-100.0, -50.0], [-9.0, -4.0], [-9.0, -3.0]])
    thresholds, fell_back = thresholds_from_log_likelihoods(ll, torch.tensor([0, 0, 0, 1, 1]), (1, 50))
    assert thresholds.tolist() == [[-2.0, -4.0], [-1.0, -3.0]] and fell_back == []
    # A class with no correct image falls back to all its images.
    thresholds, fell_back = thresholds_from_log_likelihoods(torch.tensor([[0.0, -1.0], [0.0, -2.0]]),
                                                            torch.tensor([0, 1]), (1,))
    assert fell_back == [1] and thresholds.tolist() == [[0.0, -2.0]]
    with pytest.raises(InvalidInputError, match="class 1 has no training image"):
        thresholds_from_log_likelihoods(torch.zeros(2, 2), torch.tensor([0, 0]))
    with pytest.raises(InvalidInputError, match=r"percentile must be a number in \[0, 100\)"):
        percentile_threshold(values, 100)
    with pytest.raises(InvalidInputError, match="no values"):
        percentile_threshold(torch.zeros(0), 1)


# --------------------------------------------------------------------------- classifier and detector


def test_thresholds_fitted_on_training_images_reject_the_stated_share(fitted):
    generator = torch.Generator().manual_seed(1)
    images, labels = torch.rand(40, 1, 28, 28, generator=generator), torch.arange(40) % 10
    ll = fitted.log_likelihoods(images).detach()
    correct = ll.argmax(1) == labels
    for q in (1, 2):
        t = fitted.thresholds(q)
        for c in range(10):
            chosen = (labels == c) & correct if ((labels == c) & correct).any() else labels == c
            assert float(t[c]) == float(percentile_threshold(ll[chosen, c], q))
    assert torch.equal(fitted.module.thresholds, torch.stack([fitted.thresholds(1), fitted.thresholds(2)]))


def test_classifier_contract(fitted):
    assert isinstance(fitted, Classifier) and fitted.differentiable and fitted.class_names == tuple("0123456789")
    x = torch.rand(7, 1, 28, 28)
    p = fitted.probs(x)
    assert p.shape == (7, 10) and torch.allclose(p.sum(1), torch.ones(7))
    assert torch.allclose(p, torch.softmax(fitted.log_likelihoods(x), 1))
    fitted.chunk_size = 3  # chunking does not change the answer
    assert torch.allclose(fitted.probs(x), p, atol=1e-6)
    fitted.chunk_size = 256
    pred = fitted.predict(x, percentile=2)
    labels, kept, best = pred
    assert torch.equal(labels, p.argmax(1)) and kept.dtype == torch.bool
    assert torch.equal(kept, best >= fitted.thresholds(2)[labels])
    assert fitted.probs(torch.zeros(0, 1, 28, 28)).shape == (0, 10)


def test_detector_contract_higher_means_reject(fitted):
    x = torch.cat([torch.rand(6, 1, 28, 28), torch.zeros(2, 1, 28, 28)])
    for q in (1, 2):
        det = SDIMDetector(fitted, percentile=q)
        assert isinstance(det, Detector)
        s = det.score(x)
        pred = fitted.predict(x, q)
        assert s.shape == (8,) and torch.allclose(s, pred.threshold - pred.max_log_likelihood)
        assert torch.equal(s > 0, ~pred.kept) and torch.equal(det.rejects(x), s > 0)
    # Raising the threshold of every class raises every score by the same amount.
    det = SDIMDetector(fitted, 1)
    before = det.score(x)
    fitted.module.thresholds[0] += 5.0
    try:
        assert torch.allclose(det.score(x), before + 5.0)
    finally:
        fitted.module.thresholds[0] -= 5.0


def test_selective_table_and_ood_rate(fitted):
    generator = torch.Generator().manual_seed(2)
    images, labels = torch.rand(12, 1, 28, 28, generator=generator), torch.arange(12) % 10
    rows = selective_table(fitted, images, labels)
    assert [r["percentile"] for r in rows] == [1, 2]
    for row in rows:
        pred = fitted.predict(images, row["percentile"])
        correct = pred.labels == labels
        assert row["num_images"] == 12 and row["num_kept"] == int(pred.kept.sum())
        assert row["rejection_rate"] == pytest.approx(1 - row["num_kept"] / 12)
        assert row["accuracy_all"] == pytest.approx(float(correct.float().mean()))
        if row["num_kept"]:
            assert row["accuracy_kept"] == pytest.approx(float(correct[pred.kept].float().mean()))
        else:
            assert row["accuracy_kept"] is None
    assert ood_rejection_rate(fitted, images, 2) == pytest.approx(rows[1]["rejection_rate"])
    # Thresholds below every log-likelihood keep everything; above every one reject everything.
    saved = fitted.module.thresholds.clone()
    try:
        fitted.module.thresholds.fill_(-1e30)
        assert ood_rejection_rate(fitted, images, 1) == 0.0
        fitted.module.thresholds.fill_(1e30)
        assert ood_rejection_rate(fitted, images, 1) == 1.0
        assert selective_table(fitted, images, labels, (1,))[0]["accuracy_kept"] is None
    finally:
        fitted.module.thresholds.copy_(saved)


@pytest.mark.parametrize("call, message", [
    (lambda c: c.probs(torch.rand(2, 1, 32, 32)), r"shape \(N, 1, 28, 28\)"),
    (lambda c: c.probs(torch.full((2, 1, 28, 28), 2.0)), r"\[0, 1\]"),
    (lambda c: c.probs(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)), "floating point"),
    (lambda c: c.predict(torch.rand(2, 1, 28, 28), percentile=3), r"one of the stored thresholds' \(1, 2\), got 3"),
    (lambda c: c.thresholds(0.5), "got 0.5"),
    (lambda c: SDIMDetector(c, percentile=5), "got 5"),
    (lambda c: selective_table(c, torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long)), "empty"),
    (lambda c: selective_table(c, torch.rand(3, 1, 28, 28), torch.arange(2)), "differ in length: 3 against 2"),
    (lambda c: selective_table(c, torch.rand(2, 1, 28, 28), torch.tensor([0, 10])), r"integers in 0\.\.9"),
    (lambda c: selective_table(c, torch.rand(2, 1, 28, 28), torch.arange(2), (1, 3)), "got 3"),
    (lambda c: ood_rejection_rate(c, torch.zeros(0, 1, 28, 28), 1), "empty"),
    (lambda c: ood_rejection_rate(c, torch.rand(2, 1, 28, 28), 99), "got 99"),
])
def test_bad_input_is_a_clear_error(fitted, call, message):
    with pytest.raises(InvalidInputError, match=message):
        call(fitted)


def test_unfitted_thresholds_are_a_clear_error():
    clf = SDIMClassifier(tiny_net())
    assert clf.probs(torch.rand(2, 1, 28, 28)).shape == (2, 10)  # classifying needs no thresholds
    with pytest.raises(InvalidInputError, match="never fitted"):
        clf.predict(torch.rand(2, 1, 28, 28))
    with pytest.raises(InvalidInputError, match="3 class names for a 10-class SDIM"):
        SDIMClassifier(tiny_net(), ["a", "b", "c"])


# --------------------------------------------------------------------------- the card and training


@pytest.mark.parametrize("override, message", [
    ({"architecture": {"type": "lenet5"}}, "type must be 'resnet'"),
    ({"architecture": {"channels": [16, 32]}}, "channels must be 3 positive integers"),
    ({"training": {"margin": -1.0}}, "margin must be a number > 0"),
    ({"training": {"mi_weight": -0.5}}, "mi_weight must be a number >= 0"),
    ({"training": {"per_dimension": "yes"}}, "per_dimension must be true or false"),
    ({"training": {"batch_size": 1}}, "batch_size must be at least 2"),
    ({"training": {"marign": 10}}, r"unknown key\(s\) \['marign'\] in \[training\]"),
])
def test_bad_card_values_are_named(override, message):
    with pytest.raises(AuditFileError, match=message):
        sdim.build_sdim(load_card("mnist-sdim").with_overrides(**override))


def test_shipped_card_builds_the_papers_sizes():
    card = load_card("mnist-sdim")
    assert card.kind == "sdim-classifier" and card.training["margin"] == 10.0
    assert card.expected["min_test_accuracy"] == 0.995
    net = sdim.build_sdim(card)
    assert net.mu.shape == (10, 64) and net.percentiles.tolist() == [1.0, 2.0]


def test_tiny_training_is_seeded_cached_and_gives_a_usable_rejector(mnist_fixture_dir, cache_root, monkeypatch):
    card = tiny_card()
    first = sdim.train_sdim(card, data_dir=mnist_fixture_dir, device="cpu")
    again = sdim.train_sdim(card, data_dir=mnist_fixture_dir, device="cpu")
    for (name, a), b in zip(first.module.state_dict().items(), again.module.state_dict().values()):
        assert torch.equal(a, b), name  # same seed, same weights and thresholds
    metrics = first.metrics
    assert metrics["num_train"] == metrics["num_test"] == 100 and 0 <= metrics["test_accuracy"] <= 1
    assert {"test_kept_accuracy_p1", "test_rejection_rate_p1", "test_rejection_rate_p2"} <= set(metrics)
    assert set(first.history["panels"]["accuracy"]) == {"train (running, augmented)", "test"}

    clf = load_model(card, cache=cache_root, data_dir=mnist_fixture_dir, device="cpu", kind="sdim-classifier").model
    assert set(load_weights(clf.weights_path)[0]) >= {"thresholds", "percentiles", "mu", "log_sigma"}
    assert torch.isfinite(clf.thresholds(1)).all() and (clf.thresholds(2) >= clf.thresholds(1)).all()

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the weights are cached")

    x = torch.rand(3, 1, 28, 28)
    with monkeypatch.context() as mp:
        mp.setitem(registry._REGISTRY, "sdim-classifier", dataclasses.replace(sdim.TRAINER, train=no_training))
        cached = load_model(card, cache=cache_root, device="cpu", train_if_missing=False, kind="sdim-classifier").model
    assert torch.equal(cached.log_likelihoods(x), clf.log_likelihoods(x))
    assert torch.equal(cached.thresholds(2), clf.thresholds(2))
    with pytest.raises(WeightsError, match="train_if_missing is False"):
        load_model(tiny_card(seed=3), cache=cache_root, train_if_missing=False, kind="sdim-classifier").model


def test_loading_refuses_a_card_of_another_kind(cache_root):
    with pytest.raises(InvalidInputError, match="'mnist-vae' is of kind 'vae'"):
        load_model("mnist-vae", cache=cache_root, kind="sdim-classifier").model


def test_a_diverging_loss_is_a_clear_error(mnist_fixture_dir):
    # (K + gap)^2 with K = 1e30 overflows float32 on the first step.
    with pytest.raises(ModelOutputError, match=r"SDIM training diverged: loss (inf|nan) at epoch 1, step 1 .*learning_rate"):
        sdim.train_sdim(tiny_card(margin=1e30), data_dir=mnist_fixture_dir, device="cpu")


# --------------------------------------------------------------------------- issue 19: oneDNN's strided 1x1 kernel


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN:UserWarning")  # mkldnn.flags says it
def test_pointwise_downsample_is_a_strided_1x1_convolution_with_the_same_parameters():
    torch.manual_seed(0)
    ours = sdim.PointwiseDownsample(4, 8, stride=2)
    reference = torch.nn.Conv2d(4, 8, 1, stride=2, bias=False)
    reference.load_state_dict(ours.state_dict())  # same keys and shapes: cached SDIM weights still load
    for side in (28, 7):  # even and odd sides give the strided convolution's output shape
        x = torch.randn(3, 4, side, side).to(memory_format=torch.channels_last)
        with torch.backends.mkldnn.flags(enabled=False):
            want = reference(x)
            want.square().sum().backward()
        got = ours(x)
        got.square().sum().backward()
        assert got.shape == want.shape
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(ours.weight.grad, reference.weight.grad)
        ours.zero_grad(), reference.zero_grad()


AVX2_BLOCK = r"""
import torch
from ppl_audit.classifiers.sdim import BasicBlock
torch.manual_seed(0)
block = BasicBlock(4, 8, stride=2)  # the tiny test card's second stage: 4 channels, fewer than AVX2's 8
x = torch.randn(25, 4, 28, 28).to(memory_format=torch.channels_last)  # the layout SDIM's 1-channel input gives
for _ in range(20):
    block.zero_grad()
    block(x).square().sum().backward()
got = block.shortcut[0].weight.grad.clone()
block.zero_grad()
with torch.backends.mkldnn.flags(enabled=False):
    block(x).square().sum().backward()
print(float((got - block.shortcut[0].weight.grad).abs().max() / got.abs().max()))
"""


def test_sdim_blocks_survive_onednn_avx2_on_channels_last_inputs():
    # With nn.Conv2d(4, 8, 1, stride=2) here, this child hung or died of heap corruption on an Intel Xeon
    # with oneDNN capped at AVX2, and segfaulted on an AVX2-only AMD EPYC (experiments/onednn_strided_1x1).
    env = {**os.environ, "DNNL_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", AVX2_BLOCK], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert float(done.stdout.split()[-1]) < 1e-4  # and its gradient matches the reference path
