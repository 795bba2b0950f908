"""The MCMC driver: warm-up with adaptation, collection, one result type.

The driver owns what kernels leave out: warm-up, proposal adaptation,
progress, collection of the post-warm-up trace, and a :class:`SamplingResult`
that converts to ArviZ. One loop (:func:`_sample`) serves both batched
kernels; what differs between them is a warm-up scheme
(:class:`_RandomWalkWarmup` for :func:`run_mh`, :class:`_HMCWarmup` for
:func:`run_hmc`) that gives each step's kernel parameters and learns from the
warm-up steps, its adaptation state a frozen dataclass passed along the loop.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional, Sequence

import torch

from ppl_audit.errors import InvalidInputError
from ppl_audit.inference import adaptation
from ppl_audit.inference.kernels import hmc, mh
from ppl_audit.inference.result import HMCRunInfo, MHRunInfo, SamplingResult
from ppl_audit.progress import ProgressFn, report

# 0.3 sits between the asymptotic optimum 0.234 (high dimension) and 0.44 (one
# dimension) for random-walk Metropolis; the level sets here have 3-6 latents.
RW_TARGET_ACCEPTANCE = 0.3
ADAPTATION_DECAY = 0.6  # Robbins-Monro gain t^-0.6: steps sum to infinity, squares do not
MIN_POPULATION_SD = 1e-3  # keeps the proposal alive when all chains sit on one point
RANDOM_WALK_SCALE = 2.38  # first proposal sd is 2.38 / sqrt(D) times the spread (Roberts, Gelman & Gilks 1997)

HMC_DEFAULT_STEP_SIZE = 0.1  # first warm-up step; dual averaging moves it by orders of magnitude within ~10 steps
# Each trajectory's step size is drawn uniformly within +-20% of the adapted one:
# a fixed-length trajectory can resonate with a near-Gaussian target (return to
# its start); randomising the step size breaks it, as Neal (2011) recommends.
HMC_STEP_SIZE_JITTER = 0.2
# "pooled" (default): one step size, adapted on the acceptance averaged over chains; "per_chain"
# adapts each chain on its own noisy single-draw acceptance (README, "Samplers": tuned constants).
HMC_STEP_SIZE_ADAPTATIONS = ("pooled", "per_chain")
# Dual averaging restarts after each mass-matrix window shrinking towards the step size it has,
# not Stan's 10x: safer after short warm-ups (README, "Samplers": tuned constants).
HMC_RESTART_MU_FACTOR = 1.0


@dataclass(frozen=True)
class MCMCConfig:
    """Settings of a batched MCMC run.

    Parameters
    ----------
    num_steps : int
        Total steps per chain, warm-up included (> 0).
    warmup_fraction : float
        Share of ``num_steps`` spent adapting the proposal, in ``[0, 1)``.
    target_acceptance : float
        Acceptance rate the warm-up aims for, in ``(0, 1)``.
    """

    num_steps: int
    warmup_fraction: float = 0.5
    target_acceptance: float = RW_TARGET_ACCEPTANCE

    def __post_init__(self):
        if not isinstance(self.num_steps, int) or self.num_steps <= 0:
            raise InvalidInputError(f"num_steps must be a positive integer, got {self.num_steps!r}")
        if not 0 <= self.warmup_fraction < 1:
            raise InvalidInputError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        if not 0 < self.target_acceptance < 1:
            raise InvalidInputError(f"target_acceptance must be in (0, 1), got {self.target_acceptance!r}")

    @property
    def num_warmup(self) -> int:
        """Warm-up steps; at least one draw is always collected."""
        return min(int(self.num_steps * self.warmup_fraction), self.num_steps - 1)


def resolve_latent_names(latent_names: Sequence[str] | None, dim: int) -> tuple[str, ...]:
    """``latent_names`` as a tuple, or ``z0 .. z{dim-1}`` when none are given.

    Raises
    ------
    InvalidInputError
        When there are not ``dim`` names.

    Examples
    --------
    >>> resolve_latent_names(None, 2), resolve_latent_names(["w", "h"], 2)
    (('z0', 'z1'), ('w', 'h'))
    """
    names = tuple(latent_names) if latent_names is not None else tuple(f"z{i}" for i in range(dim))
    if len(names) != dim:
        raise InvalidInputError(f"got {len(names)} latent names for {dim} latents")
    return names


# --------------------------------------------------------------------------- the shared loop


@dataclass(frozen=True)
class _Collected:
    """What the loop keeps: post-warm-up draws (on the CPU) and every step's mean acceptance."""

    positions: torch.Tensor  # (chains, draws, D)
    sample_stats: dict[str, torch.Tensor]  # (chains, draws) each
    extras: Optional[torch.Tensor]  # (chains, draws, E)
    acceptance_per_step: list[float]


def _sample(kernel_step: Callable, scheme, state, log_density_fn, config: MCMCConfig, generator,
            progress: ProgressFn | None) -> tuple[_Collected, Any]:
    """Run ``config.num_steps`` steps of ``kernel_step`` on every chain; ``(collected, final adaptation)``.

    ``scheme`` supplies what differs between kernels: ``init()`` the adaptation
    state, ``params(generator, adapt, t, state) -> (adapt, kernel kwargs)``,
    ``acceptance(info)`` (a 0-d tensor), ``adapt(adapt, t, state, info, acceptance)``
    called on warm-up steps only, and ``stats``, the Info fields kept per draw.
    Nothing reads a tensor back to the host inside the loop.
    """
    adapt = scheme.init()
    acceptance, positions, extras = [], [], []
    stats = {k: [] for k in scheme.stats}
    for t in range(config.num_steps):
        adapt, params = scheme.params(generator, adapt, t, state)
        state, info = kernel_step(generator, state, log_density_fn, **params)
        rate = scheme.acceptance(info)
        acceptance.append(rate)
        if t < config.num_warmup:
            adapt = scheme.adapt(adapt, t, state, info, rate)
        else:
            positions.append(state.position)
            for k in stats:
                stats[k].append(getattr(info, k))
            if state.extras is not None:
                extras.append(state.extras)
        report(progress, "sampling", t + 1, config.num_steps)
    collected = _Collected(
        positions=torch.stack(positions, dim=1).cpu(),
        sample_stats={k: torch.stack(v, dim=1).cpu() for k, v in stats.items()},
        extras=torch.stack(extras, dim=1).cpu() if extras else None,
        acceptance_per_step=torch.stack(acceptance).cpu().tolist(),
    )
    return collected, adapt


def _result(method: str, names, extras_names, run: _Collected, *, num_warmup: int, num_evaluations: int,
            start: float, info: dict, superchains: int | None = None) -> SamplingResult:
    return SamplingResult(
        method=method,
        latent_names=names,
        trace=run.positions,
        sample_stats=run.sample_stats,
        extras_trace=run.extras,
        extras_names=tuple(extras_names),
        num_warmup=num_warmup,
        num_evaluations=num_evaluations,
        seconds=time.perf_counter() - start,
        superchains=superchains,
        info=info,
    )


# --------------------------------------------------------------------------- random-walk MH


@dataclass(frozen=True)
class _ScaleAdaptation:
    """Random-walk warm-up state: ``log lambda`` and the proposal scale last set from it."""

    log_lambda: torch.Tensor  # ()
    scale: Optional[torch.Tensor] = None  # (D,)


@dataclass(frozen=True)
class _RandomWalkWarmup:
    """Proposal ``lambda * sd_d`` (``sd_d`` the chains' spread), ``lambda`` tuned by Robbins-Monro."""

    stats = ("accepted",)
    num_warmup: int
    num_chains: int
    dim: int
    target: torch.Tensor  # () acceptance aimed for

    def init(self) -> _ScaleAdaptation:
        t = self.target
        return _ScaleAdaptation(torch.tensor(math.log(RANDOM_WALK_SCALE / math.sqrt(self.dim)), device=t.device,
                                             dtype=t.dtype))

    def params(self, generator, adapt: _ScaleAdaptation, t: int, state: mh.MHState):
        # The scale follows the population through warm-up and is frozen after it.
        if t < self.num_warmup or adapt.scale is None:
            if self.num_chains > 1:
                spread = state.position.std(dim=0).clamp(min=MIN_POPULATION_SD)
            else:
                spread = torch.ones(self.dim, device=self.target.device, dtype=self.target.dtype)
            adapt = replace(adapt, scale=adapt.log_lambda.exp() * spread)
        return adapt, {"scale": adapt.scale}

    def acceptance(self, info: mh.MHInfo) -> torch.Tensor:
        return info.accepted.to(self.target.dtype).mean()

    def adapt(self, adapt: _ScaleAdaptation, t: int, state, info, rate: torch.Tensor) -> _ScaleAdaptation:
        return replace(adapt, log_lambda=adapt.log_lambda + (rate - self.target) / (t + 1) ** ADAPTATION_DECAY)


def run_mh(
    log_density_fn: mh.LogDensityFn,
    initial_position: torch.Tensor,
    config: MCMCConfig,
    *,
    generator: torch.Generator | None = None,
    latent_names: Sequence[str] | None = None,
    extras_names: Sequence[str] = (),
    progress: ProgressFn | None = None,
) -> SamplingResult:
    """Run random-walk MH on every chain at once.

    During warm-up the proposal of latent ``d`` is ``lambda * sd_d``: ``sd_d``
    the spread of the chains' current positions (a diagonal scale that follows
    the population), ``lambda`` tuned by Robbins-Monro towards the target
    acceptance. Both are frozen when warm-up ends. All of it stays on the
    positions' device, with no host round-trip inside the loop.

    Parameters
    ----------
    log_density_fn : callable
        ``(N, D) -> (N,)`` or ``-> ((N,), (N, E))`` with extras.
    initial_position : torch.Tensor, (chains, D)
    config : MCMCConfig
    generator : torch.Generator, optional
    latent_names : sequence of str, optional
    extras_names : sequence of str
        Names of the extras' columns.
    progress : callable, optional

    Returns
    -------
    SamplingResult

    Examples
    --------
    >>> res = run_mh(lambda z: -0.5 * (z ** 2).sum(-1), torch.zeros(500, 1), MCMCConfig(400),
    ...              generator=torch.Generator().manual_seed(0))
    >>> abs(float(res.final_position.mean())) < 0.2
    True
    """
    start = time.perf_counter()
    state = mh.init(initial_position, log_density_fn)
    n_chains, dim = initial_position.shape
    names = resolve_latent_names(latent_names, dim)
    target = torch.tensor(config.target_acceptance, device=initial_position.device, dtype=initial_position.dtype)
    scheme = _RandomWalkWarmup(config.num_warmup, n_chains, dim, target)
    run, adapt = _sample(mh.step, scheme, state, log_density_fn, config, generator, progress)
    info: MHRunInfo = {"acceptance_per_step": run.acceptance_per_step, "proposal_scale": adapt.scale.cpu().tolist()}
    return _result("mh", names, extras_names, run, num_warmup=config.num_warmup,
                   num_evaluations=n_chains * (config.num_steps + 1), start=start, info=info)


# --------------------------------------------------------------------------- HMC


def _check_hmc_inputs(initial_position, config, num_leapfrog, step_size, step_size_jitter, step_size_adaptation, superchains):
    if step_size_adaptation not in HMC_STEP_SIZE_ADAPTATIONS:
        raise InvalidInputError(
            f"step_size_adaptation must be one of {HMC_STEP_SIZE_ADAPTATIONS}, got {step_size_adaptation!r}"
        )
    if not isinstance(config, MCMCConfig):
        raise InvalidInputError(f"config must be an MCMCConfig, got {type(config).__name__}")
    if not isinstance(initial_position, torch.Tensor) or initial_position.ndim != 2:
        shape = tuple(initial_position.shape) if isinstance(initial_position, torch.Tensor) else type(initial_position).__name__
        raise InvalidInputError(f"initial_position must be a tensor of shape (chains, D), got {shape}")
    n_chains = initial_position.shape[0]
    if n_chains <= 0:
        raise InvalidInputError("need at least one chain")
    if not torch.isfinite(initial_position).all():
        raise InvalidInputError("initial position has non-finite entries")
    if isinstance(num_leapfrog, bool) or not isinstance(num_leapfrog, int) or num_leapfrog <= 0:
        raise InvalidInputError(f"num_leapfrog must be a positive integer, got {num_leapfrog!r}")
    eps = torch.as_tensor(step_size, dtype=initial_position.dtype, device=initial_position.device)
    if eps.ndim > 1 or (eps.ndim == 1 and eps.shape[0] != n_chains):
        raise InvalidInputError(f"step_size must be a number or have shape ({n_chains},), got shape {tuple(eps.shape)}")
    if not (torch.isfinite(eps) & (eps > 0)).all():
        raise InvalidInputError(f"step_size must be finite and > 0, got {step_size!r}")
    if not 0 <= step_size_jitter < 1:
        raise InvalidInputError(f"step_size_jitter must be in [0, 1), got {step_size_jitter!r}")
    if superchains is not None and (
        isinstance(superchains, bool) or not isinstance(superchains, int) or superchains <= 0 or n_chains % superchains
    ):
        raise InvalidInputError(f"superchains must be a positive integer dividing the {n_chains} chains, got {superchains!r}")
    return eps.expand(n_chains).clone()


@dataclass(frozen=True)
class _HMCAdaptation:
    """HMC warm-up state: dual averaging, the step size kept after warm-up, the mass matrix."""

    dual_averaging: adaptation.DualAveragingState
    step_size: torch.Tensor  # (chains,) the step size used after warm-up
    inverse_mass: torch.Tensor  # (D,)
    moments: Optional[adaptation.WelfordState]  # the current mass-matrix window's running moments
    warmup_divergences: torch.Tensor  # () long


@dataclass(frozen=True)
class _HMCWarmup:
    """Stan's warm-up (:func:`~ppl_audit.inference.adaptation.warmup_windows`) for fixed-length HMC."""

    stats = ("accepted", "acceptance_prob", "diverging", "energy")
    num_warmup: int
    num_chains: int
    dim: int
    num_leapfrog: int
    step_size: torch.Tensor  # (chains,) the first step size
    step_size_jitter: float
    pooled: bool
    dual_averaging: adaptation.DualAveraging
    windows: tuple[tuple[int, int], ...]

    def init(self) -> _HMCAdaptation:
        eps = self.step_size
        inverse_mass = torch.ones(self.dim, device=eps.device, dtype=eps.dtype)
        divergences = torch.zeros((), device=eps.device, dtype=torch.long)
        return _HMCAdaptation(self.dual_averaging.init(eps), eps, inverse_mass, None, divergences)

    def params(self, generator, adapt: _HMCAdaptation, t: int, state: hmc.HMCState):
        base = adapt.dual_averaging.step_size if t < self.num_warmup else adapt.step_size
        if self.step_size_jitter > 0:
            position = state.position
            u = torch.rand(self.num_chains, generator=generator, device=position.device, dtype=position.dtype)
            base = base * (1.0 + self.step_size_jitter * (2.0 * u - 1.0))
        return adapt, {"step_size": base, "inverse_mass": adapt.inverse_mass, "num_leapfrog": self.num_leapfrog}

    def acceptance(self, info: hmc.HMCInfo) -> torch.Tensor:
        return info.acceptance_prob.mean()

    def adapt(self, adapt: _HMCAdaptation, t: int, state: hmc.HMCState, info: hmc.HMCInfo,
              rate: torch.Tensor) -> _HMCAdaptation:
        da, welford = self.dual_averaging, adaptation.WelfordVariance()
        signal = rate.expand(self.num_chains) if self.pooled else info.acceptance_prob
        da_state = da.update(adapt.dual_averaging, signal)
        moments, inverse_mass = adapt.moments, adapt.inverse_mass
        window = next((w for w in self.windows if w[0] <= t < w[1]), None)
        if window is not None:
            # Mass matrix: the variance of the positions pooled over chains and the window's steps.
            if t == window[0]:
                moments = welford.init(self.dim, device=inverse_mass.device, dtype=inverse_mass.dtype)
            moments = welford.update(moments, state.position)
            if t + 1 == window[1]:
                inverse_mass = welford.variance(moments)
                da_state = da.init(da.final(da_state), mu_factor=HMC_RESTART_MU_FACTOR)
        step_size = da.final(da_state) if t + 1 == self.num_warmup else adapt.step_size
        return _HMCAdaptation(da_state, step_size, inverse_mass, moments,
                              adapt.warmup_divergences + info.diverging.sum())


def _hmc_warmup(initial_position, config: MCMCConfig, eps: torch.Tensor, num_leapfrog: int, target_acceptance,
                step_size_jitter: float, step_size_adaptation: str) -> _HMCWarmup:
    """:func:`run_hmc`'s warm-up scheme from its checked arguments (``eps`` the per-chain first step sizes)."""
    pooled = step_size_adaptation == "pooled"
    if pooled and config.num_warmup > 0:
        eps = eps.log().mean().exp().expand_as(eps).clone()  # one (geometric-mean) start for the shared adaptation
    da = adaptation.DualAveraging(target=target_acceptance)
    n_chains, dim = initial_position.shape
    windows = tuple(adaptation.warmup_windows(config.num_warmup))
    return _HMCWarmup(config.num_warmup, n_chains, dim, num_leapfrog, eps, step_size_jitter, pooled, da, windows)


def _hmc_info(run: _Collected, adapt: _HMCAdaptation, scheme: _HMCWarmup, target_acceptance,
              step_size_adaptation: str) -> HMCRunInfo:
    """:func:`run_hmc`'s ``info`` (see its Returns)."""
    return {
        "acceptance_per_step": run.acceptance_per_step,
        "step_size": adapt.step_size.cpu().tolist(),
        "inverse_mass": adapt.inverse_mass.cpu().tolist(),
        "num_leapfrog": scheme.num_leapfrog,
        "num_divergences": int(run.sample_stats["diverging"].sum()),
        "num_warmup_divergences": int(adapt.warmup_divergences),
        "target_acceptance": target_acceptance,
        "step_size_jitter": scheme.step_size_jitter,
        "step_size_adaptation": step_size_adaptation,
        "mass_matrix_windows": [list(w) for w in scheme.windows],
    }


def run_hmc(
    log_density_fn: mh.LogDensityFn,
    initial_position: torch.Tensor,
    config: MCMCConfig,
    *,
    generator: torch.Generator | None = None,
    num_leapfrog: int = 8,
    target_acceptance: float = adaptation.HMC_TARGET_ACCEPTANCE,
    step_size: float | torch.Tensor = HMC_DEFAULT_STEP_SIZE,
    step_size_jitter: float = HMC_STEP_SIZE_JITTER,
    step_size_adaptation: str = "pooled",
    latent_names: Sequence[str] | None = None,
    extras_names: Sequence[str] = (),
    superchains: int | None = None,
    progress: ProgressFn | None = None,
) -> SamplingResult:
    """Run HMC with ``num_leapfrog`` leapfrog steps per trajectory on every chain at once.

    Warm-up (``config.num_warmup`` steps) follows Stan's schedule
    (:func:`~ppl_audit.inference.adaptation.warmup_windows`): the step size is
    adapted by dual averaging (Hoffman & Gelman 2014, Algorithm 5) towards
    ``target_acceptance``, on the acceptance probability averaged over chains
    (``"pooled"``, one step size for all) or on each chain's own
    (``"per_chain"``); in each slow window the diagonal inverse mass matrix is
    re-estimated as the variance of the positions pooled over all chains and
    the window's steps, and dual averaging restarts from the averaged step
    size (shrinking towards it rather than Stan's ten times it; see
    ``HMC_RESTART_MU_FACTOR``). At the end of warm-up the averaged step size is kept; the mass matrix
    (shared by all chains) is frozen. Every trajectory's step size is jittered by
    ``+-step_size_jitter`` (relative, uniform). All of it stays on the
    positions' device, with no host round-trip inside the loop.

    Parameters
    ----------
    log_density_fn : callable
        ``(N, D) -> (N,)`` or ``-> ((N,), (N, E))`` with extras; differentiable.
    initial_position : torch.Tensor, (chains, D)
        Finite starts with finite log density.
    config : MCMCConfig
        ``num_steps`` and ``warmup_fraction``; its ``target_acceptance`` (an
        MH setting) is not used: see ``target_acceptance`` here.
    generator : torch.Generator, optional
    num_leapfrog : int
        Leapfrog steps per trajectory (> 0), fixed.
    target_acceptance : float
        Mean acceptance probability dual averaging aims for, in ``(0, 1)``.
    step_size : float or torch.Tensor (chains,)
        First step size (> 0; pooled adaptation starts from the geometric mean
        of a per-chain one); with no warm-up, the step sizes used throughout.
    step_size_jitter : float
        Relative half-width of the uniform step-size jitter, in ``[0, 1)``.
    step_size_adaptation : {"pooled", "per_chain"}
        One step size adapted on the chains' mean acceptance, or one per
        chain on its own acceptance. Per-chain adaptation is noisy with
        single-trajectory acceptances: it ends with acceptance well above the
        target (~0.94 for 0.8 measured) and, since each step size follows its
        chain, biases warm-up draws; use it only when chains sit in regions of
        very different curvature.
    latent_names : sequence of str, optional
    extras_names : sequence of str
        Names of the extras' columns.
    superchains : int, optional
        Passed through to the result: the caller grouped the chains into this
        many contiguous equal groups (must divide the number of chains).
    progress : callable, optional

    Returns
    -------
    SamplingResult
        ``method="hmc"``; ``sample_stats`` ``accepted``, ``acceptance_prob``,
        ``diverging``, ``energy`` (chains, draws); ``info`` ``step_size`` (per
        chain), ``inverse_mass``, ``num_leapfrog``, ``acceptance_per_step``
        (mean acceptance probability over chains, warm-up included),
        ``num_divergences`` (post-warm-up), ``num_warmup_divergences``,
        ``target_acceptance``, ``step_size_jitter``, ``mass_matrix_windows``.
        ``num_evaluations`` counts gradient evaluations:
        ``chains * (1 + num_steps * num_leapfrog)``.

    Raises
    ------
    InvalidInputError
        Non-finite or badly shaped starts, ``num_leapfrog <= 0``,
        ``step_size <= 0``, bad ``superchains`` or names.
    ModelOutputError
        If the log density is NaN or +inf (or not differentiable) at the start.

    Examples
    --------
    >>> res = run_hmc(lambda z: -0.5 * (z ** 2).sum(-1), torch.zeros(200, 2), MCMCConfig(100),
    ...               generator=torch.Generator().manual_seed(0), num_leapfrog=4)
    >>> res.trace.shape, abs(float(res.final_position.mean())) < 0.2
    (torch.Size([200, 50, 2]), True)
    """
    start = time.perf_counter()
    eps = _check_hmc_inputs(
        initial_position, config, num_leapfrog, step_size, step_size_jitter, step_size_adaptation, superchains
    )
    scheme = _hmc_warmup(initial_position, config, eps, num_leapfrog, target_acceptance, step_size_jitter,
                         step_size_adaptation)
    n_chains, dim = initial_position.shape
    names = resolve_latent_names(latent_names, dim)
    state = hmc.init(initial_position, log_density_fn)
    run, adapt = _sample(hmc.step, scheme, state, log_density_fn, config, generator, progress)
    info = _hmc_info(run, adapt, scheme, target_acceptance, step_size_adaptation)
    return _result("hmc", names, extras_names, run, num_warmup=config.num_warmup,
                   num_evaluations=n_chains * (1 + config.num_steps * num_leapfrog), start=start, info=info,
                   superchains=superchains)


__all__ = [
    "ADAPTATION_DECAY",
    "HMC_DEFAULT_STEP_SIZE",
    "HMC_RESTART_MU_FACTOR",
    "HMC_STEP_SIZE_ADAPTATIONS",
    "HMC_STEP_SIZE_JITTER",
    "MIN_POPULATION_SD",
    "RANDOM_WALK_SCALE",
    "RW_TARGET_ACCEPTANCE",
    "MCMCConfig",
    "resolve_latent_names",
    "run_hmc",
    "run_mh",
]
