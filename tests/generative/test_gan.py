"""The GAN: shapes, the gradient penalty on a known answer, both losses on tiny sizes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ppl_audit.cache import load_weights
from ppl_audit.cards import load_card
from ppl_audit.errors import AuditFileError
from ppl_audit.generative import GAN, Critic, Generator, critic_gap, gradient_penalty
from ppl_audit.generative.gan import build_gan
from ppl_audit.training import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_generator_and_critic_shapes_and_range():
    torch.manual_seed(0)
    gen = Generator(5, 4).eval()
    x = gen(3 * torch.randn(40, 5))
    assert x.shape == (40, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert Critic(4)(x).shape == (40,)


def test_gradient_penalty_of_a_linear_critic_is_known():
    # D(x) = w . x has gradient w everywhere, so the penalty is (||w|| - 1)^2 exactly.
    critic = nn.Sequential(nn.Flatten(), nn.Linear(784, 1, bias=False))
    with torch.no_grad():
        critic[1].weight.fill_(0.1)
    penalty = gradient_penalty(critic, torch.rand(5, 1, 28, 28), torch.rand(5, 1, 28, 28),
                               torch.Generator().manual_seed(0))
    assert math.isclose(float(penalty.detach()), (0.1 * math.sqrt(784) - 1) ** 2, rel_tol=1e-5)


def test_state_dict_holds_generator_and_critic():
    keys = GAN(5, 4).state_dict()
    assert {k.split(".")[0] for k in keys} == {"generator", "critic"}


def test_critic_gap_is_real_minus_generated():
    out = critic_gap(GAN(5, 4), torch.rand(7, 1, 28, 28))
    assert math.isclose(out["critic_gap"], out["critic_score_real"] - out["critic_score_generated"])


@pytest.mark.parametrize("override, message", [
    ({"training": {"loss": "lsgan"}}, "loss must be one of"),
    ({"training": {"loss": "dcgan", "critic_steps": 5}}, "critic_steps must be 1 with loss = 'dcgan'"),
    ({"training": {"beta1": 1.0}}, r"beta1 must be a number in \[0, 1\)"),
    ({"architecture": {"latent_dim": 0}}, "latent_dim must be a positive integer"),
])
def test_card_values_are_checked(override, message):
    with pytest.raises(AuditFileError, match=message):
        build_gan(load_card("mnist-gan").with_overrides(**override))


def test_tiny_wgan_gp_trains_and_stores_both_networks(tiny_mnist_model):
    trained = tiny_mnist_model("mnist-gan")
    metrics = trained.metrics
    assert metrics["generator_steps"] == 1  # 2 critic batches of 25, one generator step per 2
    assert math.isfinite(metrics["test_critic_gap"])
    keys = set(load_weights(trained.weights_path)[0])
    assert any(k.startswith("generator.") for k in keys) and any(k.startswith("critic.") for k in keys)
    assert "gradient penalty" in trained.info["history"]["panels"]
    x = trained.module.decoder(torch.randn(2, 5))
    assert x.shape == (2, 1, 28, 28)


def test_tiny_dcgan_trains(tiny_mnist_card, mnist_fixture_dir, tmp_path):
    card = tiny_mnist_card("mnist-gan", training={"loss": "dcgan", "critic_steps": 1})
    trained = load_model(card, cache=tmp_path, data_dir=mnist_fixture_dir, device="cpu")
    assert trained.metrics["generator_steps"] == 2
    assert set(trained.info["history"]["panels"]) == {"discriminator loss (BCE)",
                                                      "generator loss (non-saturating BCE)"}
