"""Random-walk Metropolis-Hastings as a pure kernel over a batch of chains.

After BlackJAX: :func:`init` builds the state, :func:`step` advances every
chain by one proposal in a single batched call of the log density. The
driver (:mod:`ppl_audit.inference.mcmc`) owns warm-up and adaptation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ppl_audit.errors import InvalidInputError, ModelOutputError

#: ``log_density_fn(position (N, D)) -> log density (N,)``, or ``(log density, extras (N, E))``
LogDensityFn = Callable[[torch.Tensor], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]


@dataclass(frozen=True)
class MHState:
    """What persists between steps: positions, their log densities and extras
    (for example the classifier's predictions at each position)."""

    position: torch.Tensor  # (N, D)
    log_density: torch.Tensor  # (N,)
    extras: Optional[torch.Tensor] = None  # (N, E)


@dataclass(frozen=True)
class MHInfo:
    """What one step reports, per chain."""

    accepted: torch.Tensor  # (N,) bool
    proposal_log_density: torch.Tensor  # (N,)


def evaluate(log_density_fn: LogDensityFn, position: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Call ``log_density_fn`` and check its output.

    Raises
    ------
    ModelOutputError
        If any log density is NaN or +inf (``-inf``, zero density, is allowed).
    """
    out = log_density_fn(position)
    logp, extras = out if isinstance(out, tuple) else (out, None)
    if logp.shape != position.shape[:1]:
        raise ModelOutputError(f"log density has shape {tuple(logp.shape)}, expected ({position.shape[0]},)")
    bad = torch.isnan(logp) | (logp == float("inf"))
    if bad.any():
        kind = "NaN" if torch.isnan(logp).any() else "+inf"
        raise ModelOutputError(f"log density returned {kind} for {int(bad.sum())} of {logp.numel()} chains")
    return logp, extras


def check_position(position: torch.Tensor) -> None:
    """Raise :class:`InvalidInputError` unless ``position`` is a finite ``(chains, D)`` batch, chains >= 1."""
    if position.ndim != 2:
        raise InvalidInputError(f"position must have shape (chains, D), got {tuple(position.shape)}")
    if position.shape[0] <= 0:
        raise InvalidInputError("need at least one chain")
    if not torch.isfinite(position).all():
        raise InvalidInputError("initial position has non-finite entries")


def init(position: torch.Tensor, log_density_fn: LogDensityFn) -> MHState:
    """Initial state of ``N`` chains at ``position`` ``(N, D)``.

    Examples
    --------
    >>> s = init(torch.ones(4, 2), lambda z: -0.5 * (z ** 2).sum(-1))
    >>> s.log_density.tolist()
    [-1.0, -1.0, -1.0, -1.0]
    """
    check_position(position)
    logp, extras = evaluate(log_density_fn, position)
    return MHState(position, logp, extras)


def step(
    generator: torch.Generator | None,
    state: MHState,
    log_density_fn: LogDensityFn,
    *,
    scale: torch.Tensor,
) -> tuple[MHState, MHInfo]:
    """One Gaussian random-walk proposal per chain, accepted with probability
    ``min(1, p(z') / p(z))``.

    Parameters
    ----------
    generator : torch.Generator or None
        Source of randomness (on the position's device).
    state : MHState
    log_density_fn : callable
    scale : torch.Tensor
        Proposal standard deviations, broadcastable to ``(N, D)`` (> 0), or each chain's
        ``(N, D, D)`` lower-triangular factor ``L`` of a proposal covariance ``L L^T``.

    Returns
    -------
    (MHState, MHInfo)

    Examples
    --------
    >>> s = init(torch.zeros(8, 1), lambda z: -0.5 * (z ** 2).sum(-1))
    >>> s, info = step(torch.Generator().manual_seed(0), s, lambda z: -0.5 * (z ** 2).sum(-1), scale=torch.tensor(1.0))
    >>> info.accepted.shape
    torch.Size([8])
    """
    position = state.position
    noise = torch.randn(position.shape, generator=generator, device=position.device, dtype=position.dtype)
    if scale.ndim == 3:
        proposal = position + (scale @ noise.unsqueeze(-1)).squeeze(-1)
    else:
        proposal = position + scale * noise
    logp_new, extras_new = evaluate(log_density_fn, proposal)
    log_u = torch.rand(logp_new.shape, generator=generator, device=position.device, dtype=position.dtype).log()
    accept = log_u < (logp_new - state.log_density)
    new_position = torch.where(accept.unsqueeze(-1), proposal, position)
    new_logp = torch.where(accept, logp_new, state.log_density)
    new_extras = None
    if state.extras is not None and extras_new is not None:
        new_extras = torch.where(accept.unsqueeze(-1), extras_new, state.extras)
    return MHState(new_position, new_logp, new_extras), MHInfo(accept, logp_new)


__all__ = [
    "LogDensityFn",
    "MHInfo",
    "MHState",
    "check_position",
    "evaluate",
    "init",
    "step",
]
