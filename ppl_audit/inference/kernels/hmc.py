"""Hamiltonian Monte Carlo with a fixed number of leapfrog steps, over a batch of chains.

After BlackJAX: :func:`init` builds the state (position, log density and its
gradient), :func:`step` advances every chain by one trajectory of
``num_leapfrog`` leapfrog steps, each one batched call of the log density and
its gradient over all chains, then a Metropolis correction per chain (Neal
2011, "MCMC using Hamiltonian dynamics": Sec. 2.3 for the leapfrog, Sec. 3.2
for the algorithm). Step size (one per chain) and the diagonal
inverse mass matrix are parameters: the driver
(:func:`ppl_audit.inference.mcmc.run_hmc`) adapts them.

Nothing here reads a tensor back to the host, so a step never waits on the
device. Chains whose trajectory meets a non-finite log density or gradient are
frozen where they were and rejected; they never raise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.inference.kernels.mh import LogDensityFn, check_position, evaluate

# An energy error of 1000 nats means an acceptance probability of exp(-1000):
# the integrator has left the typical set (Stan's and BlackJAX's threshold).
DIVERGENCE_THRESHOLD = 1000.0


@dataclass(frozen=True)
class HMCState:
    """What persists between steps, per chain; no tensor carries an autograd graph."""

    position: torch.Tensor  # (N, D)
    log_density: torch.Tensor  # (N,)
    grad: torch.Tensor  # (N, D), gradient of the log density at position
    extras: Optional[torch.Tensor] = None  # (N, E)


@dataclass(frozen=True)
class HMCInfo:
    """What one step reports, per chain.

    ``energy_change`` is ``H(end) - H(start)`` of the trajectory (``+inf`` when
    it met a non-finite log density or gradient); ``energy`` is the Hamiltonian
    of the state the chain ends in (for E-BFMI).
    """

    acceptance_prob: torch.Tensor  # (N,) min(1, exp(-energy_change))
    accepted: torch.Tensor  # (N,) bool
    diverging: torch.Tensor  # (N,) bool
    energy_change: torch.Tensor  # (N,)
    energy: torch.Tensor  # (N,)


def _split(out):
    return out if isinstance(out, tuple) else (out, None)


def _grad(logp: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    if not logp.requires_grad:
        raise ModelOutputError(
            "log density does not depend differentiably on the position (no autograd graph): "
            "HMC needs gradients; use random-walk MH for a black-box model"
        )
    return torch.autograd.grad(logp.sum(), z)[0]


def _value_and_grad(log_density_fn: LogDensityFn, position: torch.Tensor):
    """Log density, its gradient and extras at ``position``, unchecked and detached."""
    with torch.enable_grad():
        z = position.detach().requires_grad_(True)
        logp, extras = _split(log_density_fn(z))
        if logp.shape != position.shape[:1]:
            raise ModelOutputError(f"log density has shape {tuple(logp.shape)}, expected ({position.shape[0]},)")
        grad = _grad(logp, z)
    return logp.detach(), grad, None if extras is None else extras.detach()


def init(position: torch.Tensor, log_density_fn: LogDensityFn) -> HMCState:
    """Initial state of ``N`` chains at ``position`` ``(N, D)``.

    Parameters
    ----------
    position : torch.Tensor, (N, D)
        Finite starting points.
    log_density_fn : callable
        ``(N, D) -> (N,)`` or ``-> ((N,), (N, E))`` with extras; must be
        differentiable with respect to its input.

    Returns
    -------
    HMCState

    Raises
    ------
    InvalidInputError
        If ``position`` is not ``(N, D)`` with ``N >= 1``, has non-finite
        entries, or some chain starts at zero density (HMC cannot leave it).
    ModelOutputError
        If the log density is NaN or +inf, its gradient is non-finite, or it
        has no gradient.

    Examples
    --------
    >>> s = init(torch.ones(3, 2), lambda z: -0.5 * (z ** 2).sum(-1))
    >>> s.log_density.tolist(), s.grad.tolist()
    ([-1.0, -1.0, -1.0], [[-1.0, -1.0], [-1.0, -1.0], [-1.0, -1.0]])
    """
    check_position(position)
    with torch.enable_grad():
        z = position.detach().requires_grad_(True)
        logp, extras = evaluate(log_density_fn, z)  # raises on NaN / +inf
        outside = logp == -math.inf
        if outside.any():
            raise InvalidInputError(
                f"{int(outside.sum())} of {logp.numel()} chains start where the log density is -inf "
                "(zero density); HMC needs starts inside the support"
            )
        grad = _grad(logp, z)
    if not torch.isfinite(grad).all():
        raise ModelOutputError("gradient of the log density is non-finite at the initial position")
    return HMCState(position.detach(), logp.detach(), grad, None if extras is None else extras.detach())


def _as_step_size(step_size, like: torch.Tensor) -> torch.Tensor:
    if isinstance(step_size, (int, float)):
        if not (math.isfinite(step_size) and step_size > 0):
            raise InvalidInputError(f"step_size must be a finite number > 0, got {step_size!r}")
    eps = torch.as_tensor(step_size, device=like.device, dtype=like.dtype)
    n = like.shape[0]
    if eps.ndim == 0:
        return eps
    if eps.shape != (n,):
        raise InvalidInputError(f"step_size must be a scalar or have shape ({n},), got {tuple(eps.shape)}")
    return eps.unsqueeze(-1)


def _as_inverse_mass(inverse_mass, like: torch.Tensor) -> torch.Tensor:
    if isinstance(inverse_mass, (int, float)):
        if not (math.isfinite(inverse_mass) and inverse_mass > 0):
            raise InvalidInputError(f"inverse_mass must be a finite number > 0, got {inverse_mass!r}")
    inv = torch.as_tensor(inverse_mass, device=like.device, dtype=like.dtype)
    n, d = like.shape
    if inv.ndim > 0 and inv.shape not in {(d,), (n, d)}:
        raise InvalidInputError(f"inverse_mass must be a scalar or have shape ({d},) or ({n}, {d}), got {tuple(inv.shape)}")
    return inv


@dataclass(frozen=True)
class _TrajectoryEnd:
    """Where one trajectory of every chain ends; ``alive`` is False for a chain that met a non-finite value."""

    position: torch.Tensor  # (N, D)
    momentum: torch.Tensor  # (N, D)
    log_density: torch.Tensor  # (N,)
    grad: torch.Tensor  # (N, D)
    extras: Optional[torch.Tensor]  # (N, E)
    alive: torch.Tensor  # (N,) bool


def _leapfrog(log_density_fn: LogDensityFn, state: HMCState, p0: torch.Tensor, eps: torch.Tensor,
              inv_mass: torch.Tensor, num_leapfrog: int) -> _TrajectoryEnd:
    """``num_leapfrog`` leapfrog steps of every chain from ``(state.position, p0)`` (Neal 2011, Sec. 2.3)."""
    z0 = state.position
    alive = torch.ones(z0.shape[0], dtype=torch.bool, device=z0.device)
    z, grad, p = z0, state.grad, p0 + 0.5 * eps * state.grad
    logp, extras = state.log_density, state.extras
    for i in range(num_leapfrog):
        z_new = z + eps * inv_mass * p
        alive = alive & torch.isfinite(z_new).all(-1)
        # A dead chain re-evaluates its start: the model never sees NaN or inf inputs.
        z = torch.where(alive.unsqueeze(-1), z_new, z0)
        logp, grad, extras = _value_and_grad(log_density_fn, z)
        alive = alive & torch.isfinite(logp) & torch.isfinite(grad).all(-1)
        grad = torch.where(alive.unsqueeze(-1), grad, torch.zeros_like(grad))
        p = p + (eps if i < num_leapfrog - 1 else 0.5 * eps) * grad
    alive = alive & torch.isfinite(p).all(-1)
    return _TrajectoryEnd(z, p, logp, grad, extras, alive)


def _metropolis(generator: torch.Generator | None, state: HMCState, end: _TrajectoryEnd, h0: torch.Tensor,
                h1: torch.Tensor) -> tuple[HMCState, HMCInfo]:
    """Accept each chain's trajectory end with ``min(1, exp(-(h1 - h0)))``; a dead trajectory never."""
    delta = h1 - h0
    delta = torch.where(end.alive & ~torch.isnan(delta), delta, torch.full_like(delta, math.inf))
    acceptance_prob = torch.exp(torch.clamp(-delta, max=0.0))
    z0 = state.position
    log_u = torch.rand(delta.shape, generator=generator, device=z0.device, dtype=z0.dtype).log()
    accept = log_u < -delta  # never true for delta = +inf
    diverging = ~end.alive | (delta > DIVERGENCE_THRESHOLD)

    keep = accept.unsqueeze(-1)
    new_extras = None
    if state.extras is not None and end.extras is not None:
        new_extras = torch.where(keep, end.extras, state.extras)
    new_state = HMCState(
        position=torch.where(keep, end.position, z0),
        log_density=torch.where(accept, end.log_density, state.log_density),
        grad=torch.where(keep, end.grad, state.grad),
        extras=new_extras,
    )
    info = HMCInfo(
        acceptance_prob=acceptance_prob,
        accepted=accept,
        diverging=diverging,
        energy_change=delta,
        energy=torch.where(accept, h1, h0),
    )
    return new_state, info


def step(
    generator: torch.Generator | None,
    state: HMCState,
    log_density_fn: LogDensityFn,
    *,
    step_size,
    inverse_mass,
    num_leapfrog: int,
) -> tuple[HMCState, HMCInfo]:
    """One HMC trajectory per chain: fresh momenta, ``num_leapfrog`` leapfrog
    steps, Metropolis acceptance with ``min(1, exp(-(H(end) - H(start))))``.

    With ``H(z, p) = -log p(z) + p^T M^{-1} p / 2`` and ``p ~ N(0, M)``,
    ``M^{-1} = diag(inverse_mass)`` (Neal 2011, Sec. 2.3 and 3.2).

    Parameters
    ----------
    generator : torch.Generator or None
        Source of randomness (on the position's device).
    state : HMCState
    log_density_fn : callable
        ``(N, D) -> (N,)`` or ``-> ((N,), (N, E))``; must be differentiable.
    step_size : float or torch.Tensor
        Scalar or ``(N,)``, one per chain; ``> 0``. Python numbers are
        checked; tensors are not (that would read them back from the device).
    inverse_mass : float or torch.Tensor
        Diagonal of ``M^{-1}``: scalar, ``(D,)`` shared, or ``(N, D)``; ``> 0``.
    num_leapfrog : int
        Leapfrog steps per trajectory (``> 0``); each costs one batched
        evaluation of the log density and its gradient.

    Returns
    -------
    (HMCState, HMCInfo)
        A chain whose trajectory meets a log density of ``-inf`` or NaN, or a
        non-finite gradient or position, is rejected and reported diverging;
        so is one whose energy error exceeds :data:`DIVERGENCE_THRESHOLD`.

    Examples
    --------
    >>> f = lambda z: -0.5 * (z ** 2).sum(-1)
    >>> s = init(torch.zeros(8, 2), f)
    >>> s, info = step(torch.Generator().manual_seed(0), s, f, step_size=0.5, inverse_mass=1.0, num_leapfrog=4)
    >>> info.acceptance_prob.shape, bool(info.diverging.any())
    (torch.Size([8]), False)
    """
    if isinstance(num_leapfrog, bool) or not isinstance(num_leapfrog, int) or num_leapfrog <= 0:
        raise InvalidInputError(f"num_leapfrog must be a positive integer, got {num_leapfrog!r}")
    z0 = state.position
    eps = _as_step_size(step_size, z0)
    inv_mass = _as_inverse_mass(inverse_mass, z0)

    # p ~ N(0, M), M = diag(1 / inverse_mass)
    p0 = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype) / inv_mass.sqrt()
    h0 = -state.log_density + 0.5 * (p0**2 * inv_mass).sum(-1)
    end = _leapfrog(log_density_fn, state, p0, eps, inv_mass, num_leapfrog)
    h1 = -end.log_density + 0.5 * (end.momentum**2 * inv_mass).sum(-1)
    return _metropolis(generator, state, end, h0, h1)


__all__ = [
    "DIVERGENCE_THRESHOLD",
    "HMCInfo",
    "HMCState",
    "init",
    "step",
]
