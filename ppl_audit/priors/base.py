"""The Prior contract: a generative model of images with a latent site ``"z"``."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import pyro
import torch
from pyro.distributions import TorchDistribution

from ppl_audit.validators import LATENT_SITE, PARTICLE_PLATE  # noqa: F401 - the contract's site names

LOG_2PI = math.log(2 * math.pi)  # normaliser of the standard normal density
UNIT_CUBE_EPS = 1e-12  # faces of the unit cube map to these quantiles: ndtri(0) = -inf would leave z infinite


def standard_normal_log_prob(u: torch.Tensor) -> torch.Tensor:
    """``log N(u; 0, I)`` summed over the last axis.

    Examples
    --------
    >>> round(float(standard_normal_log_prob(torch.zeros(1, 2))), 4)
    -1.8379
    """
    return -0.5 * u.square().sum(-1) - 0.5 * u.shape[-1] * LOG_2PI


def check_unit_cube(u, dim: int, owner: str) -> torch.Tensor:
    """``u`` as a floating tensor ``(N, dim)`` inside ``[0, 1]``, else :class:`~ppl_audit.errors.InvalidInputError`.

    Examples
    --------
    >>> try:
    ...     check_unit_cube(torch.tensor([[0.5, 1.5]]), 2, "Prior")
    ... except ValueError as exc:
    ...     print(exc)
    Prior.from_unit_cube: u leaves the unit cube [0, 1]: 1 of 2 entries outside (e.g. 1.5 at row 0, column 1)
    """
    from ppl_audit.errors import InvalidInputError

    if not isinstance(u, torch.Tensor) or not torch.is_floating_point(u):
        raise InvalidInputError(f"{owner}.from_unit_cube: u must be a floating-point tensor, got {type(u).__name__}")
    if u.ndim != 2 or u.shape[-1] != dim:
        raise InvalidInputError(f"{owner}.from_unit_cube: u must have shape (N, {dim}), got {tuple(u.shape)}")
    outside = ~((u >= 0) & (u <= 1))  # NaN counts as outside
    if outside.any():
        row, col = (int(i) for i in outside.nonzero()[0])
        raise InvalidInputError(f"{owner}.from_unit_cube: u leaves the unit cube [0, 1]: {int(outside.sum())} of "
                                f"{u.numel()} entries outside (e.g. {float(u[row, col]):g} at row {row}, column {col})")
    return u


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

    @property
    def unit_cube_dim(self) -> int:
        """Dimension of the unit cube that :meth:`from_unit_cube` maps to ``z``: :attr:`normal_dim` by default."""
        return self.normal_dim

    def from_unit_cube(self, u: torch.Tensor) -> torch.Tensor:
        """The prior as a transform of the uniform on ``[0, 1]^U``: ``u (N, U) -> z (N, D)``, ``z ~ p(z)`` exactly.

        Nested samplers (dynesty, nautilus) and pocoMC's bounded mode take such a
        "prior transform". The default composes the normal inverse CDF with
        :meth:`from_normal`; priors without one raise ``NotImplementedError``.
        Faces of the cube map to the quantiles at :data:`UNIT_CUBE_EPS` and
        ``1 - UNIT_CUBE_EPS``, so ``z`` stays finite.

        Raises
        ------
        InvalidInputError
            ``u`` is not ``(N, U)``, or has an entry outside ``[0, 1]`` (NaN included).

        Examples
        --------
        >>> from ppl_audit.priors import DecoderPrior
        >>> from torch import nn
        >>> prior = DecoderPrior(nn.Sequential(nn.Linear(2, 784), nn.Sigmoid()), 2)
        >>> prior.from_unit_cube(torch.tensor([[0.5, 0.975]], dtype=torch.float64)).round(decimals=3)
        tensor([[0.0000, 1.9600]], dtype=torch.float64)
        """
        if not self.normal_dim:
            raise NotImplementedError(f"{type(self).__name__} has no unit-cube transform")
        u = check_unit_cube(u, self.unit_cube_dim, type(self).__name__)
        normal = torch.special.ndtri(u.to(torch.float64).clamp(UNIT_CUBE_EPS, 1 - UNIT_CUBE_EPS))
        return self.from_normal(normal.to(u.dtype))

    def model(self, num_particles: int | None = None) -> torch.Tensor:
        """Pyro model: ``z ~ p(z)`` at site ``"z"``, plated over particles if asked."""
        d = self.distribution()
        if num_particles is None:
            return pyro.sample(LATENT_SITE, d)
        with pyro.plate(PARTICLE_PLATE, num_particles):
            return pyro.sample(LATENT_SITE, d)


class StandardNormalPrior(Prior):
    """A prior whose whole latent is ``N(0, I_D)``: its own standard-normal transform, with the exact density.

    Subclasses set :attr:`device` and :attr:`latent_names` and provide :meth:`decode` and
    ``_check_latents(z, batched)`` (raising on a badly shaped or typed latent).
    """

    device: torch.device = torch.device("cpu")

    def _check_latents(self, z: torch.Tensor, *, batched: bool) -> None:
        raise NotImplementedError

    def distribution(self) -> TorchDistribution:
        """``N(0, I_D)`` on :attr:`device`, event shape ``(D,)``."""
        import pyro.distributions as dist

        d = self.latent_dim
        return dist.Normal(torch.zeros(d, device=self.device), torch.ones(d, device=self.device)).to_event(1)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` latents ``(n, D)`` on :attr:`device`, drawn with ``generator`` (on any device) if given."""
        from ppl_audit.errors import InvalidInputError

        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidInputError(f"n must be a non-negative integer, got {n!r}")
        source = generator.device if generator is not None else self.device
        return torch.randn(n, self.latent_dim, generator=generator, device=source).to(self.device)

    @property
    def normal_dim(self) -> int:
        """``D``: the latent already is standard normal."""
        return self.latent_dim

    def from_normal(self, u: torch.Tensor) -> torch.Tensor:
        """The identity: ``z ~ N(0, I_D)`` is its own standard-normal transform."""
        self._check_latents(u, batched=True)
        return u

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Exact ``log N(z; 0, I_D)``, shape ``z.shape[:-1]``, on ``z``'s device."""
        self._check_latents(z, batched=False)
        return standard_normal_log_prob(z)


__all__ = [
    "LATENT_SITE",
    "PARTICLE_PLATE",
    "UNIT_CUBE_EPS",
    "Prior",
    "StandardNormalPrior",
    "check_unit_cube",
    "standard_normal_log_prob",
]
