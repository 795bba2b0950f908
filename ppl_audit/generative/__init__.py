"""Generative networks and their trainers: the MNIST VAE and GAN behind the decoder priors.

Each module defines the networks, a frozen config read from a model card, a
``train_*`` function and a :class:`~ppl_audit.training.Trainer` registered
for its card kind (``vae``, ``gan``). Build or load them with
:func:`ppl_audit.training.load_model`, or as priors with
:func:`ppl_audit.priors.load_decoder_prior`.

Examples
--------
>>> from ppl_audit.generative import VAE
>>> VAE(5, (16,)).decoder(torch.zeros(2, 5)).shape
torch.Size([2, 1, 28, 28])
"""

import torch  # noqa: F401  (used by the docstring example)

from ppl_audit.generative.common import IMAGE_SHAPE, latent_names
from ppl_audit.generative.gan import GAN, Critic, GANConfig, Generator, critic_gap, gradient_penalty, train_gan
from ppl_audit.generative.vae import VAE, VAEConfig, VAEDecoder, VAEEncoder, evaluate_vae, train_vae

__all__ = [
    "GAN",
    "IMAGE_SHAPE",
    "VAE",
    "Critic",
    "GANConfig",
    "Generator",
    "VAEConfig",
    "VAEDecoder",
    "VAEEncoder",
    "critic_gap",
    "evaluate_vae",
    "gradient_penalty",
    "latent_names",
    "train_gan",
    "train_vae",
]
