"""Gaussian mixtures fitted to weighted particles, batched over independent groups.

The independent Metropolis-Hastings moves of the SMC sampler propose from a
mixture fitted to each run's own particles (South, Pettitt & Drovandi 2019,
"Sequential Monte Carlo samplers with independent Markov chain Monte Carlo
proposals"). This module fits, samples and evaluates ``R`` such mixtures at
once: ``R`` groups of ``M`` points in ``D`` dimensions, ``K`` full-covariance
components each, with no Python loop over groups or components.

The fit is weighted expectation-maximisation started from ``K`` means seeded
by weighted k-means++. Each covariance gets a ridge of
:data:`RIDGE_FRACTION` times its group's per-dimension variance (so duplicated
particles, which resampling makes, never give a singular component), and is
then widened by ``inflation ** 2``: a proposal a little wider than its target
has bounded importance ratios in the target's tails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ppl_audit.errors import InvalidInputError

RIDGE_FRACTION = 1e-3  # covariance ridge, as a fraction of the group's per-dimension variance
MIN_VARIANCE = 1e-12  # floor of a group's per-dimension variance (a group of identical points)
EM_ITERATIONS = 20  # enough to settle a handful of components in a few dimensions
DEFENSIVE_SCALE = 2.0  # the defensive component's covariance is the group's, times this squared


@dataclass(frozen=True)
class GaussianMixture:
    """``R`` Gaussian mixtures of ``K`` full-covariance components in ``D`` dimensions."""

    log_weights: torch.Tensor  # (R, K), normalised
    means: torch.Tensor  # (R, K, D)
    scale_tril: torch.Tensor  # (R, K, D, D), lower Cholesky factors of the covariances

    @property
    def num_groups(self) -> int:
        return self.means.shape[0]

    def log_prob(self, x: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """Log density of each point under the mixture of its group.

        Parameters
        ----------
        x : torch.Tensor, (N, D)
        group : torch.Tensor, (N,), int64
            Which of the ``R`` mixtures each point is scored by.

        Returns
        -------
        torch.Tensor, (N,)
        """
        comp = _component_log_prob(x.unsqueeze(0), self.means[group].unsqueeze(0), self.scale_tril[group].unsqueeze(0))
        return torch.logsumexp(self.log_weights[group] + comp.squeeze(0), dim=-1)

    def sample(self, generator: torch.Generator | None, group: torch.Tensor) -> torch.Tensor:
        """One draw from the mixture of each entry of ``group``, ``(N, D)``.

        Examples
        --------
        >>> mix = fit(torch.randn(2, 500, 3, generator=torch.Generator().manual_seed(0)), num_components=2,
        ...           generator=torch.Generator().manual_seed(1))
        >>> mix.sample(torch.Generator().manual_seed(2), torch.tensor([0, 1, 1])).shape
        torch.Size([3, 3])
        """
        d = self.means.shape[-1]
        comp = torch.multinomial(self.log_weights[group].exp(), 1, generator=generator).squeeze(-1)  # (N,)
        eps = torch.randn((group.shape[0], d, 1), generator=generator, device=self.means.device, dtype=self.means.dtype)
        return self.means[group, comp] + (self.scale_tril[group, comp] @ eps).squeeze(-1)


def _component_log_prob(x: torch.Tensor, means: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """``log N(x_rm | mu_rk, Sigma_rk)`` for every point and component, ``(R, M, K)``.

    ``means`` is ``(R, K, D)`` or per point ``(R, M, K, D)``; ``scale_tril`` likewise with ``(D, D)``.
    """
    d = x.shape[-1]
    if means.ndim == 3:
        means, scale_tril = means.unsqueeze(1), scale_tril.unsqueeze(1)
    diff = (x.unsqueeze(2) - means).unsqueeze(-1)  # (R, M, K, D, 1)
    tril = scale_tril.expand(*diff.shape[:3], d, d)
    white = torch.linalg.solve_triangular(tril, diff, upper=False).squeeze(-1)  # (R, M, K, D)
    log_det = scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (R, 1 or M, K)
    return -0.5 * (white**2).sum(-1) - log_det - 0.5 * d * math.log(2 * math.pi)


def _kmeans_plus_plus(x, w, var_all, k, generator):
    """``K`` starting means per group: k-means++ seeding (Arthur & Vassilvitskii 2007)
    with point weights, distances in units of the group's per-dimension sd."""
    r, m, d = x.shape
    scaled = x / var_all.sqrt().unsqueeze(1)
    first = torch.multinomial(w, 1, generator=generator)  # (R, 1)
    chosen = [torch.gather(scaled, 1, first.unsqueeze(-1).expand(r, 1, d))]
    nearest = ((scaled - chosen[0]) ** 2).sum(-1)  # (R, M)
    for _ in range(1, k):  # K is a handful; groups and points stay batched
        p = w * nearest
        p = torch.where(p.sum(1, keepdim=True) > 0, p, w)  # every point already a centre: fall back to w
        nxt = torch.multinomial(p, 1, generator=generator)
        centre = torch.gather(scaled, 1, nxt.unsqueeze(-1).expand(r, 1, d))
        chosen.append(centre)
        nearest = torch.minimum(nearest, ((scaled - centre) ** 2).sum(-1))
    return torch.cat(chosen, dim=1) * var_all.sqrt().unsqueeze(1)


def _check_fit_arguments(x: torch.Tensor, num_components, inflation) -> None:
    if x.ndim != 3:
        raise InvalidInputError(f"points must have shape (groups, points, D), got {tuple(x.shape)}")
    if isinstance(num_components, bool) or not isinstance(num_components, int) or num_components <= 0:
        raise InvalidInputError(f"num_components must be a positive integer, got {num_components!r}")
    if not inflation >= 1.0:
        raise InvalidInputError(f"inflation must be >= 1, got {inflation!r}")


def _em(x, w, var_all, ridge, means, iterations: int):
    """``iterations`` steps of weighted EM from ``means`` (R, K, D): ``(log mixture weights, means, covariances)``."""
    r, _, d = x.shape
    k = means.shape[1]
    # Each start covers 1/K of the group's volume, so that the components begin apart.
    cov = torch.diag_embed(var_all * k ** (-2.0 / d)).unsqueeze(1).expand(r, k, d, d)
    log_mix = torch.full((r, k), -math.log(k), device=x.device, dtype=x.dtype)
    for _ in range(iterations):
        tril = torch.linalg.cholesky(cov)
        log_resp = log_mix.unsqueeze(1) + _component_log_prob(x, means, tril)  # (R, M, K)
        resp = torch.softmax(log_resp, dim=-1) * w.unsqueeze(-1)  # weighted responsibilities, sum to 1 per group
        nk = resp.sum(1).clamp(min=torch.finfo(x.dtype).tiny)  # (R, K)
        means = (resp.unsqueeze(-1) * x.unsqueeze(2)).sum(1) / nk.unsqueeze(-1)
        centred = x.unsqueeze(2) - means.unsqueeze(1)  # (R, M, K, D)
        cov = torch.einsum("rmk,rmki,rmkj->rkij", resp, centred, centred) / nk[..., None, None] + ridge
        log_mix = nk.log() - nk.sum(-1, keepdim=True).log()
    return log_mix, means, cov


def _with_defensive(mix: GaussianMixture, x, w, mean_all, ridge, weight: float, scale: float) -> GaussianMixture:
    """``mix`` with one more component of weight ``weight``: the group's own mean and covariance,
    its scale widened ``scale`` times (a proposal that covers where the fitted components are thin)."""
    r = x.shape[0]
    centred = x - mean_all
    cov_all = torch.einsum("rm,rmi,rmj->rij", w, centred, centred) + ridge.squeeze(1)
    wide = torch.linalg.cholesky(cov_all).unsqueeze(1) * scale
    log_mix = torch.cat([mix.log_weights + math.log1p(-weight),
                         torch.full((r, 1), math.log(weight), device=x.device, dtype=x.dtype)], dim=1)
    return GaussianMixture(log_mix, torch.cat([mix.means, mean_all], dim=1), torch.cat([mix.scale_tril, wide], dim=1))


def fit(
    x: torch.Tensor,
    log_weights: torch.Tensor | None = None,
    *,
    num_components: int = 4,
    inflation: float = 1.0,
    iterations: int = EM_ITERATIONS,
    defensive_weight: float = 0.0,
    defensive_scale: float = DEFENSIVE_SCALE,
    generator: torch.Generator | None = None,
) -> GaussianMixture:
    """Fit one Gaussian mixture to each group of weighted points by EM.

    Parameters
    ----------
    x : torch.Tensor, (R, M, D)
        ``R`` groups of ``M`` points.
    log_weights : torch.Tensor, (R, M), optional
        Unnormalised log weights of the points (``-inf`` = weight 0); equal by default.
    num_components : int
        ``K`` (> 0). A component that loses its points keeps a tiny weight and
        its ridge, never NaN.
    inflation : float
        Every covariance is multiplied by ``inflation ** 2`` after the fit (>= 1).
    iterations : int
        EM iterations (> 0).
    generator : torch.Generator, optional
        Picks the starting means.

    Returns
    -------
    GaussianMixture

    Examples
    --------
    Two well-separated clusters are found:

    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.cat([torch.randn(1, 300, 1, generator=g) - 5, torch.randn(1, 300, 1, generator=g) + 5], dim=1)
    >>> mix = fit(x, num_components=2, generator=g)
    >>> sorted(round(v) for v in mix.means.flatten().tolist())
    [-5, 5]
    """
    _check_fit_arguments(x, num_components, inflation)
    r, m, _ = x.shape
    if log_weights is None:
        log_weights = torch.zeros(r, m, device=x.device, dtype=x.dtype)
    w = torch.softmax(log_weights.to(x.dtype), dim=1)  # (R, M)
    mean_all = (w.unsqueeze(-1) * x).sum(1, keepdim=True)
    var_all = (w.unsqueeze(-1) * (x - mean_all) ** 2).sum(1).clamp(min=MIN_VARIANCE)  # (R, D)
    ridge = torch.diag_embed(RIDGE_FRACTION * var_all).unsqueeze(1)  # (R, 1, D, D)
    means = _kmeans_plus_plus(x, w, var_all, num_components, generator)
    log_mix, means, cov = _em(x, w, var_all, ridge, means, iterations)
    tril = torch.linalg.cholesky(cov) * inflation
    if defensive_weight > 0:
        return _with_defensive(GaussianMixture(log_mix, means, tril), x, w, mean_all, ridge, defensive_weight,
                               defensive_scale)
    return GaussianMixture(log_mix, means, tril)


__all__ = [
    "DEFENSIVE_SCALE",
    "EM_ITERATIONS",
    "MIN_VARIANCE",
    "RIDGE_FRACTION",
    "GaussianMixture",
    "fit",
]
