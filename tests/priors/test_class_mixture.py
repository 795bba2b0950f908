"""The class-mixture prior (issue 24, item 1): one generator per class, and each sample's true class."""

from __future__ import annotations

import pytest
import torch

from ppl_audit.errors import InvalidInputError
from ppl_audit.generative.class_generators import ClassGAN
from ppl_audit.priors.class_mixture import CLASS_COORDINATE, ClassMixturePrior

GENERATORS = ClassGAN(classes=4, latent_dim=3, generator_hidden=(8,), critic_hidden=(8,), seed=0)
NAMES = ("a", "b", "c", "d")


def test_each_latent_is_decoded_by_its_own_class_generator():
    prior = ClassMixturePrior(GENERATORS, NAMES, chunk_size=7)  # several chunks, uneven class counts
    z, c = prior.sample_with_class(50, generator=torch.Generator().manual_seed(0))
    images = prior.decode(z)
    with torch.no_grad():
        every = GENERATORS.decode(z[:, 1:].expand(4, -1, -1))  # (4, 50, 1, 28, 28): all classes for each
    assert torch.allclose(images, every[c, torch.arange(50)], atol=1e-6)
    assert prior.latent_names == (CLASS_COORDINATE, "z1", "z2", "z3") and prior.image_shape == (1, 28, 28)


def test_classes_follow_the_weights_and_left_out_classes_never_appear():
    prior = ClassMixturePrior(GENERATORS, NAMES, classes=("d", "a", "c"), weights=(2, 1, 1))
    _, c = prior.sample_with_class(40_000, generator=torch.Generator().manual_seed(1))
    share = torch.bincount(c, minlength=4).double() / len(c)
    # binomial sd of a share at n = 40,000 is at most 0.0025; 4 sd
    assert torch.allclose(share, torch.tensor([0.25, 0.0, 0.25, 0.5], dtype=torch.float64), atol=0.01)
    assert prior.class_weights == {"d": 0.5, "a": 0.25, "c": 0.25}


def test_the_class_posterior_is_the_one_hot_of_the_latents_class():
    prior = ClassMixturePrior(GENERATORS, NAMES, classes=("b", "c"))
    z = prior.sample(200, generator=torch.Generator().manual_seed(2))
    posterior = prior.class_posterior(z)
    assert torch.equal(posterior.argmax(1), prior.class_of(z)) and torch.equal(posterior.sum(1), torch.ones(200))
    assert set(prior.class_of(z).tolist()) == {1, 2}


def test_the_latent_is_standard_normal_and_its_own_normal_transform():
    prior = ClassMixturePrior(GENERATORS, NAMES)
    z = torch.randn(5, 4)
    assert torch.equal(prior.from_normal(z), z)
    assert torch.allclose(prior.log_prob(z), torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1))
    assert prior.normal_dim == 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(class_names=("a", "b", "c")), "one distinct class name per generator: 4 generators"),
    (dict(class_names=("a", "a", "c", "d")), "one distinct class name per generator"),
    (dict(classes=("a", "e")), "missing: ['e']"),
    (dict(classes=()), "must be distinct and each have a generator"),
    (dict(weights=(1, 1, 1)), "weights must be 4 positive finite numbers"),
    (dict(weights=(1, 1, 1, float("nan"))), "weights must be 4 positive finite numbers"),
])
def test_bad_mixtures_are_named(kwargs, message):
    args = {"class_names": NAMES, **kwargs}
    with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ClassMixturePrior(GENERATORS, args.pop("class_names"), **args)


def test_something_that_is_not_a_stack_of_generators_is_refused():
    with pytest.raises(InvalidInputError, match="per-class generators stacked along a class axis"):
        ClassMixturePrior(torch.nn.Linear(2, 2), NAMES)


def test_the_per_class_generator_cards_are_labelled_mnist_worlds():
    from ppl_audit.audits import worlds

    assert {worlds.world_family(w) for w in worlds.CLASS_MIXTURE_PRIORS} == {worlds.MNIST}
    assert set(worlds.CLASS_MIXTURE_PRIORS) <= set(worlds.WORLDS)
