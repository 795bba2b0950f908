"""Stand-ins for the MNIST models: a tiny random decoder prior and a tiny 10-class classifier.

The audits are tested on these rather than on the trained VAE/GAN and LeNet-5:
tests need models with the right contract (5-d standard normal latent,
``(N, 1, 28, 28)`` images in ``[0, 1]``, classes ``"0"`` .. ``"9"``), not
trained ones, and nothing here reads MNIST.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ppl_audit.classifiers import TorchClassifier
from ppl_audit.priors import DecoderPrior

STAND_IN_LATENT_DIM = 5  # the paper's MNIST priors have a 5-d latent
MNIST_CLASSES = tuple(str(d) for d in range(10))


def tiny_decoder(seed: int) -> nn.Module:
    """A random MLP from 5-d latents to 28 x 28 images in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(STAND_IN_LATENT_DIM, 32), nn.Tanh(), nn.Linear(32, 28 * 28), nn.Sigmoid(),
                        nn.Unflatten(1, (1, 28, 28)))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return net.eval()


def tiny_mnist_classifier_module(seed: int = 99) -> nn.Module:
    """A random linear 10-class classifier whose logits vary by a few units over the stand-in images."""
    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.AvgPool2d(4), nn.Flatten(), nn.Linear(49, 10))
    with torch.no_grad():
        net[2].weight.copy_(torch.randn(10, 49, generator=gen) * 0.6)
        net[2].bias.zero_()
    return net.eval()


@pytest.fixture(scope="session")
def mnist_priors():
    """Stand-ins for ``mnist-vae`` and ``mnist-gan``: two random decoders wrapped in DecoderPrior."""
    return {"mnist-vae": DecoderPrior(tiny_decoder(1), STAND_IN_LATENT_DIM),
            "mnist-gan": DecoderPrior(tiny_decoder(2), STAND_IN_LATENT_DIM)}


@pytest.fixture(scope="session")
def mnist_classifier():
    """Stand-in for ``load_model("mnist-lenet5").model``: a tiny TorchClassifier with classes "0" .. "9"."""
    return TorchClassifier(tiny_mnist_classifier_module(), MNIST_CLASSES)
