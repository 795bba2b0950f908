"""Warm-up adaptation for gradient samplers, vectorised over chains.

* :class:`DualAveraging`: step-size adaptation of Hoffman & Gelman (2014),
  "The No-U-Turn Sampler", Sec. 3.2.1, Eq. 6 and Algorithm 5, with Stan's
  constants; one independent adaptation per chain, as tensors.
* :class:`WelfordVariance`: running diagonal variance of positions, pooled over
  chains and steps (Welford 1962; Chan, Golub & LeVeque 1979 for merging a
  batch), with Stan's shrinkage, for the diagonal inverse mass matrix.
* :func:`warmup_windows`: Stan's schedule of mass-matrix windows.

Pure tensor operations on the inputs' device; nothing reads a tensor back to
the host, so a warm-up loop never waits on the device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ppl_audit.errors import InvalidInputError

DUAL_AVERAGING_GAMMA = 0.05  # Hoffman & Gelman (2014) / Stan: shrinkage towards mu
DUAL_AVERAGING_T0 = 10.0  # Stan: damps the first iterations of the error average
DUAL_AVERAGING_KAPPA = 0.75  # Stan: decay of the iterate-averaging weight t^-kappa
DUAL_AVERAGING_MU_FACTOR = 10.0  # Stan: mu = log(10 * eps0) biases the search towards larger steps
HMC_TARGET_ACCEPTANCE = 0.8  # Stan's default delta for HMC / NUTS

VARIANCE_SHRINKAGE_COUNT = 5.0  # Stan: var * n/(n+5) + 1e-3 * 5/(n+5) regularises small windows
VARIANCE_SHRINKAGE_TARGET = 1e-3  # Stan: what a variance estimated from few draws shrinks towards

WINDOW_INIT_BUFFER = 75  # Stan: fast step-size-only steps before the first mass-matrix window
WINDOW_TERM_BUFFER = 50  # Stan: fast steps after the last window, to settle the step size
WINDOW_BASE = 25  # Stan: length of the first mass-matrix window; each next one doubles
MIN_WINDOWED_WARMUP = 20  # Stan: below this, adapt the step size only


@dataclass(frozen=True)
class DualAveragingState:
    """Per-chain state of dual averaging; every tensor has shape ``(N,)``.

    ``log_step_size`` is ``x_t`` (the step size to use next), ``log_step_size_avg``
    is ``x-bar_t`` (its weighted average, used after warm-up), ``error_avg`` is
    ``H-bar_t``, ``mu`` the point the iterates shrink towards, ``count`` is ``t``.
    """

    log_step_size: torch.Tensor
    log_step_size_avg: torch.Tensor
    error_avg: torch.Tensor
    mu: torch.Tensor
    count: int = 0

    @property
    def step_size(self) -> torch.Tensor:
        """The step size to use next, ``exp(x_t)``, ``(N,)``."""
        return self.log_step_size.exp()


@dataclass(frozen=True)
class DualAveraging:
    """Dual-averaging step-size adaptation (Hoffman & Gelman 2014, Algorithm 5).

    After observing acceptance ``alpha_t`` at step ``t``::

        H_t   = (1 - 1/(t + t0)) H_{t-1} + (delta - alpha_t) / (t + t0)
        x_t   = mu - sqrt(t) / gamma * H_t
        xbar_t = t^-kappa x_t + (1 - t^-kappa) xbar_{t-1}

    (their Eq. 6 with iterate averaging). Every chain adapts its own step size.

    Parameters
    ----------
    target : float
        Acceptance probability aimed for (``delta``), in ``(0, 1)``.
    gamma, t0, kappa : float
        Stan's constants by default.

    Examples
    --------
    >>> da = DualAveraging(target=0.8)
    >>> s = da.init(torch.ones(3))
    >>> for _ in range(200):
    ...     # a toy sampler whose acceptance falls as the step grows
    ...     s = da.update(s, torch.exp(-s.step_size))
    >>> bool(((da.final(s) - 0.223).abs() < 0.01).all())  # exp(-eps) = 0.8 at eps = 0.223
    True
    """

    target: float = HMC_TARGET_ACCEPTANCE
    gamma: float = DUAL_AVERAGING_GAMMA
    t0: float = DUAL_AVERAGING_T0
    kappa: float = DUAL_AVERAGING_KAPPA

    def __post_init__(self):
        if not 0 < self.target < 1:
            raise InvalidInputError(f"target acceptance must be in (0, 1), got {self.target!r}")
        if not self.gamma > 0:
            raise InvalidInputError(f"gamma must be > 0, got {self.gamma!r}")
        if not self.t0 >= 0:
            raise InvalidInputError(f"t0 must be >= 0, got {self.t0!r}")
        if not 0.5 < self.kappa <= 1:
            raise InvalidInputError(f"kappa must be in (0.5, 1], got {self.kappa!r}")

    def init(self, step_size: torch.Tensor, mu_factor: float = DUAL_AVERAGING_MU_FACTOR) -> DualAveragingState:
        """Start (or restart) from ``step_size`` ``(N,)``, shrinking towards
        ``mu = log(mu_factor * step_size)`` (Stan: ``mu_factor = 10``)."""
        if not mu_factor > 0:
            raise InvalidInputError(f"mu_factor must be > 0, got {mu_factor!r}")
        log_eps = step_size.log()
        return DualAveragingState(
            log_step_size=log_eps,
            log_step_size_avg=torch.zeros_like(log_eps),
            error_avg=torch.zeros_like(log_eps),
            mu=log_eps + math.log(mu_factor),
            count=0,
        )

    def update(self, state: DualAveragingState, acceptance_prob: torch.Tensor) -> DualAveragingState:
        """One step of Algorithm 5 with the acceptance probabilities ``(N,)`` just observed."""
        t = state.count + 1
        eta = 1.0 / (t + self.t0)
        error_avg = (1.0 - eta) * state.error_avg + eta * (self.target - acceptance_prob)
        log_eps = state.mu - math.sqrt(t) / self.gamma * error_avg
        weight = t ** (-self.kappa)
        log_eps_avg = weight * log_eps + (1.0 - weight) * state.log_step_size_avg
        return DualAveragingState(log_eps, log_eps_avg, error_avg, state.mu, t)

    def final(self, state: DualAveragingState) -> torch.Tensor:
        """The averaged step size ``exp(x-bar_t)`` ``(N,)``, to keep after warm-up
        (the current one before any update)."""
        return state.log_step_size_avg.exp() if state.count > 0 else state.step_size


@dataclass(frozen=True)
class WelfordState:
    """Pooled running moments: ``count`` draws, their ``mean`` and sum of squared deviations ``m2`` (``(D,)``)."""

    mean: torch.Tensor
    m2: torch.Tensor
    count: int = 0


@dataclass(frozen=True)
class WelfordVariance:
    """Running diagonal variance of positions, pooled over chains and steps.

    Each :meth:`update` merges a batch ``(N, D)`` (all chains at one step)
    into the running moments with Chan et al.'s pairwise formula, so the
    result equals the sample variance of every draw seen, computed in one pass.

    Parameters
    ----------
    regularize : bool
        Shrink towards ``1e-3`` as Stan does: ``var * n/(n+5) + 1e-3 * 5/(n+5)``;
        negligible for thousands of pooled draws, a safeguard for few.

    Examples
    --------
    >>> w = WelfordVariance(regularize=False)
    >>> s = w.init(2)
    >>> s = w.update(s, torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
    >>> s = w.update(s, torch.tensor([[4.0, 1.0]]))
    >>> w.variance(s).tolist()
    [4.0, 0.0]
    """

    regularize: bool = True

    def init(self, dim: int, *, device=None, dtype=torch.float32) -> WelfordState:
        """Empty moments for ``dim`` coordinates."""
        zeros = torch.zeros(dim, device=device, dtype=dtype)
        return WelfordState(zeros, zeros.clone(), 0)

    def update(self, state: WelfordState, positions: torch.Tensor) -> WelfordState:
        """Merge a batch of draws ``(N, D)`` into the moments."""
        n_b = positions.shape[0]
        if n_b == 0:
            return state
        mean_b = positions.mean(0)
        m2_b = ((positions - mean_b) ** 2).sum(0)
        n_a = state.count
        n = n_a + n_b
        delta = mean_b - state.mean
        mean = state.mean + delta * (n_b / n)
        m2 = state.m2 + m2_b + delta**2 * (n_a * n_b / n)
        return WelfordState(mean, m2, n)

    def variance(self, state: WelfordState) -> torch.Tensor:
        """Sample variance ``(D,)`` (``ddof=1``) of every draw seen, shrunk if ``regularize``.

        Raises
        ------
        InvalidInputError
            With fewer than two draws.
        """
        n = state.count
        if n < 2:
            raise InvalidInputError(f"a variance needs at least 2 draws, got {n}")
        var = state.m2 / (n - 1)
        if self.regularize:
            c = VARIANCE_SHRINKAGE_COUNT
            var = var * (n / (n + c)) + VARIANCE_SHRINKAGE_TARGET * (c / (n + c))
        return var


def warmup_windows(num_warmup: int) -> list[tuple[int, int]]:
    """Stan's mass-matrix adaptation windows ``[start, end)`` within warm-up.

    A fast initial buffer (75 steps) adapts the step size only; then slow
    windows of 25, 50, 100, ... steps each estimate the mass matrix (the last
    stretched to fill); a terminal buffer (50) settles the step size. When
    warm-up is shorter than 150 steps the buffers are 15% and 10% of it; below
    20 steps there are no windows.

    Examples
    --------
    >>> warmup_windows(1000)
    [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    >>> warmup_windows(100)
    [(15, 90)]
    >>> warmup_windows(10)
    []
    """
    if num_warmup < MIN_WINDOWED_WARMUP:
        return []
    init, term, base = WINDOW_INIT_BUFFER, WINDOW_TERM_BUFFER, WINDOW_BASE
    if init + term + base > num_warmup:
        init = int(0.15 * num_warmup)
        term = int(0.1 * num_warmup)
        base = num_warmup - init - term
    end_slow = num_warmup - term
    windows, start, size = [], init, base
    while start < end_slow:
        end = start + size
        if end + 2 * size > end_slow:
            end = end_slow
        windows.append((start, end))
        start, size = end, 2 * size
    return windows


__all__ = [
    "DUAL_AVERAGING_GAMMA",
    "DUAL_AVERAGING_KAPPA",
    "DUAL_AVERAGING_MU_FACTOR",
    "DUAL_AVERAGING_T0",
    "MIN_WINDOWED_WARMUP",
    "HMC_TARGET_ACCEPTANCE",
    "VARIANCE_SHRINKAGE_COUNT",
    "VARIANCE_SHRINKAGE_TARGET",
    "WINDOW_BASE",
    "WINDOW_INIT_BUFFER",
    "WINDOW_TERM_BUFFER",
    "DualAveraging",
    "DualAveragingState",
    "WelfordState",
    "WelfordVariance",
    "warmup_windows",
]
