"""The Prior contract: a generative model of images with a latent site ``"z"``."""

from __future__ import annotations

from abc import ABC, abstractmethod

import pyro
import torch
from pyro.distributions import TorchDistribution

LATENT_SITE = "z"  # name of the latent sample site in every prior's Pyro model
PARTICLE_PLATE = "particles"  # name of the plate over independent particles / chains


class Prior(ABC):
    """A generative prior ``z ~ p(z)``, ``x = decode(z)``.

    Subclasses provide :meth:`distribution` (event shape ``(D,)``) and
    :meth:`decode`; sampling, the log-density and the Pyro model follow.
    Images are float32 in ``[0, 1]`` shaped ``(N, C, H, W)``.
    """

    #: names of the ``D`` latent coordinates, in order
    latent_names: tuple[str, ...] = ()
    #: ``(C, H, W)`` of decoded images
    image_shape: tuple[int, int, int] = (1, 1, 1)

    @property
    def latent_dim(self) -> int:
        """Number of latent coordinates ``D``."""
        return len(self.latent_names)

    @abstractmethod
    def distribution(self) -> TorchDistribution:
        """The prior over ``z`` as a Pyro distribution with event shape ``(D,)``."""

    @abstractmethod
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Map latents ``(N, D)`` to images ``(N, C, H, W)`` on ``z``'s device."""

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``n`` latents, shape ``(n, D)``."""
        return self.distribution().sample((n,), generator=generator)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Log prior density of latents ``(N, D)``, shape ``(N,)``."""
        return self.distribution().log_prob(z)

    #: dimension ``U`` of the standard normal that :meth:`from_normal` maps to ``z``; 0 if it has none
    normal_dim: int = 0

    def from_normal(self, u: torch.Tensor) -> torch.Tensor:
        """The prior as a transform of ``N(0, I_U)``: ``u (N, U) -> z (N, D)``, ``z ~ p(z)`` exactly.

        Samplers that move in ``u`` see an unbounded, whitened prior instead of boxes,
        truncations and mixtures. Priors that have one set :attr:`normal_dim`.
        """
        raise NotImplementedError(f"{type(self).__name__} has no standard-normal transform")

    def model(self, num_particles: int | None = None) -> torch.Tensor:
        """Pyro model: ``z ~ p(z)`` at site ``"z"``, plated over particles if asked."""
        d = self.distribution()
        if num_particles is None:
            return pyro.sample(LATENT_SITE, d)
        with pyro.plate(PARTICLE_PLATE, num_particles):
            return pyro.sample(LATENT_SITE, d)
