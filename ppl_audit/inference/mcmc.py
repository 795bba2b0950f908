"""The MCMC driver: warm-up with adaptation, collection, one result type.

The driver owns what kernels leave out: warm-up, proposal-scale adaptation,
progress, collection of the post-warm-up trace, and a :class:`SamplingResult`
that converts to ArviZ.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from ppl_audit.errors import InvalidInputError
from ppl_audit.inference.kernels import mh
from ppl_audit.inference.result import SamplingResult
from ppl_audit.progress import ProgressFn, report

# 0.3 sits between the asymptotic optimum 0.234 (high dimension) and 0.44 (one
# dimension) for random-walk Metropolis; the level sets here have 3-6 latents.
TARGET_ACCEPTANCE = 0.3
ADAPTATION_DECAY = 0.6  # Robbins-Monro gain t^-0.6: steps sum to infinity, squares do not
MIN_POPULATION_SD = 1e-3  # keeps the proposal alive when all chains sit on one point


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
    target_acceptance: float = TARGET_ACCEPTANCE

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
    n_chains, dim = initial_position.shape if initial_position.ndim == 2 else (None, None)
    state = mh.init(initial_position, log_density_fn)
    names = tuple(latent_names) if latent_names is not None else tuple(f"z{i}" for i in range(dim))
    if len(names) != dim:
        raise InvalidInputError(f"got {len(names)} latent names for {dim} latents")
    device, dtype = initial_position.device, initial_position.dtype
    log_lambda = torch.tensor(math.log(2.38 / math.sqrt(dim)), device=device, dtype=dtype)
    target = torch.tensor(config.target_acceptance, device=device, dtype=dtype)
    scale = None
    acceptance, positions, accepted, extras = [], [], [], []
    for t in range(config.num_steps):
        if t < config.num_warmup or scale is None:
            spread = state.position.std(dim=0).clamp(min=MIN_POPULATION_SD) if n_chains > 1 else torch.ones(dim, device=device, dtype=dtype)
            scale = log_lambda.exp() * spread
        state, info = mh.step(generator, state, log_density_fn, scale=scale)
        rate = info.accepted.to(dtype).mean()
        acceptance.append(rate)
        if t < config.num_warmup:
            log_lambda = log_lambda + (rate - target) / (t + 1) ** ADAPTATION_DECAY
        else:
            positions.append(state.position)
            accepted.append(info.accepted)
            if state.extras is not None:
                extras.append(state.extras)
        report(progress, "sampling", t + 1, config.num_steps)
    return SamplingResult(
        method="mh",
        latent_names=names,
        trace=torch.stack(positions, dim=1).cpu(),
        sample_stats={"accepted": torch.stack(accepted, dim=1).cpu()},
        extras_trace=torch.stack(extras, dim=1).cpu() if extras else None,
        extras_names=tuple(extras_names),
        num_warmup=config.num_warmup,
        num_evaluations=n_chains * (config.num_steps + 1),
        seconds=time.perf_counter() - start,
        info={
            "acceptance_per_step": torch.stack(acceptance).cpu().tolist(),
            "proposal_scale": scale.cpu().tolist(),
        },
    )


# --------------------------------------------------------------------------- HMC

from ppl_audit.inference import adaptation  # noqa: E402  (kept with the HMC driver it serves)
from ppl_audit.inference.kernels import hmc  # noqa: E402

HMC_DEFAULT_STEP_SIZE = 0.1  # first warm-up step; dual averaging moves it by orders of magnitude within ~10 steps
# Each trajectory's step size is drawn uniformly within +-20% of the adapted one:
# a fixed-length trajectory can resonate with a near-Gaussian target (return to
# its start); randomising the step size breaks it, as Neal (2011) recommends.
HMC_STEP_SIZE_JITTER = 0.2
# "pooled": one step size for all chains, dual averaging on the acceptance
# averaged over chains. "per_chain": each chain adapts on its own single-draw
# acceptance; measured on Gaussian, banana and Student-t targets (1,000 chains,
# 8 leapfrog steps, target 0.8) that noise makes every chain's step size swing,
# the averaged step comes out too small (post-warm-up acceptance ~0.94), and
# the position-dependent step sizes biased warm-up draws (pooled variance, so
# the mass matrix, ~7% low on the narrow axis). Pooled hit 0.79-0.80 and the
# variances within noise.
HMC_STEP_SIZE_ADAPTATIONS = ("pooled", "per_chain")
# Dual averaging restarts after each mass-matrix window shrinking towards the
# step size it has (mu = log(1 * eps)), not Stan's log(10 * eps): that 10x pull
# with Stan's short terminal buffer (10% of warm-up) left 20-30-step warm-ups at
# post-warm-up acceptance 0.0-0.4 for a 0.8 target (Gaussian, banana, Student-t,
# 500 chains); with 1x they read 0.8-0.95 (too small a step is the safe side),
# and both read 0.79-0.81 from 100-200 warm-up steps on.
HMC_RESTART_MU_FACTOR = 1.0


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


def run_hmc(
    log_density_fn: mh.LogDensityFn,
    initial_position: torch.Tensor,
    config: MCMCConfig,
    *,
    generator: torch.Generator | None = None,
    num_leapfrog: int = 8,
    target_acceptance: float = 0.8,
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
    pooled = step_size_adaptation == "pooled"
    if pooled and config.num_warmup > 0:
        eps = eps.log().mean().exp().expand_as(eps).clone()  # one (geometric-mean) start for the shared adaptation
    da = adaptation.DualAveraging(target=target_acceptance)
    n_chains, dim = initial_position.shape
    names = tuple(latent_names) if latent_names is not None else tuple(f"z{i}" for i in range(dim))
    if len(names) != dim:
        raise InvalidInputError(f"got {len(names)} latent names for {dim} latents")
    state = hmc.init(initial_position, log_density_fn)
    device, dtype = initial_position.device, initial_position.dtype

    num_warmup = config.num_warmup
    windows = adaptation.warmup_windows(num_warmup)
    window_of = {t: (s, e) for s, e in windows for t in range(s, e)}
    welford = adaptation.WelfordVariance()
    moments = None
    inverse_mass = torch.ones(dim, device=device, dtype=dtype)
    da_state = da.init(eps)
    warmup_divergences = torch.zeros((), device=device, dtype=torch.long)
    acceptance, positions, stats, extras = [], [], {k: [] for k in ("accepted", "acceptance_prob", "diverging", "energy")}, []
    for t in range(config.num_steps):
        warming = t < num_warmup
        base = da_state.step_size if warming else eps
        if step_size_jitter > 0:
            u = torch.rand(n_chains, generator=generator, device=device, dtype=dtype)
            base = base * (1.0 + step_size_jitter * (2.0 * u - 1.0))
        state, info = hmc.step(
            generator, state, log_density_fn, step_size=base, inverse_mass=inverse_mass, num_leapfrog=num_leapfrog
        )
        acceptance.append(info.acceptance_prob.mean())
        if warming:
            warmup_divergences = warmup_divergences + info.diverging.sum()
            signal = info.acceptance_prob.mean().expand(n_chains) if pooled else info.acceptance_prob
            da_state = da.update(da_state, signal)
            window = window_of.get(t)
            if window is not None:
                if t == window[0]:
                    moments = welford.init(dim, device=device, dtype=dtype)
                moments = welford.update(moments, state.position)
                if t + 1 == window[1]:
                    inverse_mass = welford.variance(moments)
                    da_state = da.init(da.final(da_state), mu_factor=HMC_RESTART_MU_FACTOR)
            if t + 1 == num_warmup:
                eps = da.final(da_state)
        else:
            positions.append(state.position)
            for k in stats:
                stats[k].append(getattr(info, k))
            if state.extras is not None:
                extras.append(state.extras)
        report(progress, "sampling", t + 1, config.num_steps)

    sample_stats = {k: torch.stack(v, dim=1).cpu() for k, v in stats.items()}
    return SamplingResult(
        method="hmc",
        latent_names=names,
        trace=torch.stack(positions, dim=1).cpu(),
        sample_stats=sample_stats,
        extras_trace=torch.stack(extras, dim=1).cpu() if extras else None,
        extras_names=tuple(extras_names),
        num_warmup=num_warmup,
        num_evaluations=n_chains * (1 + config.num_steps * num_leapfrog),
        seconds=time.perf_counter() - start,
        superchains=superchains,
        info={
            "acceptance_per_step": torch.stack(acceptance).cpu().tolist(),
            "step_size": eps.cpu().tolist(),
            "inverse_mass": inverse_mass.cpu().tolist(),
            "num_leapfrog": num_leapfrog,
            "num_divergences": int(sample_stats["diverging"].sum()),
            "num_warmup_divergences": int(warmup_divergences),
            "target_acceptance": target_acceptance,
            "step_size_jitter": step_size_jitter,
            "step_size_adaptation": step_size_adaptation,
            "mass_matrix_windows": [list(w) for w in windows],
        },
    )
