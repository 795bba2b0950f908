"""A normal distribution truncated to ``(low, inf)``.

Pyro ships no truncated normal; this is the short ``TorchDistribution`` the
house/rocket world needs: exact log-density (with the ``log Phi`` normaliser)
and sampling by the inverse CDF, both batched and device-agnostic.
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution, constraints
from torch.distributions.utils import broadcast_all

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_UNIFORM_EPS = 1e-7  # keeps the inverse CDF away from ndtri(1) = inf in float32
_UNIT_TAIL_EPS = 1e-12  # from_uniform's smallest upper-tail mass: u = 1 stays a finite quantile


class LowerTruncatedNormal(TorchDistribution):
    """Normal(loc, scale) conditioned on ``x > low``.

    Parameters
    ----------
    loc, scale : float or torch.Tensor
        Location and scale of the untruncated normal (``scale > 0``).
    low : float, default 0.0
        Lower truncation point.

    Examples
    --------
    >>> d = LowerTruncatedNormal(torch.tensor(10.0), torch.tensor(5.0))
    >>> bool((d.sample((100,)) > 0).all())
    True
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = True

    def __init__(self, loc, scale, low: float = 0.0, validate_args=None):
        self.loc, self.scale = broadcast_all(loc, scale)
        self.low = float(low)
        # log P(X > low) for the untruncated normal: the truncation normaliser.
        alpha = (self.low - self.loc) / self.scale
        self._log_mass = torch.special.log_ndtr(-alpha)
        super().__init__(self.loc.shape, torch.Size(), validate_args=validate_args)

    @constraints.dependent_property
    def support(self):
        return constraints.greater_than(self.low)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(LowerTruncatedNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        new.low = self.low
        new._log_mass = self._log_mass.expand(batch_shape)
        super(LowerTruncatedNormal, new).__init__(batch_shape, torch.Size(), validate_args=False)
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value):
        """Exact log-density; ``-inf`` at or below ``low``."""
        z = (value - self.loc) / self.scale
        logp = -0.5 * z * z - _LOG_SQRT_2PI - self.scale.log() - self._log_mass
        return torch.where(value > self.low, logp, torch.full_like(logp, -math.inf))

    def rsample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None):
        """Draw by the inverse CDF: ``x = loc + scale * ndtri(u)``, ``u`` uniform above ``Phi(alpha)``."""
        shape = self._extended_shape(sample_shape)
        u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device, generator=generator)
        cdf_low = torch.special.ndtr((self.low - self.loc) / self.scale)
        u = cdf_low + (1 - cdf_low) * u
        u = u.clamp(max=1 - _UNIFORM_EPS)
        x = self.loc + self.scale * torch.special.ndtri(u)
        # Rounding can land exactly on the boundary for far-out truncations.
        return x.clamp(min=torch.nextafter(torch.tensor(self.low, dtype=x.dtype), torch.tensor(math.inf, dtype=x.dtype)).item())

    def from_normal(self, u: torch.Tensor) -> torch.Tensor:
        """The quantile at ``Phi(u)``: standard-normal ``u`` to a draw of this distribution.

        Written through the upper tail, ``loc - scale * ndtri(Phi(-u) * P(X > low))`` in float64,
        so that large ``u`` keeps its precision.

        Examples
        --------
        >>> d = LowerTruncatedNormal(torch.tensor(10.0), torch.tensor(5.0))
        >>> float(d.from_normal(torch.tensor(0.0))) > 10.0  # the median lies above the untruncated mean
        True
        """
        dt = torch.float64
        log_q = torch.special.log_ndtr(-u.to(dt)) + self._log_mass.to(dt)
        x = (self.loc.to(dt) - self.scale.to(dt) * torch.special.ndtri(log_q.exp())).to(self.loc.dtype)
        low = torch.nextafter(torch.tensor(self.low, dtype=x.dtype), torch.tensor(math.inf, dtype=x.dtype))
        return x.clamp(min=low.item())

    def from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """The inverse CDF: the quantile at ``u`` in ``[0, 1]``.

        Written through the upper tail, ``loc - scale * ndtri((1 - u) * P(X > low))`` in float64, so
        that quantiles near 1 keep their precision; ``u = 1`` is held at the quantile ``1 - 1e-12``.

        Examples
        --------
        >>> d = LowerTruncatedNormal(torch.tensor(0.0), torch.tensor(1.0))
        >>> round(float(d.from_uniform(torch.tensor(0.5))), 4)  # the half-normal's median
        0.6745
        """
        dt = torch.float64
        upper = (1 - u.to(dt)).clamp(min=_UNIT_TAIL_EPS) * self._log_mass.to(dt).exp()
        x = (self.loc.to(dt) - self.scale.to(dt) * torch.special.ndtri(upper)).to(self.loc.dtype)
        low = torch.nextafter(torch.tensor(self.low, dtype=x.dtype), torch.tensor(math.inf, dtype=x.dtype))
        return x.clamp(min=low.item())

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None):
        with torch.no_grad():
            return self.rsample(sample_shape, generator=generator)

    @property
    def mean(self):
        alpha = (self.low - self.loc) / self.scale
        log_pdf = -0.5 * alpha * alpha - _LOG_SQRT_2PI
        return self.loc + self.scale * torch.exp(log_pdf - self._log_mass)


__all__ = [
    "LowerTruncatedNormal",
]
