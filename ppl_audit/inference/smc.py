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
   ``slow_ess_fraction * M`` after a stage whose moves rarely accepted;
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
"""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import torch

from ppl_audit._device import resolve_device
from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.inference.kernels import imh, mh, mixture
from ppl_audit.inference.kernels import smc as kernel
from ppl_audit.inference.mcmc import MIN_POPULATION_SD, TARGET_ACCEPTANCE
from ppl_audit.inference.result import SamplingResult
from ppl_audit.progress import ProgressFn, report

# The proposal factor c_r multiplies run r's per-latent particle spread. After
# every stage, log c_r += SCALE_ADAPTATION_GAIN * (acceptance_r - TARGET_ACCEPTANCE),
# acceptance_r averaged over the stage's moves and particles (a mean of
# num_moves * M indicators, so nearly noise-free). The gain is constant, not
# Robbins-Monro decaying as in the MCMC driver: each stage has a new target, c
# must track it rather than converge, and a few stages may be all there is.
# At 3, acceptance 0 shrinks c by e^-0.9 ~ 0.4 per stage, acceptance 1 grows it
# e^2.1 ~ 8-fold, and an acceptance off by 0.01 moves c by 3%.
SCALE_ADAPTATION_GAIN = 3.0
MOVES = ("rw", "independent", "mixed")
# Independent-proposal settings, chosen with benchmarks/levelset_throughput.py on
# the house/rocket level sets (concentration 10 and 1,000): 4 full-covariance
# components fitted to half a run each, widened by 1.2, plus a 10% defensive
# component (the run's own mean and covariance, doubled in scale) that bounds
# p/q in the tails. Without the defensive component a few particles stuck where
# q is thin and the spread of the run means (superchain ESS) fell 2-3 fold; with
# 8 components the halves (128 points at N = 4,096) over-fitted.
NUM_COMPONENTS = 4
PROPOSAL_INFLATION = 1.2
DEFENSIVE_WEIGHT = 0.1
DEFAULT_MOVES = 4  # moves per stage at least; an independent move at ~50% acceptance renews half the particles
# Optionally more, up to MAX_MOVES, until MIN_MOVED_FRACTION of every run's particles have accepted
# a move (the extra moves alternate random walk and independent). Off here; level sets turn it on
# (ppl_audit.sampling.SMC_MIN_MOVED_FRACTION, measured in benchmarks/levelset_smc_levers.py).
MIN_MOVED_FRACTION = 0.0
MAX_MOVES = 30  # a cap on the cost of a stage (30 moves reach 0.9 at 7% acceptance)
# A run whose moves accepted less than this over a stage tempers its next stage more gently
# (slow_ess_fraction): where the moves barely renew the particles, smaller steps lose fewer of them.
SLOW_ACCEPTANCE = 0.15
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
      :data:`~ppl_audit.inference.mcmc.TARGET_ACCEPTANCE` (see :data:`SCALE_ADAPTATION_GAIN`).
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
        evaluations of every particle (``R*M*(1 + sum(moves_per_stage) + num_final_draws)``).
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
    runs = _positive_int("num_runs", num_runs)
    m = _positive_int("particles_per_run", particles_per_run)
    if m < 2:
        raise InvalidInputError(
            f"particles_per_run must be at least 2 (a run's spread sets its proposal), got {particles_per_run!r}"
        )
    _positive_int("num_moves", num_moves)
    if max_moves is None:
        max_moves = max(num_moves, MAX_MOVES)
    if isinstance(max_moves, bool) or not isinstance(max_moves, int) or max_moves < num_moves:
        raise InvalidInputError(f"max_moves must be an integer >= num_moves ({num_moves}), got {max_moves!r}")
    if not 0 <= min_moved_fraction <= 1:
        raise InvalidInputError(f"min_moved_fraction must be in [0, 1], got {min_moved_fraction!r}")
    if move in MOVES and move != "rw" and m < MIN_PARTICLES_PER_RUN_FITTED:
        raise InvalidInputError(
            f"move={move!r} fits a mixture to each half-run and needs particles_per_run >= "
            f"{MIN_PARTICLES_PER_RUN_FITTED}, got {m}; use move='rw' or more particles"
        )
    _positive_int("num_final_draws", num_final_draws)
    _positive_int("max_stages", max_stages)
    if move not in MOVES:
        raise InvalidInputError(f"move must be one of {', '.join(MOVES)}, got {move!r}")
    if not 0 <= defensive_weight < 1:
        raise InvalidInputError(f"defensive_weight must be in [0, 1), got {defensive_weight!r}")
    if isinstance(target_ess_fraction, bool) or not 0 < target_ess_fraction < 1:
        raise InvalidInputError(f"target_ess_fraction must be in (0, 1), got {target_ess_fraction!r}")
    if slow_ess_fraction is None:
        slow_ess_fraction = target_ess_fraction
    if isinstance(slow_ess_fraction, bool) or not target_ess_fraction <= slow_ess_fraction < 1:
        raise InvalidInputError(f"slow_ess_fraction must be in [target_ess_fraction, 1), got {slow_ess_fraction!r}")
    n = runs * m

    # --- initial particles: exact prior draws, all at beta = 0 -------------------
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
    dim = z.shape[1]
    names = tuple(latent_names) if latent_names is not None else tuple(f"z{i}" for i in range(dim))
    if len(names) != dim:
        raise InvalidInputError(f"got {len(names)} latent names for {dim} latents")
    dev, dtype = z.device, z.dtype

    lp, ll, user_extras = _evaluate(log_prior_fn, log_likelihood_fn, z)
    if (lp == -math.inf).any():
        raise ModelOutputError(
            f"log_prior_fn is -inf at {int((lp == -math.inf).sum())} of {n} draws of sample_prior: "
            "the two disagree about the prior's support"
        )
    has_extras = user_extras is not None

    def pack(lp, ll, extras):
        cols = [lp.to(dtype).unsqueeze(-1), ll.to(dtype).unsqueeze(-1)]
        if extras is not None:
            cols.append(extras.to(dtype))
        return torch.cat(cols, dim=-1)

    def target_at(beta_particles: torch.Tensor):
        """Log density ``log prior + beta * loglik`` at each particle's own run's beta."""

        def log_density(position):
            lp, ll, extras = _evaluate(log_prior_fn, log_likelihood_fn, position)
            if has_extras and extras is None:
                raise ModelOutputError("log_likelihood_fn returned extras at first and none later")
            return _tempered(lp, ll, beta_particles), pack(lp, ll, extras if has_extras else None)

        return log_density

    extras = pack(lp, ll, user_extras)
    beta = torch.zeros(runs, device=dev, dtype=torch.float64)
    log_evidence = torch.zeros(runs, device=dev, dtype=torch.float64)
    log_c = torch.full((runs,), math.log(2.38 / math.sqrt(dim)), device=dev, dtype=torch.float64)
    run_offsets = (torch.arange(runs, device=dev) * m).unsqueeze(-1)  # (R, 1): run-local -> flat index
    betas, ess_fractions, stage_acceptance, step_acceptance, moves_per_stage = [], [], [], [], []
    ess_target = torch.full((runs,), float(target_ess_fraction), device=dev, dtype=torch.float64)
    num_moves_done = 0

    def proposal_scale():
        """Per-particle ``(N, D)`` scale ``c_r * sd_rd`` from each run's current spread."""
        spread = z.reshape(runs, m, dim).std(dim=1).clamp(min=MIN_POPULATION_SD)  # (R, D)
        scale = log_c.exp().to(dtype).unsqueeze(-1) * spread
        return scale.repeat_interleave(m, dim=0)

    # Cross-fitting: each run's particles fall into two halves (slots [0, M/2) and
    # [M/2, M)); the mixture a particle proposes from is fitted on the other half
    # of its own run, so it never depends on the particle it moves (an
    # independent MH kernel is invariant only for a proposal fixed apart from
    # the chain) and runs stay independent of each other.
    half = (torch.arange(m, device=dev) >= m // 2).long()  # (M,)
    fold_mask = torch.stack([half == 0, half == 1])  # (2, M): which slots fit mixture h
    proposal_group = (2 * torch.arange(runs, device=dev).unsqueeze(-1) + (1 - half)).flatten()  # (N,)

    components = max(1, min(num_components, (m // 2) // (POINTS_PER_COMPONENT_AND_DIMENSION * dim)))

    def cross_fitted_mixture(z):
        """``2R`` mixtures: mixture ``2r + h`` fitted on half ``h`` of run ``r``."""
        points = z.view(runs, 1, m, dim).expand(runs, 2, m, dim).reshape(2 * runs, m, dim)
        log_w = torch.zeros(2, m, device=dev, dtype=dtype).masked_fill(~fold_mask, -math.inf)
        return mixture.fit(points, log_w.repeat(runs, 1), num_components=components,
                           inflation=proposal_inflation, defensive_weight=defensive_weight,
                           generator=generator)

    def one_move(j, state, log_density, scale, fitted):
        """Move ``j`` of a stage: independent (even ``j``) or random walk, as ``move`` says.
        Moves beyond ``num_moves`` (a stage whose particles are slow to move) alternate
        random walk and independent whatever ``move`` is: where the fitted mixture
        fits the tempered target poorly, local moves still separate resampled copies."""
        extra = j >= num_moves
        if fitted is not None and ((move == "independent" and not extra) or (j - extra) % 2 == 0):
            return (*imh.step(generator, state, log_density, proposal=fitted, group=proposal_group), False)
        return (*mh.step(generator, state, log_density, scale=scale), True)

    # --- tempering stages ----------------------------------------------------
    stages = 0
    lowest_beta = 0.0
    while lowest_beta < 1.0:
        if stages == max_stages:
            raise ModelOutputError(
                f"SMC reached max_stages={max_stages} with runs still at beta={beta.tolist()} (< 1): the "
                "likelihood is too informative for this many stages; raise max_stages or target_ess_fraction"
            )
        stages += 1
        loglik = extras[:, _LOG_LIK_COL].view(runs, m)
        new_beta = kernel.next_temperature(loglik, beta, ess_target)
        active = beta < 1
        log_w = kernel.tempered_log_weights(loglik, new_beta - beta)  # (R, M), float64
        log_evidence = log_evidence + kernel.log_mean_exp(log_w, dim=1)
        ess = kernel.effective_sample_size(log_w) / m
        ess_fractions.append((ess * active).sum() / active.sum())
        beta = new_beta
        betas.append(beta)

        idx = (kernel.systematic_resample(generator, log_w) + run_offsets).flatten()
        z, extras = z[idx], extras[idx]
        fitted = cross_fitted_mixture(z) if move != "rw" else None
        beta_particles = beta.repeat_interleave(m)
        log_density = target_at(beta_particles)
        state = mh.MHState(z, _tempered(extras[:, _LOG_PRIOR_COL], extras[:, _LOG_LIK_COL], beta_particles), extras)
        scale = proposal_scale()
        accepted = torch.zeros(runs, device=dev, dtype=torch.float64)  # random-walk acceptance, summed
        accepted_all = torch.zeros(runs, device=dev, dtype=torch.float64)  # every move's acceptance, summed
        rw_moves = 0
        moved = torch.zeros(n, device=dev, dtype=torch.bool)
        j = 0
        while True:
            state, info, is_rw = one_move(j, state, log_density, scale, fitted)
            j += 1
            moved |= info.accepted
            rate = info.accepted.view(runs, m).to(torch.float64).mean(dim=1)
            if is_rw:
                accepted = accepted + rate
                rw_moves += 1
            step_acceptance.append(rate.mean())
            accepted_all = accepted_all + rate
            if j >= max_moves:
                break
            if j >= num_moves:
                # Keep moving until enough particles of every run have left their resampled copy:
                # with low acceptance a fixed count would leave runs collapsed onto few ancestors.
                if float(moved.view(runs, m).to(torch.float64).mean(dim=1).min()) >= min_moved_fraction:
                    break
        num_moves_done += j
        moves_per_stage.append(j)
        stage_acceptance.append(accepted_all.mean() / j)
        ess_target = torch.where(accepted_all / j < SLOW_ACCEPTANCE, slow_ess_fraction, target_ess_fraction)
        z, extras = state.position, state.extras
        if rw_moves:
            rate = accepted / rw_moves
            log_c = log_c + SCALE_ADAPTATION_GAIN * (rate - TARGET_ACCEPTANCE)
        lowest_beta = float(beta.min())  # the one host round-trip per stage: may we stop?
        report(progress, "tempering", int(lowest_beta * PROGRESS_RESOLUTION), PROGRESS_RESOLUTION)

    # --- draws at the posterior, proposal frozen ----------------------------------
    beta_particles = torch.ones(n, device=dev, dtype=torch.float64)
    log_density = target_at(beta_particles)
    state = mh.MHState(z, _tempered(extras[:, _LOG_PRIOR_COL], extras[:, _LOG_LIK_COL], beta_particles), extras)
    scale = proposal_scale()
    fitted = cross_fitted_mixture(z) if move != "rw" else None
    positions, accepted_draws, extras_draws = [], [], []
    for k in range(num_final_draws):
        state, info, _ = one_move(k, state, log_density, scale, fitted)
        positions.append(state.position)
        accepted_draws.append(info.accepted)
        if has_extras:
            extras_draws.append(state.extras[:, _USER_COLS:])
        step_acceptance.append(info.accepted.to(torch.float64).mean())
        report(progress, "sampling", k + 1, num_final_draws)
    num_moves_done += num_final_draws

    schedule = torch.stack(betas, dim=1).cpu().tolist()  # (R, stages); a finished run repeats 1.0
    log_evidence_list = log_evidence.cpu().tolist()
    return SamplingResult(
        method="smc",
        latent_names=names,
        trace=torch.stack(positions, dim=1).cpu(),
        sample_stats={"accepted": torch.stack(accepted_draws, dim=1).cpu()},
        extras_trace=torch.stack(extras_draws, dim=1).cpu() if has_extras else None,
        extras_names=tuple(extras_names),
        num_warmup=0,
        num_evaluations=n * (1 + num_moves_done),
        seconds=time.perf_counter() - start,
        superchains=runs if runs > 1 else None,  # one run: split R-hat only
        info={
            "log_evidence": log_evidence_list,
            "log_evidence_mean": sum(log_evidence_list) / runs,
            "log_evidence_pooled": float(kernel.log_mean_exp(log_evidence, dim=0)),
            "tempering_schedule": [[0.0] + row[: row.index(1.0) + 1] for row in schedule],
            "ess_per_stage": torch.stack(ess_fractions).cpu().tolist(),
            "num_stages": stages,
            "acceptance_per_stage": torch.stack(stage_acceptance).cpu().tolist(),
            "moves_per_stage": moves_per_stage,
            "acceptance_per_step": torch.stack(step_acceptance).cpu().tolist(),
            "proposal_scale_factor": log_c.exp().cpu().tolist(),
            "proposal_scale": scale.view(runs, m, dim)[:, 0].cpu().tolist(),
        },
    )
