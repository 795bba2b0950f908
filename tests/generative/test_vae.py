"""The VAE: shapes, ranges and the ELBO's terms on known answers; a tiny trained model."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import ContinuousBernoulli, Normal, kl_divergence

from ppl_audit.cache import load_weights
from ppl_audit.cards import load_card
from ppl_audit.errors import AuditFileError
from ppl_audit.generative import VAE, VAEDecoder, evaluate_vae
from ppl_audit.generative.vae import build_vae

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def vae():
    torch.manual_seed(0)
    return VAE(latent_dim=5, hidden=(32, 16)).eval()


def test_encoder_and_decoder_shapes_and_ranges(vae):
    mean, log_var = vae.encoder(torch.rand(6, 1, 28, 28))
    assert mean.shape == log_var.shape == (6, 5)
    x = vae.decoder(3 * torch.randn(50, 5))
    assert x.shape == (50, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1


def test_elbo_is_reconstruction_minus_closed_form_kl(vae):
    x = torch.rand(4, 1, 28, 28)
    log_lik, kl = vae.elbo_terms(x, torch.Generator().manual_seed(0))
    mean, log_var = vae.encoder(x)
    expected_kl = kl_divergence(Normal(mean, (0.5 * log_var).exp()), Normal(0.0, 1.0))
    assert torch.allclose(kl, expected_kl, atol=1e-5)
    elbo = vae.elbo(x, torch.Generator().manual_seed(0))
    assert torch.allclose(elbo, log_lik - kl.sum(-1))
    # Bernoulli log-likelihood at the decoded mean of the noiseless code, by hand.
    p = vae.decoder(mean)
    by_hand = (x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(-1)
    assert torch.allclose(vae.decoder.log_likelihood(x, mean), by_hand, atol=1e-3)


def test_continuous_bernoulli_decoder_returns_the_distribution_mean():
    torch.manual_seed(0)
    decoder = VAEDecoder(3, (16,), likelihood="continuous-bernoulli")
    z, x = torch.randn(4, 3), torch.rand(4, 1, 28, 28)
    cb = ContinuousBernoulli(logits=decoder.logits(z))
    assert torch.allclose(decoder(z), cb.mean)
    assert torch.allclose(decoder.log_likelihood(x, z), cb.log_prob(x).flatten(1).sum(-1))


def test_evaluate_is_seeded_and_counts_active_latents(vae):
    x = torch.rand(20, 1, 28, 28)
    a, b = evaluate_vae(vae, x), evaluate_vae(vae, x)
    assert a == b
    assert math.isclose(a["elbo_nats"], a["reconstruction_nats"] - a["kl_nats"], rel_tol=1e-9)
    assert 0 <= a["active_latent_dims"] <= 5


def test_card_values_are_checked():
    with pytest.raises(AuditFileError, match="likelihood must be one of"):
        build_vae(load_card("mnist-vae").with_overrides(architecture={"likelihood": "gaussian"}))
    assert build_vae(load_card("mnist-vae")).latent_dim == 5


def test_tiny_vae_trains_and_caches(tiny_mnist_model):
    trained = tiny_mnist_model("mnist-vae")
    metrics = trained.metrics
    assert set(metrics) >= {"test_elbo_nats", "test_reconstruction_nats", "test_kl_nats", "active_latent_dims",
                            "train_elbo_nats", "seconds"}
    assert -784 * math.log(2) * 2 < metrics["test_elbo_nats"] < 0  # finite nats, worse than nothing is odd
    assert math.isclose(metrics["test_elbo_nats"],
                        metrics["test_reconstruction_nats"] - metrics["test_kl_nats"], rel_tol=1e-9)
    decoder = trained.module.decoder
    x = decoder(torch.randn(3, 5))
    assert x.shape == (3, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    keys = set(load_weights(trained.weights_path)[0])
    assert any(k.startswith("encoder.") for k in keys) and any(k.startswith("decoder.") for k in keys)
