"""Decoder priors: the Prior contract on small random decoders, and the trained MNIST priors (tiny)."""

from __future__ import annotations

import pyro
import pyro.poutine as poutine
import pytest
import torch
from torch import nn
from torch.distributions import Normal

from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.priors import LATENT_SITE, DecoderPrior, Prior
from ppl_audit.training import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def random_decoder(latent_dim=3, flat=False):
    torch.manual_seed(0)
    layers = [nn.Linear(latent_dim, 784), nn.Sigmoid()]
    if not flat:
        layers.append(nn.Unflatten(1, (1, 28, 28)))
    return nn.Sequential(*layers)


@pytest.fixture
def prior():
    return DecoderPrior(random_decoder(), 3)


def test_contract_names_and_shapes(prior):
    assert isinstance(prior, Prior)
    assert prior.latent_names == ("z1", "z2", "z3") and prior.latent_dim == 3
    assert prior.image_shape == (1, 28, 28)
    z = prior.sample(10, generator=torch.Generator().manual_seed(1))
    assert z.shape == (10, 3)
    assert torch.equal(z, prior.sample(10, generator=torch.Generator().manual_seed(1)))
    x = prior.decode(z)
    assert x.shape == (10, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert prior.decode(z[:0]).shape == (0, 1, 28, 28)


def test_log_prob_is_the_exact_standard_normal(prior):
    z = 2 * torch.randn(50, 3)
    expected = Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert torch.allclose(prior.log_prob(z), expected, atol=1e-5)
    assert torch.allclose(prior.distribution().log_prob(z), expected, atol=1e-5)
    assert prior.log_prob(torch.zeros(4, 7, 3)).shape == (4, 7)  # any batch shape


def test_decode_is_chunked_without_changing_results():
    decoder = random_decoder()
    small = DecoderPrior(decoder, 3, chunk_size=7)
    z = torch.randn(30, 3)
    with torch.no_grad():
        assert torch.allclose(small.decode(z), decoder(z))


def test_flat_decoder_output_is_reshaped_and_a_wrong_one_refused():
    assert DecoderPrior(random_decoder(flat=True), 3).decode(torch.zeros(2, 3)).shape == (2, 1, 28, 28)
    with pytest.raises(ModelOutputError, match=r"decoder returned shape \(2, 10\)"):
        DecoderPrior(nn.Linear(3, 10), 3).decode(torch.zeros(2, 3))


def test_gradients_reach_the_latents_but_not_the_decoder(prior):
    z = torch.randn(4, 3, requires_grad=True)
    prior.decode(z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in prior.decoder.parameters())
    assert not prior.decoder.training


def test_pyro_model_has_the_latent_site_and_its_log_prob(prior):
    pyro.clear_param_store()
    trace = poutine.trace(prior.model).get_trace(num_particles=6)
    site = trace.nodes[LATENT_SITE]
    assert site["value"].shape == (6, 3)
    assert torch.allclose(site["fn"].log_prob(site["value"]), prior.log_prob(site["value"]))


@pytest.mark.parametrize("args, message", [
    ((nn.Linear(2, 784), 0), "latent_dim must be a positive integer"),
    ((lambda z: z, 2), "decoder must be a torch.nn.Module"),
])
def test_bad_construction(args, message):
    with pytest.raises(InvalidInputError, match=message):
        DecoderPrior(*args)


@pytest.mark.parametrize("z", [torch.zeros(3), torch.zeros(2, 4), torch.zeros(2, 3, dtype=torch.long)],
                         ids=["unbatched", "wrong-dim", "integer"])
def test_bad_latents(prior, z):
    with pytest.raises(InvalidInputError, match="latents must"):
        prior.decode(z)


@pytest.mark.parametrize("name", ["mnist-vae", "mnist-gan"])
def test_decoder_prior_of_the_tiny_models(name, tiny_mnist_card, tiny_mnist_model, cache_root,
                                               mnist_fixture_dir):
    trained = tiny_mnist_model(name)  # trained once per session
    prior = load_model(tiny_mnist_card(name), cache=cache_root, data_dir=mnist_fixture_dir, device="cpu",
                       kind=("vae", "gan")).model
    assert isinstance(prior, DecoderPrior) and prior.latent_dim == 5 and prior.name == name
    assert prior.weights_path == trained.weights_path
    assert prior.info["recipe_hash"] == trained.card.recipe_hash
    z = prior.sample(9, generator=torch.Generator().manual_seed(0))
    x = prior.decode(z)
    assert x.shape == (9, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    with torch.no_grad():
        assert torch.allclose(x, trained.module.decoder(z), atol=1e-6)
    if name == "mnist-gan":
        assert prior.trained.module.critic(x).shape == (9,)


def test_decoder_prior_refuses_a_classifier_card(tmp_path):
    with pytest.raises(InvalidInputError, match="'mnist-lenet5' is of kind 'lenet-classifier'"):
        load_model("mnist-lenet5", cache=tmp_path, kind=("vae", "gan")).model
    assert not any(tmp_path.iterdir())
