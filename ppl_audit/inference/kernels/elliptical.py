"""Elliptical slice sampling (Murray, Adams & MacKay 2010) as a pure kernel over a batch of chains.

For a target ``N(u; 0, I) * L(u)``, one step of a chain at ``u``:

1. draws ``nu ~ N(0, I)`` and a slice height ``log y = log L(u) + log U``, ``U ~ U(0, 1)``;
2. proposes ``u cos(theta) + nu sin(theta)`` on the ellipse through ``u`` and ``nu``, at an angle drawn
   from a bracket ``[theta - 2 pi, theta]`` around 0;
3. accepts the first proposal above the slice, shrinking the bracket towards 0 (where the ellipse
   passes through ``u``) after each one below it.

Every step moves, needs no step size, and never evaluates the Gaussian prior: the ellipse keeps it
invariant. Thin level sets cost more proposals per step, not lower acceptance. Only the chains still
searching are evaluated, so a step costs ``sum_i proposals_i`` likelihood evaluations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ppl_audit.inference.kernels.mh import evaluate

# A bracket halves about every proposal, so 60 proposals narrow it to ~2^-60 of the ellipse: a chain
# still below the slice then has a likelihood the float arithmetic cannot resolve, and stays put.
MAX_PROPOSALS = 60

#: ``log_likelihood_fn(position (n, D), index (n,)) -> log L (n,)`` or ``(log L, extras (n, E))``;
#: ``index`` names the chains being evaluated (for per-chain settings such as a temperature).
LogLikelihoodFn = Callable[[torch.Tensor, torch.Tensor], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


@dataclass(frozen=True)
class SliceState:
    """Positions, their log likelihoods and extras (for example the classifier's predictions)."""

    position: torch.Tensor  # (N, D)
    log_likelihood: torch.Tensor  # (N,)
    extras: Optional[torch.Tensor] = None  # (N, E)


@dataclass(frozen=True)
class SliceInfo:
    """What one step reports, per chain."""

    moved: torch.Tensor  # (N,) bool: False only where MAX_PROPOSALS found nothing above the slice
    proposals: torch.Tensor  # (N,) int64: likelihood evaluations the chain made


def step(
    generator: torch.Generator | None,
    state: SliceState,
    log_likelihood_fn: LogLikelihoodFn,
    *,
    max_proposals: int = MAX_PROPOSALS,
) -> tuple[SliceState, SliceInfo]:
    """One elliptical slice step of every chain, leaving ``N(0, I) * L`` invariant.

    Parameters
    ----------
    generator : torch.Generator or None
        Source of randomness (on the position's device).
    state : SliceState
        ``N`` chains; ``log_likelihood`` must be ``log L`` at ``position``.
    log_likelihood_fn : callable
        ``(position (n, D), index (n,)) -> log L (n,)`` or ``(log L, extras)``; ``-inf`` is allowed.
    max_proposals : int
        Proposals per chain at most; a chain that finds nothing above its slice stays put.

    Returns
    -------
    (SliceState, SliceInfo)

    Examples
    --------
    A likelihood that keeps only ``u > 0``: every chain moves and stays inside.

    >>> ll = lambda u, index: torch.where(u[:, 0] > 0, 0.0, -math.inf)
    >>> s = SliceState(torch.ones(6, 2), torch.zeros(6))
    >>> s, info = step(torch.Generator().manual_seed(0), s, ll)
    >>> bool(info.moved.all()), bool((s.position[:, 0] > 0).all())
    (True, True)
    """
    u = state.position
    n, dev, dtype = u.shape[0], u.device, u.dtype
    nu = torch.randn(u.shape, generator=generator, device=dev, dtype=dtype)
    log_y = state.log_likelihood + torch.rand(n, generator=generator, device=dev, dtype=dtype).log()
    theta = torch.rand(n, generator=generator, device=dev, dtype=dtype) * (2 * math.pi)
    low, high = theta - 2 * math.pi, theta.clone()
    position, log_lik = u.clone(), state.log_likelihood.clone()
    extras = state.extras.clone() if state.extras is not None else None
    proposals = torch.zeros(n, device=dev, dtype=torch.long)
    moved = torch.zeros(n, device=dev, dtype=torch.bool)
    searching = torch.arange(n, device=dev)
    for _ in range(max_proposals):
        if searching.numel() == 0:
            break
        angle = theta[searching].unsqueeze(-1)
        candidate = u[searching] * angle.cos() + nu[searching] * angle.sin()
        cand_ll, cand_extras = evaluate(lambda x: log_likelihood_fn(x, searching), candidate)
        proposals[searching] += 1
        above = cand_ll > log_y[searching]
        done = searching[above]
        position[done], log_lik[done], moved[done] = candidate[above], cand_ll[above], True
        if extras is not None and cand_extras is not None:
            extras[done] = cand_extras[above].to(extras.dtype)
        rest, angle = searching[~above], theta[searching][~above]
        low[rest] = torch.where(angle < 0, angle, low[rest])
        high[rest] = torch.where(angle < 0, high[rest], angle)
        width = high[rest] - low[rest]
        theta[rest] = low[rest] + width * torch.rand(rest.shape, generator=generator, device=dev, dtype=dtype)
        searching = rest
    return SliceState(position, log_lik, extras), SliceInfo(moved, proposals)


__all__ = [
    "MAX_PROPOSALS",
    "LogLikelihoodFn",
    "SliceInfo",
    "SliceState",
    "step",
]
