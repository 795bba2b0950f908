"""Adaptively tempered sequential Monte Carlo, prior to posterior, many runs at once.

``R`` independent SMC runs of ``M`` particles each advance together in one
batch: every likelihood call sees all ``R * M`` particles. The runs are the
superchains of nested R-hat (Margossian et al. 2022): the result's chains are
ordered run-major, so run ``r`` owns chains ``r*M .. (r+1)*M - 1``.

One stage (Del Moral et al. 2006; Jasra et al. 2011; Chopin & Papaspiliopoulos
2020, Ch. 17):

1. each run picks its next inverse temperature ``beta'`` so that the ESS of the
   incremental weights ``(beta' - beta) * loglik`` is ``target_ess_fraction * M``
   (:func:`~ppl_audit.inference.kernels.smc.next_temperature`), or
   ``slow_ess_fraction * M`` after a stage whose moves rarely accepted; where the
   likelihood's maximum is known, a virtual particle there counts in that ESS, so
   that particles on a plateau of the likelihood cannot step past what none of
   them has found (for at most ``GUARDED_STAGES`` stages of a run);
2. the runs' log evidence grows by ``log mean`` of those weights;
3. every run is resampled, at every stage (systematic resampling): the next
   temperature is chosen to drive the ESS down to the threshold, so a rule
   "resample when ESS < threshold" would fire at almost every stage anyway,
   and equal weights afterwards keep the bisection and the evidence estimator
   simple; a run that has already reached 1 has equal weights, which
   systematic resampling maps to the identity;
4. ``num_moves`` random-walk Metropolis-Hastings moves (:mod:`~ppl_audit.inference.kernels.mh`)
   target ``log prior + beta' * loglik``.

When every run is at ``beta = 1``, ``num_final_draws`` more moves at the
posterior are the draws.

Waste-free SMC (Dau & Chopin 2022; ``chain_length = P``) changes steps 3-4:
each run resamples only ``M0 = M / P`` starting points, runs an MCMC chain of
``P - 1`` moves from each, and keeps all ``M0 * P`` states of the chains (the
starts included) as its next ``M`` particles, instead of keeping only the last
state of every particle's moves. The moves' proposals are fitted to the run's
weighted particles before resampling, so a chain's proposal never depends on
its own states.

The code reads in that order: :class:`SMCConfig` holds and checks the
settings, :func:`init` builds the :class:`SMCState` (what persists between
stages), :func:`step` is one stage (steps 1-4 above, reporting a
:class:`StageInfo`), :func:`final_draws` the moves at the posterior, and
:func:`run_smc` the short driver. The per-run building blocks (temperature
bisection, resampling, cross-fitted mixtures) are in
:mod:`ppl_audit.inference.kernels.smc`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ppl_audit._device import resolve_device
from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.inference.kernels import elliptical, imh, mh
from ppl_audit.inference.kernels import smc as kernel
from ppl_audit.inference.kernels.mixture import GaussianMixture
from ppl_audit.inference.mcmc import MIN_POPULATION_SD, RANDOM_WALK_SCALE, RW_TARGET_ACCEPTANCE, resolve_latent_names
from ppl_audit.inference.result import SamplingResult, SMCRunInfo
from ppl_audit.progress import ProgressFn, report

# Constant, not Robbins-Monro decaying as in the MCMC driver: each stage has a new target that the
# proposal factor must track, and a few stages may be all there is (see _adapt_scale_factor).
SCALE_ADAPTATION_GAIN = 3.0
MOVES = ("rw", "independent", "mixed", "elliptical")  # the kinds of move a stage can make (run_smc, move)
RESAMPLINGS = ("systematic", "ordered")  # run_smc, resampling
FITTED_MOVES = ("independent", "mixed")  # the moves that propose from mixtures fitted to each half-run
# move="elliptical" needs a standard-normal prior: run_smc checks log_prior_fn against it on the first draws.
STANDARD_NORMAL_TOLERANCE = 1e-3
# Independent-proposal settings, measured on the house/rocket level sets (README, "Samplers": tuned constants).
NUM_COMPONENTS = 4  # full-covariance components per half-run; 8 over-fitted the halves
PROPOSAL_INFLATION = 1.2  # a proposal a little wider than its target keeps p/q bounded in the tails
DEFENSIVE_WEIGHT = 0.1  # a broad component (the half-run's own mean and covariance) where the fit is thin
DEFAULT_MOVES = 4  # moves per stage at least; an independent move at ~50% acceptance renews half the particles
# Off here; level sets turn it on (ppl_audit.sampling.SMC_MIN_MOVED_FRACTION, measured in
# benchmarks/levelset_smc_levers.py): a stage then keeps moving until this share of every run moved.
MIN_MOVED_FRACTION = 0.0
MAX_MOVES = 30  # a cap on the cost of a stage (30 moves reach 0.9 at 7% acceptance)
# A run whose moves accepted less than this over a stage tempers its next stage more gently
# (slow_ess_fraction): where the moves barely renew the particles, smaller steps lose fewer of them.
SLOW_ACCEPTANCE = 0.15
# Stages a run may hold its step back for the likelihood's bound (next_temperature): the demo's plateau
# runs needed 2-3 to find the slope, and a bound no particle can reach costs at most this many stages.
GUARDED_STAGES = 10
MIN_PARTICLES_PER_RUN_FITTED = 8  # independent/mixed moves fit each half-run (>= 4 points) to a mixture
# A full-covariance component in D dimensions gets at least this many points
# per dimension of its half-run; smaller runs fit fewer components (at least 1).
POINTS_PER_COMPONENT_AND_DIMENSION = 10
PROGRESS_RESOLUTION = 1000  # tempering progress is reported in thousandths of the way to beta = 1

#: ``log_likelihood_fn(z (N, D)) -> (N,)`` or ``-> ((N,), extras (N, E))``
LogLikelihoodFn = Callable[[torch.Tensor], "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"]
#: ``log_prior_fn(z (N, D)) -> (N,)``
LogPriorFn = Callable[[torch.Tensor], torch.Tensor]
#: ``sample_prior(n, generator) -> (n, D)``
SamplePriorFn = Callable[[int, "torch.Generator | None"], torch.Tensor]

# Columns of the extras the MH state carries: the prior and likelihood of each
# position ride along with it, so that re-tempering needs no new evaluation.
_LOG_PRIOR_COL, _LOG_LIK_COL, _USER_COLS = 0, 1, 2


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return value


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SMCConfig:
    """Settings of an SMC run; :func:`run_smc` documents each field.

    ``__post_init__`` checks every field (raising :class:`InvalidInputError`
    that names it) and fills in the defaults that depend on others:
    ``max_moves`` (the larger of ``num_moves`` and :data:`MAX_MOVES`) and
    ``slow_ess_fraction`` (``target_ess_fraction``).

    Examples
    --------
    >>> SMCConfig(num_runs=2, particles_per_run=16).max_moves
    30
    >>> SMCConfig(particles_per_run=1)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: particles_per_run must be at least 2 (a run's spread sets its proposal), got 1
    """

    num_runs: int = 8
    particles_per_run: int = 512
    target_ess_fraction: float = 0.5
    slow_ess_fraction: float | None = None
    num_moves: int = DEFAULT_MOVES
    max_moves: int | None = None
    min_moved_fraction: float = MIN_MOVED_FRACTION
    num_final_draws: int = 10
    max_stages: int = 200
    move: str = "independent"
    num_components: int = NUM_COMPONENTS
    proposal_inflation: float = PROPOSAL_INFLATION
    defensive_weight: float = DEFENSIVE_WEIGHT
    rw_covariance: bool = False
    chain_length: int | None = None
    resampling: str = "systematic"

    def __post_init__(self):
        # The checks run in the order run_smc has always run them: with several bad
        # fields, the same one is named.
        _positive_int("num_runs", self.num_runs)
        m = _positive_int("particles_per_run", self.particles_per_run)
        if m < 2:
            raise InvalidInputError(
                f"particles_per_run must be at least 2 (a run's spread sets its proposal), got {m!r}"
            )
        _positive_int("num_moves", self.num_moves)
        if self.max_moves is None:
            object.__setattr__(self, "max_moves", max(self.num_moves, MAX_MOVES))
        max_moves = self.max_moves
        if isinstance(max_moves, bool) or not isinstance(max_moves, int) or max_moves < self.num_moves:
            raise InvalidInputError(f"max_moves must be an integer >= num_moves ({self.num_moves}), got {max_moves!r}")
        if not 0 <= self.min_moved_fraction <= 1:
            raise InvalidInputError(f"min_moved_fraction must be in [0, 1], got {self.min_moved_fraction!r}")
        if self.move in FITTED_MOVES and m < MIN_PARTICLES_PER_RUN_FITTED:
            raise InvalidInputError(
                f"move={self.move!r} fits a mixture to each half-run and needs particles_per_run >= "
                f"{MIN_PARTICLES_PER_RUN_FITTED}, got {m}; use move='rw' or more particles"
            )
        _positive_int("num_final_draws", self.num_final_draws)
        _positive_int("max_stages", self.max_stages)
        if self.move not in MOVES:
            raise InvalidInputError(f"move must be one of {', '.join(MOVES)}, got {self.move!r}")
        if self.resampling not in RESAMPLINGS:
            raise InvalidInputError(f"resampling must be one of {', '.join(RESAMPLINGS)}, got {self.resampling!r}")
        if not 0 <= self.defensive_weight < 1:
            raise InvalidInputError(f"defensive_weight must be in [0, 1), got {self.defensive_weight!r}")
        target = self.target_ess_fraction
        if isinstance(target, bool) or not 0 < target < 1:
            raise InvalidInputError(f"target_ess_fraction must be in (0, 1), got {target!r}")
        if self.slow_ess_fraction is None:
            object.__setattr__(self, "slow_ess_fraction", target)
        slow = self.slow_ess_fraction
        if isinstance(slow, bool) or not target <= slow < 1:
            raise InvalidInputError(f"slow_ess_fraction must be in [target_ess_fraction, 1), got {slow!r}")
        p = self.chain_length
        # At least 2 chains per run: the random-walk scale is the spread of a run's chain starts.
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or p < 2 or m % p or m // p < 2):
            raise InvalidInputError(
                f"chain_length must be an integer >= 2 that divides particles_per_run ({m}) into at least 2 "
                f"chains per run, got {p!r}"
            )

    @property
    def num_chains(self) -> int:
        """Chains (``M0 = M / P``) each run's waste-free stage starts; ``M`` without ``chain_length``."""
        return self.particles_per_run // (self.chain_length or 1)

    @property
    def num_particles(self) -> int:
        """``N = R * M``, all runs' particles."""
        return self.num_runs * self.particles_per_run

    def num_fitted_components(self, dim: int) -> int:
        """Components of each half-run's mixture in ``dim`` dimensions (see
        :data:`POINTS_PER_COMPONENT_AND_DIMENSION`)."""
        half_run = self.particles_per_run // 2
        return max(1, min(self.num_components, half_run // (POINTS_PER_COMPONENT_AND_DIMENSION * dim)))


# --------------------------------------------------------------------------- target and state


def _evaluate(log_prior_fn: LogPriorFn, log_likelihood_fn: LogLikelihoodFn, z: torch.Tensor):
    """``(log prior (N,), log likelihood (N,), user extras (N, E) or None)``, each checked."""
    try:
        lp, _ = mh.evaluate(log_prior_fn, z)
    except ModelOutputError as exc:
        raise ModelOutputError(f"log_prior_fn: {exc}") from exc
    try:
        ll, extras = mh.evaluate(log_likelihood_fn, z)
    except ModelOutputError as exc:
        raise ModelOutputError(f"log_likelihood_fn: {exc}") from exc
    if extras is not None and (extras.ndim != 2 or extras.shape[0] != z.shape[0]):
        raise ModelOutputError(
            f"log_likelihood_fn: extras have shape {tuple(extras.shape)}, expected ({z.shape[0]}, E)"
        )
    return lp, ll, extras


def _tempered(log_prior: torch.Tensor, log_likelihood: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``log prior + beta * loglik`` per particle, with ``-inf`` likelihoods kept at ``-inf``."""
    b = beta.to(log_likelihood.dtype)
    return log_prior + torch.where(log_likelihood == -math.inf, log_likelihood, b * log_likelihood)


@dataclass(frozen=True)
class TemperedTarget:
    """The prior and likelihood of a run, tempered at each particle's own inverse temperature.

    Every evaluation is checked (:func:`_evaluate`) and packed into the extras
    columns the MH state carries: log prior, log likelihood, then the
    likelihood's own extras (when it returned some at the start).
    """

    log_prior_fn: LogPriorFn
    log_likelihood_fn: LogLikelihoodFn
    has_extras: bool
    dtype: torch.dtype
    log_likelihood_bound: float | None = None  # the likelihood's maximum, where known (next_temperature)

    def pack(self, lp: torch.Tensor, ll: torch.Tensor, extras: torch.Tensor | None) -> torch.Tensor:
        """``(N, 2 + E)`` columns: log prior, log likelihood, user extras."""
        cols = [lp.to(self.dtype).unsqueeze(-1), ll.to(self.dtype).unsqueeze(-1)]
        if extras is not None:
            cols.append(extras.to(self.dtype))
        return torch.cat(cols, dim=-1)

    def log_density(self, beta_particles: torch.Tensor) -> mh.LogDensityFn:
        """Log density ``log prior + beta * loglik`` at each particle's own run's beta, with packed extras."""

        def log_density(position):
            lp, ll, extras = _evaluate(self.log_prior_fn, self.log_likelihood_fn, position)
            if self.has_extras and extras is None:
                raise ModelOutputError("log_likelihood_fn returned extras at first and none later")
            return _tempered(lp, ll, beta_particles), self.pack(lp, ll, extras if self.has_extras else None)

        return log_density

    def tempered_log_likelihood(self, beta_particles: torch.Tensor) -> elliptical.LogLikelihoodFn:
        """``beta * loglik`` of the chains ``index`` names, at their own run's beta, with packed extras
        (the elliptical move's likelihood: its ellipses keep the standard-normal prior invariant)."""

        def log_likelihood(position, index):
            lp, ll, extras = _evaluate(self.log_prior_fn, self.log_likelihood_fn, position)
            if self.has_extras and extras is None:
                raise ModelOutputError("log_likelihood_fn returned extras at first and none later")
            tempered = _tempered(torch.zeros_like(ll), ll, beta_particles[index])
            return tempered, self.pack(lp, ll, extras if self.has_extras else None)

        return log_likelihood

    def mh_state(self, particles: torch.Tensor, extras: torch.Tensor, beta_particles: torch.Tensor) -> mh.MHState:
        """The MH state of ``particles`` at ``beta_particles``, re-tempered from their extras (no evaluation)."""
        log_density = _tempered(extras[:, _LOG_PRIOR_COL], extras[:, _LOG_LIK_COL], beta_particles)
        return mh.MHState(particles, log_density, extras)


@dataclass(frozen=True)
class SMCState:
    """What persists between stages, for ``R`` runs of ``M`` particles (``N = R * M``, run-major).

    The particles are equally weighted: every stage resamples (see the module
    docstring, step 3), so no log weights persist. Per-run tensors are float64.
    """

    particles: torch.Tensor  # (N, D)
    extras: torch.Tensor  # (N, 2 + E): log prior, log likelihood, the likelihood's own extras
    beta: torch.Tensor  # (R,) inverse temperature of each run
    log_evidence: torch.Tensor  # (R,) each run's log Z estimate so far
    log_scale_factor: torch.Tensor  # (R,) log c_r of the random-walk proposal
    ess_target: torch.Tensor  # (R,) the ESS fraction each run's next reweighting keeps
    guarded_stages: torch.Tensor  # (R,) stages whose step the likelihood's bound held back (GUARDED_STAGES)

    @property
    def num_runs(self) -> int:
        """``R``."""
        return self.beta.shape[0]

    @property
    def log_likelihood(self) -> torch.Tensor:
        """``(R, M)`` log likelihood of every particle."""
        return self.extras[:, _LOG_LIK_COL].view(self.num_runs, -1)


@dataclass(frozen=True)
class StageInfo:
    """What one stage reports (0-d tensors stay on the particles' device until the run ends)."""

    beta: torch.Tensor  # (R,) the runs' new inverse temperatures
    ess_fraction: torch.Tensor  # () mean ESS / M before resampling, over the runs still tempering
    acceptance: torch.Tensor  # () mean acceptance over the stage's moves and runs
    acceptance_per_move: tuple[torch.Tensor, ...]  # () each move's mean acceptance over all runs
    evaluations: torch.Tensor  # () likelihood evaluations of the stage's moves

    @property
    def num_moves(self) -> int:
        """Moves the stage made (between ``num_moves`` and ``max_moves``)."""
        return len(self.acceptance_per_move)


def _check_standard_normal(log_prior: torch.Tensor, particles: torch.Tensor) -> None:
    """Refuse ``move="elliptical"`` unless ``log_prior_fn`` is the standard normal at the first draws:
    the ellipses keep only that prior invariant, so any other would be sampled wrongly, silently."""
    dim = particles.shape[1]
    normal = -0.5 * particles.to(torch.float64).square().sum(-1) - 0.5 * dim * math.log(2 * math.pi)
    if not torch.allclose(log_prior.to(torch.float64), normal, rtol=STANDARD_NORMAL_TOLERANCE,
                          atol=STANDARD_NORMAL_TOLERANCE):
        raise InvalidInputError(
            "move='elliptical' needs a standard-normal prior N(0, I), but log_prior_fn differs from it at the "
            "prior draws; sample in a standard-normal space (space='normal') or use another move"
        )


def init(particles: torch.Tensor, log_prior_fn: LogPriorFn, log_likelihood_fn: LogLikelihoodFn,
         config: SMCConfig, log_likelihood_bound: float | None = None) -> tuple[SMCState, TemperedTarget]:
    """The state of every run at ``beta = 0`` from exact prior draws, and the target they temper.

    Parameters
    ----------
    particles : torch.Tensor, (R * M, D)
        Draws from the prior, run-major.
    log_prior_fn, log_likelihood_fn : callable
        As in :func:`run_smc`.
    config : SMCConfig
    log_likelihood_bound : float, optional
        As in :func:`run_smc`.

    Returns
    -------
    (SMCState, TemperedTarget)

    Raises
    ------
    ModelOutputError
        When a draw has zero prior density, or a model returns NaN or ``+inf``.

    Examples
    --------
    >>> z = torch.randn(8, 1, generator=torch.Generator().manual_seed(0))
    >>> state, target = init(z, lambda z: -0.5 * z.square().sum(-1), lambda z: -z[:, 0].abs(),
    ...                      SMCConfig(num_runs=2, particles_per_run=4, move="rw"))
    >>> state.beta.tolist(), state.extras.shape, target.has_extras
    ([0.0, 0.0], torch.Size([8, 2]), False)
    """
    lp, ll, user_extras = _evaluate(log_prior_fn, log_likelihood_fn, particles)
    if (lp == -math.inf).any():
        raise ModelOutputError(
            f"log_prior_fn is -inf at {int((lp == -math.inf).sum())} of {particles.shape[0]} draws of sample_prior: "
            "the two disagree about the prior's support"
        )
    if config.move == "elliptical":
        _check_standard_normal(lp, particles)
    if log_likelihood_bound is not None and not (isinstance(log_likelihood_bound, (int, float))
                                                 and math.isfinite(log_likelihood_bound)):
        raise InvalidInputError(f"log_likelihood_bound must be a finite number, got {log_likelihood_bound!r}")
    target = TemperedTarget(log_prior_fn, log_likelihood_fn, user_extras is not None, particles.dtype,
                            None if log_likelihood_bound is None else float(log_likelihood_bound))
    runs, dev, dim = config.num_runs, particles.device, particles.shape[1]
    state = SMCState(
        particles=particles,
        extras=target.pack(lp, ll, user_extras),
        beta=torch.zeros(runs, device=dev, dtype=torch.float64),
        log_evidence=torch.zeros(runs, device=dev, dtype=torch.float64),
        log_scale_factor=torch.full((runs,), math.log(RANDOM_WALK_SCALE / math.sqrt(dim)), device=dev,
                                    dtype=torch.float64),
        ess_target=torch.full((runs,), float(config.target_ess_fraction), device=dev, dtype=torch.float64),
        guarded_stages=torch.zeros(runs, device=dev, dtype=torch.long),
    )
    return state, target


# --------------------------------------------------------------------------- one stage


@dataclass(frozen=True)
class Proposals:
    """What a stage's moves propose from; fixed for the stage, so every move leaves its target invariant."""

    scale: torch.Tensor  # (N, D) random-walk standard deviations c_r * sd_rd
    mixture: GaussianMixture | None  # 2R cross-fitted mixtures; None for move="rw"
    group: torch.Tensor | None  # (N,) the mixture each particle proposes from


def _random_walk_scale(particles: torch.Tensor, log_scale_factor: torch.Tensor, runs: int,
                       covariance: bool = False) -> torch.Tensor:
    """Per-particle random-walk scale from each run's current spread: ``(N, D)`` standard deviations
    ``c_r * sd_rd``, or with ``covariance`` the ``(N, D, D)`` factors ``c_r * chol(Sigma_r)`` of each
    run's particle covariance (proposals along the directions the particles spread in)."""
    n, dim = particles.shape
    m = n // runs
    grouped = particles.reshape(runs, m, dim)
    factor = log_scale_factor.exp().to(particles.dtype)
    if covariance:
        centred = grouped - grouped.mean(dim=1, keepdim=True)
        cov = centred.transpose(1, 2) @ centred / (m - 1)
        cov = cov + MIN_POPULATION_SD ** 2 * torch.eye(dim, device=particles.device, dtype=particles.dtype)
        chol = torch.linalg.cholesky(cov.to(torch.float64)).to(particles.dtype)  # (R, D, D)
        return (factor.view(-1, 1, 1) * chol).repeat_interleave(m, dim=0)
    spread = grouped.std(dim=1).clamp(min=MIN_POPULATION_SD)  # (R, D)
    return (factor.unsqueeze(-1) * spread).repeat_interleave(m, dim=0)


def _per_latent_sd(scale: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` proposal standard deviations of a random-walk scale, diagonal or factor ``L``."""
    return scale.square().sum(-1).sqrt() if scale.ndim == 3 else scale


def _proposals(generator, particles: torch.Tensor, log_scale_factor: torch.Tensor, config: SMCConfig) -> Proposals:
    """Fit the stage's proposals to its (resampled) particles."""
    fitted, group = None, None
    if config.move in FITTED_MOVES:
        fitted, group = kernel.cross_fitted_mixture(
            generator, particles, config.num_runs, num_components=config.num_fitted_components(particles.shape[1]),
            inflation=config.proposal_inflation, defensive_weight=config.defensive_weight,
        )
    return Proposals(_random_walk_scale(particles, log_scale_factor, config.num_runs, config.rw_covariance),
                     fitted, group)


@dataclass(frozen=True)
class _MoveTarget:
    """The tempered target of a stage's moves, in the forms the kernels take."""

    log_density: mh.LogDensityFn  # log prior + beta * loglik, with packed extras (MH moves)
    log_likelihood: elliptical.LogLikelihoodFn  # beta * loglik of the chains named (elliptical moves)
    beta_particles: torch.Tensor  # (N,) each particle's run's beta

    @classmethod
    def at(cls, target: TemperedTarget, beta_particles: torch.Tensor) -> "_MoveTarget":
        """The moves' target at ``beta_particles``."""
        return cls(target.log_density(beta_particles), target.tempered_log_likelihood(beta_particles), beta_particles)


def _elliptical_move(generator, state: mh.MHState, move_target: _MoveTarget):
    """One elliptical slice step of every particle, ``(state, moved, evaluations)``."""
    ll = state.extras[:, _LOG_LIK_COL]
    tempered = _tempered(torch.zeros_like(ll), ll, move_target.beta_particles)
    new, info = elliptical.step(generator, elliptical.SliceState(state.position, tempered, state.extras),
                                move_target.log_likelihood)
    log_density = _tempered(new.extras[:, _LOG_PRIOR_COL], new.extras[:, _LOG_LIK_COL], move_target.beta_particles)
    return mh.MHState(new.position, log_density, new.extras), info.moved, info.proposals.sum()


def _one_move(generator, j: int, state: mh.MHState, move_target: _MoveTarget, proposals: Proposals,
              config: SMCConfig):
    """Move ``j`` of a stage, ``(state, accepted (N,), evaluations, is_random_walk)``.

    Elliptical moves every time for ``move="elliptical"``; otherwise independent (even ``j``) or random
    walk, as ``config.move`` says. Moves beyond ``num_moves`` alternate random walk and independent
    whatever the MH move: where the fitted mixture fits the tempered target poorly, local moves still
    separate resampled copies."""
    n = state.position.shape[0]
    if config.move == "elliptical":
        new, moved, evaluations = _elliptical_move(generator, state, move_target)
        return new, moved, evaluations, False
    extra = j >= config.num_moves
    if proposals.mixture is not None and ((config.move == "independent" and not extra) or (j - extra) % 2 == 0):
        new, info = imh.step(generator, state, move_target.log_density, proposal=proposals.mixture,
                             group=proposals.group)
        return new, info.accepted, n, False
    new, info = mh.step(generator, state, move_target.log_density, scale=proposals.scale)
    return new, info.accepted, n, True


@dataclass(frozen=True)
class _MoveTally:
    """A stage's acceptance rates, per run, summed over its moves (divided by the count where used)."""

    accepted: torch.Tensor  # (R,) float64, every move
    rw_accepted: torch.Tensor  # (R,) float64, the random-walk moves only
    rw_moves: int
    per_move: tuple[torch.Tensor, ...]  # () each move's mean over all runs
    evaluations: torch.Tensor  # () likelihood evaluations of the stage's moves


def _tally(rates: list[torch.Tensor], is_rw: list[bool], step_evaluations: list, dev) -> _MoveTally:
    """The :class:`_MoveTally` of a stage's moves from each move's per-run acceptance ``(R,)``."""
    accepted = torch.zeros_like(rates[0])
    rw_accepted = torch.zeros_like(rates[0])
    evaluations = torch.zeros((), device=dev, dtype=torch.long)
    for rate, rw, evals in zip(rates, is_rw, step_evaluations):
        evaluations = evaluations + evals
        if rw:
            rw_accepted = rw_accepted + rate
        accepted = accepted + rate
    return _MoveTally(accepted, rw_accepted, sum(is_rw), tuple(rate.mean() for rate in rates), evaluations)


def _move(generator, state: mh.MHState, move_target: _MoveTarget, proposals: Proposals,
          config: SMCConfig) -> tuple[mh.MHState, _MoveTally]:
    """``num_moves`` moves, then more (up to ``max_moves``) until ``min_moved_fraction`` of every run moved."""
    runs, m = config.num_runs, config.particles_per_run
    rates, is_rw, step_evaluations = [], [], []
    moved = torch.zeros(runs * m, device=state.position.device, dtype=torch.bool)
    for j in range(config.max_moves):
        state, step_accepted, evaluations, rw = _one_move(generator, j, state, move_target, proposals, config)
        moved |= step_accepted
        rates.append(step_accepted.view(runs, m).to(torch.float64).mean(dim=1))
        is_rw.append(rw)
        step_evaluations.append(evaluations)
        # Keep moving until enough particles of every run have left their resampled copy:
        # with low acceptance a fixed count would leave runs collapsed onto few ancestors.
        if config.num_moves <= j + 1 < config.max_moves and (
            float(moved.view(runs, m).to(torch.float64).mean(dim=1).min()) >= config.min_moved_fraction
        ):
            break
    return state, _tally(rates, is_rw, step_evaluations, state.position.device)


def _chain_proposals(generator, state: SMCState, log_w: torch.Tensor, starts: torch.Tensor,
                     config: SMCConfig) -> Proposals:
    """A waste-free stage's proposals for the chains started at rows ``starts`` of ``state``.

    The mixtures are cross-fitted to each run's particles weighted by ``log_w`` (R, M), before
    resampling: a chain proposes from the half of its run that its start was not drawn from, so
    its proposal never depends on its own states. The random-walk scales are the starts' spread.
    """
    fitted, group = None, None
    if config.move in FITTED_MOVES:
        fitted, slot_group = kernel.cross_fitted_mixture(
            generator, state.particles, config.num_runs,
            num_components=config.num_fitted_components(state.particles.shape[1]),
            inflation=config.proposal_inflation, defensive_weight=config.defensive_weight, log_weights=log_w,
        )
        group = slot_group[starts]
    scale = _random_walk_scale(state.particles[starts], state.log_scale_factor, config.num_runs, config.rw_covariance)
    return Proposals(scale, fitted, group)


def _waste_free_moves(generator, state: SMCState, log_w: torch.Tensor, beta: torch.Tensor, target: TemperedTarget,
                      config: SMCConfig) -> tuple[torch.Tensor, torch.Tensor, _MoveTally]:
    """Steps 3-4 of waste-free SMC: ``(positions (N, D), extras (N, 2 + E), tally)`` of every run's
    ``M0`` chains of ``P`` states (the start, then ``P - 1`` moves), run-major, each chain contiguous."""
    runs, m, m0 = config.num_runs, config.particles_per_run, config.num_chains
    offsets = (torch.arange(runs, device=beta.device) * m).unsqueeze(-1)
    starts = (kernel.systematic_resample(generator, log_w, m0) + offsets).flatten()  # (R * M0,)
    proposals = _chain_proposals(generator, state, log_w, starts, config)
    beta_chains = beta.repeat_interleave(m0)
    move_target = _MoveTarget.at(target, beta_chains)
    chain = target.mh_state(state.particles[starts], state.extras[starts], beta_chains)
    positions, extras = [chain.position], [chain.extras]
    rates, is_rw, step_evaluations = [], [], []
    for j in range(config.chain_length - 1):
        chain, step_accepted, evaluations, rw = _one_move(generator, j, chain, move_target, proposals, config)
        positions.append(chain.position)
        extras.append(chain.extras)
        rates.append(step_accepted.view(runs, m0).to(torch.float64).mean(dim=1))
        is_rw.append(rw)
        step_evaluations.append(evaluations)
    # (R * M0, P, ...) -> (R * M, ...): chains are run-major, so their states are too
    return (torch.stack(positions, dim=1).flatten(0, 1), torch.stack(extras, dim=1).flatten(0, 1),
            _tally(rates, is_rw, step_evaluations, beta.device))


def _adapt_scale_factor(log_scale_factor: torch.Tensor, tally: _MoveTally) -> torch.Tensor:
    """``log c_r += SCALE_ADAPTATION_GAIN * (acceptance_r - RW_TARGET_ACCEPTANCE)`` over the random-walk moves.

    ``acceptance_r`` averages ``moves * M`` indicators, so is nearly noise-free. At gain 3,
    acceptance 0 shrinks ``c`` by ``e^-0.9 ~ 0.4`` per stage, acceptance 1 grows it
    ``e^2.1 ~ 8``-fold, and an acceptance off by 0.01 moves ``c`` by 3%.
    """
    if not tally.rw_moves:
        return log_scale_factor
    rate = tally.rw_accepted / tally.rw_moves
    return log_scale_factor + SCALE_ADAPTATION_GAIN * (rate - RW_TARGET_ACCEPTANCE)


def _next_beta(state: SMCState, log_likelihood_bound: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 1: ``(next beta, guarded stages so far)`` of every run; a run guards by the likelihood's bound
    for at most :data:`GUARDED_STAGES` stages, then tempers on its particles' ESS alone."""
    free = kernel.next_temperature(state.log_likelihood, state.beta, state.ess_target)
    if log_likelihood_bound is None:
        return free, state.guarded_stages
    guarded = kernel.next_temperature(state.log_likelihood, state.beta, state.ess_target, log_likelihood_bound)
    held = (guarded < free) & (state.guarded_stages < GUARDED_STAGES)
    return torch.where(held, guarded, free), state.guarded_stages + held.long()


def _reweight(state: SMCState, log_likelihood_bound: float | None):
    """Steps 1-2: ``(next beta, incremental log weights (R, M), log evidence, mean ESS / M, guarded
    stages)``."""
    loglik = state.log_likelihood
    new_beta, guarded_stages = _next_beta(state, log_likelihood_bound)
    active = state.beta < 1
    log_w = kernel.tempered_log_weights(loglik, new_beta - state.beta)  # (R, M), float64
    log_evidence = state.log_evidence + kernel.log_mean_exp(log_w, dim=1)
    ess = kernel.effective_sample_size(log_w) / loglik.shape[1]
    return new_beta, log_w, log_evidence, (ess * active).sum() / active.sum(), guarded_stages


def step(generator: torch.Generator | None, state: SMCState, target: TemperedTarget,
         config: SMCConfig) -> tuple[SMCState, StageInfo]:
    """One tempering stage of every run: reweight, resample, move (the module docstring's steps 1-4).

    Parameters
    ----------
    generator : torch.Generator or None
        Source of randomness (on the particles' device).
    state : SMCState
        Equally weighted particles of every run; a run already at ``beta = 1``
        is resampled by the identity (waste-free: one chain start per block of
        ``P`` particles) and moved at the posterior.
    target : TemperedTarget
    config : SMCConfig

    Returns
    -------
    (SMCState, StageInfo)

    Examples
    --------
    >>> cfg = SMCConfig(num_runs=2, particles_per_run=32, move="rw")
    >>> g = torch.Generator().manual_seed(0)
    >>> state, target = init(torch.randn(64, 1, generator=g), lambda z: -0.5 * z.square().sum(-1),
    ...                      lambda z: -50.0 * (z[:, 0] - 1).square(), cfg)
    >>> state, info = step(g, state, target, cfg)
    >>> bool(((info.beta > 0) & (info.beta < 1)).all()), info.num_moves
    (True, 4)
    """
    runs, m = config.num_runs, config.particles_per_run
    beta, log_w, log_evidence, ess_fraction, guarded_stages = _reweight(state, target.log_likelihood_bound)
    if config.chain_length is None:
        offsets = (torch.arange(runs, device=beta.device) * m).unsqueeze(-1)  # (R, 1): run-local -> flat index
        if config.resampling == "ordered":
            own = kernel.ordered_systematic_resample(generator, log_w, state.particles.view(runs, m, -1))
        else:
            own = kernel.systematic_resample(generator, log_w)
        idx = (own + offsets).flatten()
        particles, extras = state.particles[idx], state.extras[idx]
        proposals = _proposals(generator, particles, state.log_scale_factor, config)
        beta_particles = beta.repeat_interleave(m)
        moved, tally = _move(generator, target.mh_state(particles, extras, beta_particles),
                             _MoveTarget.at(target, beta_particles), proposals, config)
        positions, extras = moved.position, moved.extras
    else:
        positions, extras, tally = _waste_free_moves(generator, state, log_w, beta, target, config)
    j = len(tally.per_move)
    slow = torch.full_like(tally.accepted, config.slow_ess_fraction)  # float64, like every per-run tensor
    ess_target = slow.where(tally.accepted / j < SLOW_ACCEPTANCE, config.target_ess_fraction)
    new_state = SMCState(positions, extras, beta, log_evidence,
                         _adapt_scale_factor(state.log_scale_factor, tally), ess_target, guarded_stages)
    return new_state, StageInfo(beta, ess_fraction, tally.accepted.mean() / j, tally.per_move, tally.evaluations)


# --------------------------------------------------------------------------- draws at the posterior


@dataclass(frozen=True)
class Draws:
    """The moves at ``beta = 1`` that are the result's draws (on the particles' device)."""

    positions: torch.Tensor  # (N, K, D)
    accepted: torch.Tensor  # (N, K) bool
    extras: torch.Tensor | None  # (N, K, E), the likelihood's own extras
    acceptance_per_move: tuple[torch.Tensor, ...]  # () each draw's mean acceptance
    proposal_scale: torch.Tensor  # (N, D) the random-walk scale used
    evaluations: torch.Tensor  # () likelihood evaluations of the moves


def final_draws(generator: torch.Generator | None, state: SMCState, target: TemperedTarget, config: SMCConfig,
                progress: ProgressFn | None = None) -> Draws:
    """``num_final_draws`` moves at the posterior, proposals frozen, every one kept.

    Parameters
    ----------
    generator : torch.Generator or None
    state : SMCState
        Every run at ``beta = 1``.
    target : TemperedTarget
    config : SMCConfig
    progress : callable, optional
        Called with ``("sampling", k, num_final_draws)`` after every draw.

    Returns
    -------
    Draws

    Examples
    --------
    >>> cfg = SMCConfig(num_runs=1, particles_per_run=16, move="rw", num_final_draws=3)
    >>> state, target = init(torch.zeros(16, 2), lambda z: -0.5 * z.square().sum(-1),
    ...                      lambda z: torch.zeros(z.shape[0]), cfg)
    >>> draws = final_draws(None, state, target, cfg)
    >>> draws.positions.shape, len(draws.acceptance_per_move)
    (torch.Size([16, 3, 2]), 3)
    """
    beta_particles = torch.ones(config.num_particles, device=state.particles.device, dtype=torch.float64)
    move_target = _MoveTarget.at(target, beta_particles)
    mh_state = target.mh_state(state.particles, state.extras, beta_particles)
    proposals = _proposals(generator, state.particles, state.log_scale_factor, config)
    positions, accepted, extras, rates = [], [], [], []
    evaluations = torch.zeros((), device=state.particles.device, dtype=torch.long)
    for k in range(config.num_final_draws):
        mh_state, step_accepted, step_evaluations, _ = _one_move(generator, k, mh_state, move_target, proposals,
                                                                 config)
        evaluations = evaluations + step_evaluations
        positions.append(mh_state.position)
        accepted.append(step_accepted)
        if target.has_extras:
            extras.append(mh_state.extras[:, _USER_COLS:])
        rates.append(step_accepted.to(torch.float64).mean())
        report(progress, "sampling", k + 1, config.num_final_draws)
    return Draws(torch.stack(positions, dim=1), torch.stack(accepted, dim=1),
                 torch.stack(extras, dim=1) if extras else None, tuple(rates), _per_latent_sd(proposals.scale),
                 evaluations)


# --------------------------------------------------------------------------- driver


def _prior_draws(sample_prior: SamplePriorFn, n: int, generator, device) -> torch.Tensor:
    """``n`` checked draws of ``sample_prior``, on ``device`` when one is given."""
    z = sample_prior(n, generator)
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[0] != n:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise InvalidInputError(f"sample_prior({n}, generator) must return a ({n}, D) tensor, got {shape}")
    if device is not None:
        z = z.to(resolve_device(device))
    if generator is not None and generator.device.type != z.device.type:
        raise InvalidInputError(
            f"generator lives on {generator.device} but the particles on {z.device}; "
            "create the generator on the particles' device"
        )
    if not torch.isfinite(z).all():
        raise InvalidInputError("sample_prior returned non-finite entries")
    return z


def _temper(generator, state: SMCState, target: TemperedTarget, config: SMCConfig,
            progress: ProgressFn | None) -> tuple[SMCState, list[StageInfo]]:
    """Stages until every run reaches ``beta = 1``: the state there and every stage's report."""
    stages: list[StageInfo] = []
    lowest_beta = 0.0
    while lowest_beta < 1.0:
        if len(stages) == config.max_stages:
            raise ModelOutputError(
                f"SMC reached max_stages={config.max_stages} with runs still at beta={state.beta.tolist()} (< 1): "
                "the likelihood is too informative for this many stages; raise max_stages or target_ess_fraction"
            )
        state, stage = step(generator, state, target, config)
        stages.append(stage)
        lowest_beta = float(state.beta.min())  # the one host round-trip per stage: may we stop?
        report(progress, "tempering", int(lowest_beta * PROGRESS_RESOLUTION), PROGRESS_RESOLUTION)
    return state, stages


def _result(config: SMCConfig, names, extras_names, state: SMCState, stages: list[StageInfo], draws: Draws,
            start: float) -> SamplingResult:
    """The run as a :class:`SamplingResult` (see :func:`run_smc`, Returns)."""
    runs = config.num_runs
    schedule = torch.stack([s.beta for s in stages], dim=1).cpu().tolist()  # (R, stages); a finished run repeats 1.0
    log_evidence = state.log_evidence.cpu().tolist()
    moves_per_stage = [s.num_moves for s in stages]
    per_step = [rate for s in stages for rate in s.acceptance_per_move] + list(draws.acceptance_per_move)
    info: SMCRunInfo = {
        "log_evidence": log_evidence,
        "log_evidence_mean": sum(log_evidence) / runs,
        "log_evidence_pooled": float(kernel.log_mean_exp(state.log_evidence, dim=0)),
        "tempering_schedule": [[0.0] + row[: row.index(1.0) + 1] for row in schedule],
        "ess_per_stage": torch.stack([s.ess_fraction for s in stages]).cpu().tolist(),
        "num_stages": len(stages),
        "acceptance_per_stage": torch.stack([s.acceptance for s in stages]).cpu().tolist(),
        "moves_per_stage": moves_per_stage,
        "acceptance_per_step": torch.stack(per_step).cpu().tolist(),
        "proposal_scale_factor": state.log_scale_factor.exp().cpu().tolist(),
        "guarded_stages": state.guarded_stages.cpu().tolist(),
        "proposal_scale": draws.proposal_scale.view(runs, config.particles_per_run, -1)[:, 0].cpu().tolist(),
    }
    return SamplingResult(
        method="smc",
        latent_names=names,
        trace=draws.positions.cpu(),
        sample_stats={"accepted": draws.accepted.cpu()},
        extras_trace=draws.extras.cpu() if draws.extras is not None else None,
        extras_names=tuple(extras_names),
        num_warmup=0,
        num_evaluations=config.num_particles + int(sum(s.evaluations for s in stages) + draws.evaluations),
        seconds=time.perf_counter() - start,
        superchains=runs if runs > 1 else None,  # one run: split R-hat only
        info=info,
    )


def run_smc(
    log_prior_fn: LogPriorFn,
    log_likelihood_fn: LogLikelihoodFn,
    sample_prior: SamplePriorFn,
    *,
    num_runs: int = 8,
    particles_per_run: int = 512,
    target_ess_fraction: float = 0.5,
    slow_ess_fraction: float | None = None,
    num_moves: int = DEFAULT_MOVES,
    max_moves: int | None = None,
    min_moved_fraction: float = MIN_MOVED_FRACTION,
    num_final_draws: int = 10,
    max_stages: int = 200,
    move: str = "independent",
    num_components: int = NUM_COMPONENTS,
    proposal_inflation: float = PROPOSAL_INFLATION,
    defensive_weight: float = DEFENSIVE_WEIGHT,
    rw_covariance: bool = False,
    chain_length: int | None = None,
    resampling: str = "systematic",
    log_likelihood_bound: float | None = None,
    generator: torch.Generator | None = None,
    latent_names: Sequence[str] | None = None,
    extras_names: Sequence[str] = (),
    progress: ProgressFn | None = None,
    device: str | torch.device | None = None,
) -> SamplingResult:
    """Sample ``prior(z) * likelihood(z)`` by adaptively tempered SMC, ``num_runs`` runs in one batch.

    Each run anneals its ``M = particles_per_run`` particles from the prior
    (``beta = 0``) to the posterior (``beta = 1``) through the targets
    ``prior(z) * likelihood(z)^beta``, choosing each next ``beta`` so that the
    ESS falls to ``target_ess_fraction * M``, resampling at every stage and
    moving the particles with ``num_moves`` MH steps of the kind ``move`` names:

    - ``"independent"`` (default): independent MH
      (:mod:`~ppl_audit.inference.kernels.imh`) proposing from a Gaussian
      mixture fitted after resampling (South, Pettitt & Drovandi 2019). Each
      run's particles fall into two halves and a particle proposes from the
      mixture fitted on the *other* half of its run, so that its proposal never
      depends on its own position (cross-fitting; a proposal fitted on the
      particle itself over-fits it and biased the means by 4-5 Monte Carlo
      standard errors in our tests). A particle can jump to any mode in one move.
    - ``"rw"``: random-walk MH. The proposal of latent ``d`` in run ``r`` is
      ``c_r * sd_rd``: ``sd_rd`` the run's particle spread after resampling,
      ``c_r`` adapted after each stage towards acceptance
      :data:`~ppl_audit.inference.mcmc.RW_TARGET_ACCEPTANCE` (see :data:`SCALE_ADAPTATION_GAIN`).
    - ``"mixed"``: the two alternate, independent first.

    Runs share nothing (not even ``c`` or a mixture), so they are independent.
    Once every run is at 1, ``num_final_draws`` further moves (proposals
    frozen) are the draws.

    The log evidence of each run is the standard SMC estimator (Del Moral et
    al. 2006), ``sum_t log mean_i exp((beta_t - beta_{t-1}) loglik_i)``
    over equally weighted particles, whose exponential is unbiased for
    ``Z = integral prior(z) likelihood(z) dz`` (a fixed schedule; the adaptive
    one adds a bias that vanishes with ``M``).

    Parameters
    ----------
    log_prior_fn : callable
        ``(N, D) -> (N,)``; normalised if the log evidence is to mean anything.
    log_likelihood_fn : callable
        ``(N, D) -> (N,)`` or ``-> ((N,), extras (N, E))``. ``-inf`` (outside
        the support) is allowed; NaN and ``+inf`` are errors.
    sample_prior : callable
        ``(n, generator) -> (n, D)``: exact draws from the prior.
    num_runs : int
        Independent runs ``R`` (> 0); the result's ``superchains``.
    particles_per_run : int
        Particles ``M`` per run (>= 2).
    target_ess_fraction : float
        ESS kept after each reweighting, as a fraction of ``M``, in ``(0, 1)``.
    slow_ess_fraction : float, optional
        The ESS fraction (in ``[target_ess_fraction, 1)``) kept instead by a run whose moves accepted
        less than :data:`SLOW_ACCEPTANCE` over its last stage; by default the same.
    num_moves : int
        MH moves per stage at least (> 0).
    max_moves : int, optional
        MH moves per stage at most (>= ``num_moves``; default the larger of
        ``num_moves`` and :data:`MAX_MOVES`).
    min_moved_fraction : float
        After ``num_moves`` moves, a stage keeps moving until this fraction
        of every run's particles has accepted at least one move (or
        ``max_moves`` is reached), in ``[0, 1]``; 0 gives exactly ``num_moves``.
    move : {"independent", "rw", "mixed"}
        The MH moves (see above); ``independent`` and ``mixed`` need
        ``particles_per_run >= 8``.
    num_components : int
        Gaussian components of each fitted mixture (> 0), besides the defensive one.
    proposal_inflation : float
        Scale factor (>= 1) on the fitted components' covariances' square roots.
    defensive_weight : float
        Weight in ``[0, 1)`` of a defensive component (the half-run's mean and
        covariance, scaled by :data:`~ppl_audit.inference.kernels.mixture.DEFENSIVE_SCALE`).
    num_final_draws : int
        MH moves at ``beta = 1`` recorded as draws (> 0).
    chain_length : int, optional
        ``P``: waste-free SMC (Dau & Chopin 2022). Each stage resamples ``M / P`` chain starts per run,
        moves each ``P - 1`` times (move ``j`` of a chain is the stage's move ``j`` above) and keeps every
        state, instead of moving all ``M`` particles ``num_moves`` or more times; ``min_moved_fraction``
        and ``max_moves`` then play no part. An integer >= 2 dividing ``particles_per_run`` into at
        least 2 chains; by default (None) every particle is moved.
    resampling : {"systematic", "ordered"}
        ``"systematic"`` resamples each run in its particles' own order;
        ``"ordered"`` first puts them in a spatial order
        (:func:`~ppl_audit.inference.kernels.smc.ordered_systematic_resample`), so that a cluster of
        particles is copied as often as its weight says to within one per stretch of the order.
        Measured, it did not make the level sets' runs agree better (README, *Samplers*), so it
        is not the default.
    log_likelihood_bound : float, optional
        The likelihood's maximum (or an upper bound on it), where known: each next ``beta`` then also
        keeps the ESS with a virtual particle at the bound
        (:func:`~ppl_audit.inference.kernels.smc.next_temperature`), so that runs whose particles all
        sit on a plateau of the likelihood step gently instead of jumping past what none of them has
        found. A run holds its step back so for at most :data:`GUARDED_STAGES` stages (counted in
        ``info["guarded_stages"]``), which bounds the cost where no particle can reach the bound.
    max_stages : int
        Tempering stages allowed before giving up (> 0).
    generator : torch.Generator, optional
        Source of all randomness; must live on ``device``.
    latent_names : sequence of str, optional
    extras_names : sequence of str
        Names of the likelihood's extras columns.
    progress : callable, optional
        Called with ``("tempering", thousandths of the lowest beta, 1000)``
        after every stage and ``("sampling", k, num_final_draws)`` after every
        final draw.
    device : str or torch.device, optional
        Where the particles live (``"auto"`` picks CUDA when present); by
        default where ``sample_prior`` puts them.

    Returns
    -------
    SamplingResult
        ``method="smc"``; ``trace`` ``(R*M, num_final_draws, D)`` run-major;
        ``sample_stats["accepted"]`` ``(R*M, num_final_draws)``; ``superchains=R``;
        ``num_warmup=0``; ``num_evaluations`` counts prior + likelihood
        evaluations of every particle (``R*M*(1 + sum(moves_per_stage) + num_final_draws)``; with
        ``chain_length = P`` a stage's moves cost ``R*M*(P - 1)/P``).
        ``info``: ``log_evidence`` (R floats), ``log_evidence_mean`` (their
        mean), ``log_evidence_pooled`` (``log`` of the mean of the R evidence
        estimates: unbiased for ``Z`` pooled over runs, so less biased in ``log Z``),
        ``tempering_schedule`` (R lists of betas from 0 to 1),
        ``ess_per_stage`` (mean ESS / M before resampling over the runs still
        tempering), ``num_stages``, ``acceptance_per_stage``,
        ``acceptance_per_step`` (every MH move, final draws included),
        ``proposal_scale_factor`` (R floats, ``c_r``), ``proposal_scale``
        (R lists of D per-latent scales used for the final draws).

    Raises
    ------
    InvalidInputError
        On a non-positive count, ``particles_per_run < 2``,
        ``target_ess_fraction`` outside ``(0, 1)``, a badly shaped or
        non-finite prior draw, or a generator on another device.
    ModelOutputError
        When ``max_stages`` stages do not reach ``beta = 1``, a prior draw has
        zero prior density, a model returns NaN or ``+inf``, or every particle
        of a run has zero likelihood.

    Examples
    --------
    A standard normal prior and one observation ``y = 1`` with unit noise: the
    posterior is ``N(0.5, 0.5)`` and the evidence ``N(1; 0, 2)``.

    >>> prior = torch.distributions.Normal(0.0, 1.0)
    >>> res = run_smc(lambda z: prior.log_prob(z).sum(-1),
    ...               lambda z: torch.distributions.Normal(z[:, 0], 1.0).log_prob(torch.tensor(1.0)),
    ...               lambda n, g: torch.randn(n, 1, generator=g),
    ...               num_runs=4, particles_per_run=256, generator=torch.Generator().manual_seed(0))
    >>> res.trace.shape, res.superchains
    (torch.Size([1024, 10, 1]), 4)
    >>> abs(float(res.trace.mean()) - 0.5) < 0.1
    True
    >>> abs(res.info["log_evidence_mean"] - torch.distributions.Normal(0.0, 2 ** 0.5).log_prob(torch.tensor(1.0)).item()) < 0.1
    True
    """
    start = time.perf_counter()
    config = SMCConfig(
        num_runs=num_runs, particles_per_run=particles_per_run, target_ess_fraction=target_ess_fraction,
        slow_ess_fraction=slow_ess_fraction, num_moves=num_moves, max_moves=max_moves,
        min_moved_fraction=min_moved_fraction, num_final_draws=num_final_draws, max_stages=max_stages, move=move,
        num_components=num_components, proposal_inflation=proposal_inflation, defensive_weight=defensive_weight,
        rw_covariance=rw_covariance, chain_length=chain_length, resampling=resampling,
    )
    particles = _prior_draws(sample_prior, config.num_particles, generator, device)
    names = resolve_latent_names(latent_names, particles.shape[1])
    state, target = init(particles, log_prior_fn, log_likelihood_fn, config, log_likelihood_bound)
    state, stages = _temper(generator, state, target, config, progress)
    draws = final_draws(generator, state, target, config, progress)
    return _result(config, names, extras_names, state, stages, draws, start)


def pool_runs(results: Sequence[SamplingResult], superchains: int) -> SamplingResult:
    """Independent SMC results of ``superchains`` runs each, as one: superchain ``k`` pools run ``k`` of
    every result.

    Every run is independent of every other, so pooling them is a valid nested design: each superchain
    holds the same mix of runs (one from each result, whatever their sizes), so the superchains stay
    independent and identically distributed, and a superchain's mean is less variable than any of its
    runs'. That is how later rounds of larger runs raise the effective particles per superchain that
    nested R-hat asks for.

    Parameters
    ----------
    results : sequence of SamplingResult
        SMC results of ``superchains`` runs each (``superchains`` unset for a single run).
    superchains : int

    Returns
    -------
    SamplingResult
        Chains ordered superchain-major; ``info`` keeps every per-run list (runs in the new order),
        concatenates the per-stage lists, sums the counts, and adds ``rounds`` (the results pooled, so the
        runs per superchain) and ``log_evidence_superchains`` (each superchain's evidence: its runs' estimates, each unbiased
        for ``Z``, averaged with weights proportional to their particles).

    Examples
    --------
    >>> prior = torch.distributions.Normal(0.0, 1.0)
    >>> run = lambda m, seed: run_smc(lambda z: prior.log_prob(z).sum(-1), lambda z: -z[:, 0] ** 2,
    ...                               lambda n, g: torch.randn(n, 1, generator=g), num_runs=2, particles_per_run=m,
    ...                               move="rw", generator=torch.Generator().manual_seed(seed))
    >>> pooled = pool_runs([run(8, 0), run(16, 1)], superchains=2)
    >>> pooled.num_chains, pooled.superchains, pooled.info["rounds"]
    (48, 2, 2)
    """
    for r in results:
        if (r.superchains or 1) != superchains:
            raise InvalidInputError(f"cannot pool a result of {r.superchains or 1} runs into {superchains} superchains")

    def pooled(tensor_of):  # superchain k: run k of every result, in order
        per_result = [t.reshape(superchains, -1, *t.shape[1:]) for t in map(tensor_of, results)]
        return torch.cat([torch.cat([runs[k] for runs in per_result]) for k in range(superchains)])

    have_accepted = all("accepted" in r.sample_stats for r in results)
    return SamplingResult(
        method="smc", latent_names=results[0].latent_names, trace=pooled(lambda r: r.trace),
        sample_stats={"accepted": pooled(lambda r: r.sample_stats["accepted"])} if have_accepted else {},
        extras_trace=pooled(lambda r: r.extras_trace) if all(r.extras_trace is not None for r in results) else None,
        extras_names=results[0].extras_names, num_warmup=0,
        num_evaluations=sum(r.num_evaluations for r in results), seconds=sum(r.seconds for r in results),
        superchains=superchains if superchains > 1 else None,
        info=_pooled_info(results, superchains),
    )


def concat_runs(results: Sequence[SamplingResult]) -> SamplingResult:
    """Groups of independent SMC runs, each group one :func:`run_smc` call with its own random stream, as
    one result holding every run, group after group.

    This is how one round's runs are split over processes or machines (``run_groups``): the runs are
    independent, so their union is one set of runs. Per-run info is concatenated; each stage's ESS and
    acceptance become their mean over the groups still tempering at that stage, weighted by the groups'
    runs (``moves_per_stage`` takes the most moves), and the kept draws' acceptance is averaged alike.

    Parameters
    ----------
    results : sequence of SamplingResult
        SMC results (not pooled over rounds) with the same latents and the same number of kept draws.

    Returns
    -------
    SamplingResult
        ``superchains`` = all runs (``None`` for one run), counts and seconds summed.

    Examples
    --------
    >>> prior = torch.distributions.Normal(0.0, 1.0)
    >>> run = lambda r, seed: run_smc(lambda z: prior.log_prob(z).sum(-1), lambda z: -z[:, 0] ** 2,
    ...                               lambda n, g: torch.randn(n, 1, generator=g), num_runs=r, particles_per_run=8,
    ...                               move="rw", generator=torch.Generator().manual_seed(seed))
    >>> joined = concat_runs([run(2, 0), run(1, 1)])
    >>> joined.num_chains, joined.superchains, len(joined.info["log_evidence"])
    (24, 3, 3)
    """
    if not results:
        raise InvalidInputError("concat_runs needs at least one SMC result")
    draws = {r.trace.shape[1] for r in results}
    if len({r.latent_names for r in results}) > 1 or len(draws) > 1 or any("rounds" in r.info for r in results):
        raise InvalidInputError("concat_runs joins unpooled SMC results with the same latents and kept draws")
    num_draws = draws.pop()
    weights = [r.superchains or 1 for r in results]
    infos = [r.info for r in results]
    info = {key: [v for i in infos for v in i[key]] for key in _PER_RUN_KEYS}
    log_z = torch.tensor(info["log_evidence"], dtype=torch.float64)
    steps = [i["acceptance_per_step"] for i in infos]
    info.update(
        log_evidence_mean=float(log_z.mean()),
        log_evidence_pooled=float(kernel.log_mean_exp(log_z, dim=0)),
        num_stages=max(i["num_stages"] for i in infos),
        ess_per_stage=_stagewise([i["ess_per_stage"] for i in infos], weights),
        acceptance_per_stage=_stagewise([i["acceptance_per_stage"] for i in infos], weights),
        moves_per_stage=[max(column) for column in _columns([i["moves_per_stage"] for i in infos])],
        acceptance_per_step=(_stagewise([s[:len(s) - num_draws] for s in steps], weights)
                             + _stagewise([s[len(s) - num_draws:] for s in steps], weights)),
    )
    have_accepted = all("accepted" in r.sample_stats for r in results)
    runs = sum(weights)

    def joined(tensor_of):
        return torch.cat([tensor_of(r) for r in results])

    return SamplingResult(
        method="smc", latent_names=results[0].latent_names, trace=joined(lambda r: r.trace),
        sample_stats={"accepted": joined(lambda r: r.sample_stats["accepted"])} if have_accepted else {},
        extras_trace=joined(lambda r: r.extras_trace) if all(r.extras_trace is not None for r in results) else None,
        extras_names=results[0].extras_names, num_warmup=0,
        num_evaluations=sum(r.num_evaluations for r in results), seconds=sum(r.seconds for r in results),
        superchains=runs if runs > 1 else None, info=info,
    )


def _columns(lists: Sequence[Sequence]) -> list[list]:
    """Position ``j`` of every list that reaches it (groups stop tempering at different stages)."""
    return [[values[j] for values in lists if j < len(values)] for j in range(max(map(len, lists), default=0))]


def _stagewise(lists: Sequence[Sequence[float]], weights: Sequence[int]) -> list[float]:
    """Each position's mean over the lists that reach it, weighted by ``weights`` (a group's runs)."""
    weighted = _columns([[(v, w) for v in values] for values, w in zip(lists, weights)])
    return [sum(v * w for v, w in column) / sum(w for _, w in column) for column in weighted]


_PER_RUN_KEYS = ("log_evidence", "tempering_schedule", "proposal_scale_factor", "proposal_scale", "guarded_stages")
_PER_STAGE_KEYS = ("ess_per_stage", "acceptance_per_stage", "moves_per_stage", "acceptance_per_step")


def _pooled_info(results: Sequence[SamplingResult], superchains: int) -> dict:
    """:func:`pool_runs`' info."""
    infos = [r.info for r in results]
    info = {key: [i[key][k] for k in range(superchains) for i in infos] for key in _PER_RUN_KEYS}
    info.update({key: [v for i in infos for v in i[key]] for key in _PER_STAGE_KEYS})
    log_z = torch.tensor(info["log_evidence"], dtype=torch.float64).view(superchains, len(results))
    sizes = torch.tensor([r.num_chains // superchains for r in results], dtype=torch.float64)
    log_share = (sizes / sizes.sum()).log()
    info.update(
        log_evidence_mean=float(log_z.mean()),
        log_evidence_pooled=float(kernel.log_mean_exp(log_z.flatten(), dim=0)),
        num_stages=max(i["num_stages"] for i in infos),
        rounds=len(results),
        log_evidence_superchains=torch.logsumexp(log_z + log_share, dim=1).tolist(),
    )
    return info


__all__ = [
    "DEFAULT_MOVES",
    "DEFENSIVE_WEIGHT",
    "FITTED_MOVES",
    "MAX_MOVES",
    "MIN_MOVED_FRACTION",
    "MIN_PARTICLES_PER_RUN_FITTED",
    "MOVES",
    "NUM_COMPONENTS",
    "POINTS_PER_COMPONENT_AND_DIMENSION",
    "PROGRESS_RESOLUTION",
    "PROPOSAL_INFLATION",
    "RESAMPLINGS",
    "SCALE_ADAPTATION_GAIN",
    "SLOW_ACCEPTANCE",
    "STANDARD_NORMAL_TOLERANCE",
    "Draws",
    "LogLikelihoodFn",
    "LogPriorFn",
    "Proposals",
    "SMCConfig",
    "SMCState",
    "SamplePriorFn",
    "StageInfo",
    "TemperedTarget",
    "concat_runs",
    "final_draws",
    "init",
    "pool_runs",
    "run_smc",
    "step",
]
