"""Generative networks and their trainers: VAE, WGAN-GP, GWIN and the OoD ensembles.

Each module defines the networks, a frozen config read from a model card, a
``train_*`` function and a :class:`~ppl_audit.training.Trainer` registered
for its card kind (``vae``, ``gan``, ``gwin``, ``vae-ensemble``, ``gan-ensemble``; the per-class
generators' ``class-vae`` and ``class-gan`` in :mod:`~ppl_audit.generative.class_members`). Build or load them with
:func:`ppl_audit.training.load_model`, or as priors with
``load_model(card).model`` (:func:`ppl_audit.priors.decoder_prior`).

Examples
--------
>>> import torch
>>> from ppl_audit.generative import VAE
>>> VAE(5, (16,)).decoder(torch.zeros(2, 5)).shape
torch.Size([2, 1, 28, 28])
"""

from ppl_audit.generative.common import IMAGE_SHAPE, latent_names
from ppl_audit.generative.gan import GAN, Critic, GANConfig, Generator, critic_gap, gradient_penalty, train_gan
from ppl_audit.generative.vae import VAE, VAEConfig, VAEDecoder, VAEEncoder, evaluate_vae, train_vae
from ppl_audit.generative.gwin import (
    GWIN,
    ConditionalGenerator,
    GWINConfig,
    LabelCritic,
    conditional_gradient_penalty,
    rejection_check,
    train_gwin,
)

from ppl_audit.generative.gan_ensemble import GANEnsemble, train_gan_ensemble
from ppl_audit.generative.vae_ensemble import VAEEnsemble, train_vae_ensemble

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
    # GWIN (ppl_audit.generative.gwin)
    "GWIN",
    "ConditionalGenerator",
    "GWINConfig",
    "LabelCritic",
    "conditional_gradient_penalty",
    "rejection_check",
    "train_gwin",
    # OoD ensembles
    "GANEnsemble",
    "VAEEnsemble",
    "train_gan_ensemble",
    "train_vae_ensemble",
]
