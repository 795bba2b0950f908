"""Decoder priors: a standard normal latent pushed through a trained decoder (VAE or GAN).

Generative process (the level-set paper's MNIST priors, Booth et al.)::

    z ~ N(0, I_D)            latent site "z", coordinates z1 .. zD
    x = decoder(z)           images (N, 1, 28, 28) in [0, 1]

``log_prob`` is the exact standard normal log-density of ``z``; the decoder
is deterministic, so a level set over ``x`` is sampled in ``z`` and the
decoder is part of the classifier's input map, differentiable for gradient
samplers and evaluated in chunks for throughput.

Examples
--------
>>> from torch import nn
>>> decoder = nn.Sequential(nn.Linear(2, 784), nn.Sigmoid())
>>> prior = DecoderPrior(decoder, 2)
>>> prior.latent_names, prior.decode(prior.sample(3, generator=torch.Generator().manual_seed(0))).shape
(('z1', 'z2'), torch.Size([3, 1, 28, 28]))
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ppl_audit._device import resolve_device
from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.priors.base import StandardNormalPrior

DEFAULT_IMAGE_SHAPE = (1, 28, 28)  # MNIST's (C, H, W): the shape of every shipped decoder's images
DECODER_KINDS = ("vae", "gan")  # model-card kinds whose module has a .decoder and a .latent_dim
DEFAULT_CHUNK_SIZE = 256  # latents per decoder pass: the classifiers' measured sweet spot on a 2-core CPU


class DecoderPrior(StandardNormalPrior):
    """A :class:`~ppl_audit.priors.base.Prior` ``z ~ N(0, I_D)``, ``x = decoder(z)``.

    Parameters
    ----------
    decoder : torch.nn.Module
        Maps latents ``(N, D)`` to images in ``[0, 1]``, shaped ``(N, *image_shape)``
        or flat ``(N, C*H*W)`` (reshaped). It is put in eval mode and its
        parameters are frozen (``requires_grad_(False)``); it follows the
        latents' device.
    latent_dim : int
        ``D``; the latents are named ``z1`` .. ``zD``.
    image_shape : (int, int, int)
        ``(C, H, W)`` of decoded images.
    device : str or torch.device, optional
        Where the prior's distribution lives and :meth:`sample` draws (default:
        the decoder's device, else the CPU); the decoder is moved there.
    chunk_size : int
        Latents decoded per forward pass.

    Examples
    --------
    >>> from torch import nn
    >>> prior = DecoderPrior(nn.Sequential(nn.Linear(3, 784), nn.Sigmoid()), 3)
    >>> z = torch.zeros(2, 3)
    >>> torch.allclose(prior.log_prob(z), torch.distributions.Normal(0., 1.).log_prob(z).sum(-1))
    True
    """

    def __init__(
        self,
        decoder: nn.Module,
        latent_dim: int,
        *,
        image_shape: Sequence[int] = DEFAULT_IMAGE_SHAPE,
        device=None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ):
        if not isinstance(decoder, nn.Module):
            raise InvalidInputError(f"decoder must be a torch.nn.Module, got {type(decoder).__name__}")
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise InvalidInputError(f"latent_dim must be a positive integer, got {latent_dim!r}")
        image_shape = tuple(image_shape)
        if len(image_shape) != 3 or not all(isinstance(s, int) and s > 0 for s in image_shape):
            raise InvalidInputError(f"image_shape must be three positive integers (C, H, W), got {image_shape!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise InvalidInputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        first = next(decoder.parameters(), None)
        if device is None:
            self.device = first.device if first is not None else torch.device("cpu")
        else:
            self.device = resolve_device(device)
        self.decoder = decoder.to(self.device).eval().requires_grad_(False)
        self.latent_names = tuple(f"z{i + 1}" for i in range(latent_dim))
        self.image_shape = image_shape
        self.chunk_size = chunk_size

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``(N, C, H, W)`` of latents ``(N, D)``, on ``z``'s device, differentiable in ``z``."""
        self._check_latents(z, batched=True)
        first = next(self.decoder.parameters(), None)
        if first is not None and first.device != z.device:
            self.decoder.to(z.device)
        n = z.shape[0]
        if n == 0:
            return z.new_zeros((0, *self.image_shape))
        chunks = [self._decode_chunk(c) for c in z.split(self.chunk_size)]
        return torch.cat(chunks) if len(chunks) > 1 else chunks[0]

    def _decode_chunk(self, z: torch.Tensor) -> torch.Tensor:
        x = self.decoder(z)
        if tuple(x.shape[1:]) != self.image_shape:
            if x.ndim >= 2 and x.shape[0] == z.shape[0] and x[0].numel() == math.prod(self.image_shape):
                return x.reshape(z.shape[0], *self.image_shape)
            raise ModelOutputError(
                f"decoder returned shape {tuple(x.shape)} for {z.shape[0]} latents; expected "
                f"({z.shape[0]}, {', '.join(map(str, self.image_shape))})"
            )
        return x

    def _check_latents(self, z: torch.Tensor, *, batched: bool) -> None:
        if not isinstance(z, torch.Tensor) or not torch.is_floating_point(z):
            raise InvalidInputError(f"latents must be a floating-point tensor, got {type(z).__name__}")
        if z.ndim < 1 or z.shape[-1] != self.latent_dim or (batched and z.ndim != 2):
            shape = "(N, D)" if batched else "(..., D)"
            raise InvalidInputError(f"latents must have shape {shape} with D = {self.latent_dim}, got {tuple(z.shape)}")

    def __repr__(self) -> str:
        name = getattr(self, "name", None) or type(self.decoder).__name__
        return f"DecoderPrior({name}, latent_dim={self.latent_dim}, image_shape={self.image_shape}, device={self.device})"


def decoder_prior(trained) -> DecoderPrior:
    """The prior of a loaded VAE or GAN: its decoder (generator) over a standard-normal latent.

    The ``wrap`` of the ``vae`` and ``gan`` trainers, so that
    ``load_model("mnist-vae").model`` is this prior; it is named after the
    card and lives where the module does.

    Examples
    --------
    >>> prior = load_model("mnist-vae", data_dir="/path/to/data").model  # doctest: +SKIP
    >>> prior.decode(prior.sample(4)).shape  # doctest: +SKIP
    torch.Size([4, 1, 28, 28])
    """
    module = trained.module
    device = next(module.decoder.parameters()).device
    prior = DecoderPrior(module.decoder, module.latent_dim, device=device)
    prior.name = trained.card.name
    return prior


__all__ = ["DECODER_KINDS", "DEFAULT_IMAGE_SHAPE", "DecoderPrior", "decoder_prior"]
