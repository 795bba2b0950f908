"""Building blocks of adaptively tempered sequential Monte Carlo, batched over runs.

Pure functions over ``R`` independent SMC runs of ``M`` particles each, held as
``(R, M)`` tensors of log weights or log likelihoods: the effective sample size
of each run's weights, the next inverse temperature of each run (adaptive
tempering: Jasra et al. 2011; Chopin & Papaspiliopoulos 2020, Ch. 17),
systematic resampling within each run (Kitagawa 1996; Douc et al. 2005), a
stable ``log mean exp`` and the cross-fitted mixtures the independent moves
propose from. No Python loop runs over the runs; :mod:`ppl_audit.inference.smc`
composes these into a stage and owns the bookkeeping.

Log likelihoods of ``-inf`` (a particle outside the likelihood's support) get
weight exactly 0 at every inverse temperature, never ``NaN``. A run whose every
weight is 0 cannot be normalised: that is a :class:`ModelOutputError`.

Weights are handled in float64 whatever the particles' dtype: tempering
increments ``(beta' - beta) * loglik`` can be small differences of large
numbers, and the log-evidence estimate sums them over many stages.
"""

from __future__ import annotations

import math

import torch

from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.inference.kernels import mixture

# 50 halvings of an interval no wider than 1 pin the next inverse temperature
# to 2**-50 ~ 1e-15, the resolution of float64 near 1.
BISECTION_ITERATIONS = 50


def log_mean_exp(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``log(mean(exp(x)))`` along ``dim``, computed stably.

    ``-inf`` entries contribute 0 to the mean; an all ``-inf`` slice gives ``-inf``.

    Parameters
    ----------
    x : torch.Tensor
    dim : int
        Dimension to average over.

    Returns
    -------
    torch.Tensor
        ``x`` with ``dim`` removed.

    Examples
    --------
    >>> log_mean_exp(torch.tensor([[0.0, math.log(3.0)]])).exp()
    tensor([2.])
    >>> log_mean_exp(torch.tensor([0.0, -math.inf])).exp()
    tensor(0.5000)
    """
    return torch.logsumexp(x, dim=dim) - math.log(x.shape[dim])


def tempered_log_weights(log_likelihood: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Incremental log weights ``delta * loglik`` with ``-inf`` kept as ``-inf``.

    ``0 * -inf`` would be ``NaN``; a particle outside the likelihood's support
    has weight 0 at every step of the schedule, ``delta = 0`` included.

    Parameters
    ----------
    log_likelihood : torch.Tensor, (R, M)
    delta : torch.Tensor, (R,)
        Increase of each run's inverse temperature (>= 0).

    Returns
    -------
    torch.Tensor, (R, M), float64

    Examples
    --------
    >>> tempered_log_weights(torch.tensor([[-2.0, -math.inf]]), torch.tensor([0.5]))
    tensor([[-1., -inf]], dtype=torch.float64)
    """
    ll = log_likelihood.to(torch.float64)
    d = delta.to(ll).unsqueeze(-1)
    return torch.where(ll == -math.inf, ll, d * ll)


def _check_log_weights(log_weights: torch.Tensor, what: str = "log weights") -> None:
    """Raise unless ``log_weights`` is ``(R, M)``, free of NaN/+inf, with a nonzero weight in every run."""
    if log_weights.ndim != 2 or log_weights.shape[1] == 0:
        raise InvalidInputError(f"{what} must have shape (runs, particles), got {tuple(log_weights.shape)}")
    dead = (log_weights == -math.inf).all(dim=1)
    # one host read for all three checks
    has_nan, has_inf, any_dead = torch.stack(
        [torch.isnan(log_weights).any(), (log_weights == math.inf).any(), dead.any()]
    ).tolist()
    if has_nan or has_inf:
        raise ModelOutputError(f"{what} contain {'NaN' if has_nan else '+inf'}")
    if any_dead:
        runs = dead.nonzero().flatten().tolist()
        raise ModelOutputError(
            f"every particle of run(s) {runs} has {what} -inf (zero likelihood): the run cannot be "
            "reweighted; start the particles where the likelihood is positive or widen its support"
        )


def effective_sample_size(log_weights: torch.Tensor) -> torch.Tensor:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` of each run's weights.

    The weights need not be normalised (the ratio is scale-free).

    Parameters
    ----------
    log_weights : torch.Tensor, (R, M)
        Unnormalised log weights; ``-inf`` is weight 0.

    Returns
    -------
    torch.Tensor, (R,), float64
        Between 1 and ``M``.

    Raises
    ------
    ModelOutputError
        On NaN or ``+inf``, or a run whose weights are all 0.

    Examples
    --------
    >>> effective_sample_size(torch.zeros(2, 4))
    tensor([4., 4.], dtype=torch.float64)
    >>> effective_sample_size(torch.tensor([[0.0, -math.inf, -math.inf, -math.inf]]))
    tensor([1.], dtype=torch.float64)
    """
    _check_log_weights(log_weights)
    lw = log_weights.to(torch.float64)
    return (2 * torch.logsumexp(lw, dim=1) - torch.logsumexp(2 * lw, dim=1)).exp()


def _ess_fraction(log_likelihood: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """ESS / M of the incremental weights ``delta * loglik``, per run (no checks)."""
    lw = tempered_log_weights(log_likelihood, delta)
    return (2 * torch.logsumexp(lw, dim=1) - torch.logsumexp(2 * lw, dim=1)).exp() / lw.shape[1]


def next_temperature(
    log_likelihood: torch.Tensor,
    beta: torch.Tensor,
    target_ess_fraction: "float | torch.Tensor",
    log_likelihood_bound: float | None = None,
) -> torch.Tensor:
    """The next inverse temperature of every run, chosen so that the ESS stays at a target.

    For run ``r`` this is the largest ``beta' in (beta_r, 1]`` whose incremental
    weights ``(beta' - beta_r) * loglik`` (over equally weighted particles: the
    driver resamples at every stage) keep the ESS at ``target_ess_fraction * M``
    (Jasra et al. 2011). The ESS falls monotonically as ``beta'``
    grows, so a vectorised bisection with :data:`BISECTION_ITERATIONS` halvings
    finds it for all runs at once. A run whose ESS stays above the target all
    the way to 1 goes to exactly 1; a run already at 1 stays at 1.

    The ESS sees only the particles a run has. Where they all sit on a plateau
    of the likelihood (a saturated classifier, far from the level set), their
    weights stay nearly equal for a long step, and the run would jump past
    a region of high likelihood that none of them has found: its evidence
    then misses that region's mass and its moves may never reach it. With
    ``log_likelihood_bound`` (the likelihood's maximum, or an upper bound),
    the ESS is taken over the run's particles and one more, virtual, at the
    bound: the step is then also one that a particle at the maximum would not
    take over, ``(M + 1) * target_ess_fraction`` effective particles of
    ``M + 1``. Where the best particles are near the bound this changes
    little; on a plateau it keeps the steps small until the moves find the
    likelihood's slope. Each guarded step is about ``ln(sqrt(M)) / gap`` on a
    plateau ``gap`` nats below the bound, so a driver should bound how many
    stages it guards (:func:`ppl_audit.inference.smc.step` does): where the
    bound cannot be reached, the guard would otherwise cost a stage per few
    nats of the gap.

    When fewer than ``target_ess_fraction * M`` particles have a finite
    likelihood, no ``beta' > beta`` reaches the target; the run then moves by
    the bisection's resolution (``~1e-15 * (1 - beta)``), which gives weight 0
    to the particles outside the support and lets resampling drop them.

    Parameters
    ----------
    log_likelihood : torch.Tensor, (R, M)
        Log likelihood of each particle; ``-inf`` allowed (weight 0).
    beta : torch.Tensor, (R,)
        Current inverse temperature of each run, in ``[0, 1]``.
    target_ess_fraction : float or torch.Tensor (R,)
        In ``(0, 1)``; one for all runs, or one per run.
    log_likelihood_bound : float, optional
        The likelihood's maximum (finite), or an upper bound on it; a run whose
        particles exceed it (rounding) uses its own maximum instead.

    Returns
    -------
    torch.Tensor, (R,), float64
        Strictly greater than ``beta`` for runs below 1; exactly 1 for runs at 1.

    Raises
    ------
    InvalidInputError
        On a ``target_ess_fraction`` outside ``(0, 1)``, mismatched shapes or
        ``beta`` outside ``[0, 1]``.
    ModelOutputError
        On NaN or ``+inf`` log likelihoods, or a run whose every log likelihood is ``-inf``.

    Examples
    --------
    Two runs from ``beta = 0``: the first stops where its ESS is 2 of 4, the
    second (a flat likelihood) goes straight to 1.

    >>> ll = torch.tensor([[0.0, -10.0, -20.0, -30.0], [0.0, 0.0, 0.0, 0.0]])
    >>> b = next_temperature(ll, torch.zeros(2), 0.5)
    >>> b[1].item()
    1.0
    >>> round(float(effective_sample_size(tempered_log_weights(ll[:1], b[:1]))[0]), 6)
    2.0

    Particles on a plateau 100 nats below the maximum: without the bound the
    run steps to 1 at once; with it, a small step.

    >>> plateau = torch.tensor([[-100.0, -100.1, -100.2, -100.3]])
    >>> next_temperature(plateau, torch.zeros(1), 0.5).item()
    1.0
    >>> next_temperature(plateau, torch.zeros(1), 0.5, log_likelihood_bound=0.0).item() < 0.02
    True
    """
    target = torch.as_tensor(target_ess_fraction, dtype=torch.float64, device=log_likelihood.device)
    if target.ndim > 1 or not bool(((target > 0) & (target < 1)).all()):
        raise InvalidInputError(f"target_ess_fraction must be in (0, 1), got {target_ess_fraction!r}")
    if log_likelihood.ndim != 2 or beta.shape != log_likelihood.shape[:1]:
        raise InvalidInputError(
            f"log_likelihood must be (runs, particles) and beta (runs,), got {tuple(log_likelihood.shape)} "
            f"and {tuple(beta.shape)}"
        )
    beta = beta.to(device=log_likelihood.device, dtype=torch.float64)
    if ((beta < 0) | (beta > 1)).any():
        raise InvalidInputError(f"beta must lie in [0, 1], got {beta.tolist()}")
    _check_log_weights(log_likelihood, "log likelihoods")
    if log_likelihood_bound is not None:
        log_likelihood = _with_virtual_particle(log_likelihood, log_likelihood_bound)
    room = 1 - beta  # (R,), the widest step each run can take
    reaches_one = _ess_fraction(log_likelihood, room) >= target
    lo = torch.zeros_like(room)  # ESS(lo) >= target, or lo = 0
    hi = room.clone()  # ESS(hi) < target (for the runs that do not reach 1)
    for _ in range(BISECTION_ITERATIONS):
        mid = 0.5 * (lo + hi)
        ok = _ess_fraction(log_likelihood, mid) >= target
        lo = torch.where(ok, mid, lo)
        hi = torch.where(ok, hi, mid)
    # hi is within 2**-50 of the crossing and always > 0: the schedule never stalls.
    return torch.where(reaches_one, torch.ones_like(beta), beta + hi).clamp(max=1.0)


def _with_virtual_particle(log_likelihood: torch.Tensor, bound: float) -> torch.Tensor:
    """``(R, M + 1)``: each run's log likelihoods and a virtual particle at ``bound`` (or at the run's own
    maximum, where a particle exceeds the bound by rounding)."""
    if not math.isfinite(bound):
        raise InvalidInputError(f"log_likelihood_bound must be finite, got {bound!r}")
    top = log_likelihood.to(torch.float64).max(dim=1, keepdim=True).values.clamp(min=bound)
    return torch.cat([log_likelihood.to(torch.float64), top], dim=1)


def systematic_resample(generator: torch.Generator | None, log_weights: torch.Tensor,
                        num_draws: int | None = None) -> torch.Tensor:
    """Systematic resampling of every run, one uniform per run.

    Particle ``i`` of run ``r`` is copied ``floor(n w_i)`` or ``ceil(n w_i)``
    times (``w`` the run's normalised weights, ``n`` the draws per run); a
    particle of weight 0 is never copied, and equal weights with ``n = M`` give
    the identity.

    Parameters
    ----------
    generator : torch.Generator or None
        Source of randomness (on the weights' device).
    log_weights : torch.Tensor, (R, M)
        Unnormalised log weights; ``-inf`` is weight 0.
    num_draws : int, optional
        Draws per run ``n`` (default ``M``); waste-free SMC draws ``M / P`` chain starts.

    Returns
    -------
    torch.Tensor, (R, n), int64
        Indices into each run's own particles (``0 <= index < M``), sorted.

    Raises
    ------
    ModelOutputError
        On NaN or ``+inf``, or a run whose weights are all 0.

    Examples
    --------
    >>> lw = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, -math.inf, math.log(3.0), -math.inf]])
    >>> systematic_resample(torch.Generator().manual_seed(0), lw)
    tensor([[0, 1, 2, 3],
            [0, 2, 2, 2]])
    >>> systematic_resample(torch.Generator().manual_seed(0), lw, num_draws=2)  # one of each pair, then 2 twice
    tensor([[1, 3],
            [2, 2]])
    """
    _check_log_weights(log_weights)
    runs, m = log_weights.shape
    n = m if num_draws is None else num_draws
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInputError(f"num_draws must be a positive integer, got {num_draws!r}")
    lw = log_weights.to(torch.float64)
    cdf = torch.softmax(lw, dim=1).cumsum(dim=1)
    # Dividing by the last entry makes it exactly 1, so that every u < 1 finds a
    # particle and trailing zero-weight particles (cdf flat at 1) are never picked.
    cdf = cdf / cdf[:, -1:]
    u = (torch.rand((runs, 1), generator=generator, device=lw.device, dtype=lw.dtype)
         + torch.arange(n, device=lw.device, dtype=lw.dtype)) / n
    # right=True: u in [cdf[i-1], cdf[i]) picks i, so an empty interval (weight 0) picks nothing.
    idx = torch.searchsorted(cdf, u, right=True)
    return idx.clamp(max=m - 1)


def spatial_order(points: torch.Tensor) -> torch.Tensor:
    """A permutation of each run's particles that keeps nearby particles near in the order.

    A k-d ordering: each level cuts every block of the current order at its middle position,
    after sorting the block along the coordinate of its widest range, until blocks hold one
    or two particles. A cluster of particles well apart from the rest then fills one stretch
    of the order, or a few where cuts fall inside it, and :func:`systematic_resample` copies each
    stretch as often as its weight says, to within one (Gerber, Chopin & Whiteley 2019 order
    by a Hilbert curve for the same reason; a k-d order works in any dimension).

    Parameters
    ----------
    points : torch.Tensor, (R, M, D)

    Returns
    -------
    torch.Tensor, (R, M), int64
        ``order[r]`` lists run ``r``'s particle indices in the spatial order.

    Examples
    --------
    >>> x = torch.tensor([[[5.0], [-3.0], [4.9], [-2.9]]])
    >>> spatial_order(x).tolist()
    [[1, 3, 2, 0]]
    """
    runs, m, dim = points.shape
    dev = points.device
    order = torch.arange(m, device=dev).expand(runs, m)
    x = points
    position = torch.arange(m, device=dev)
    blocks = 1
    while blocks < m:
        cell = position * blocks // m  # (M,): the block of each position, the same in every run
        index = cell.view(1, m, 1).expand(runs, m, dim)
        top = x.new_full((runs, blocks, dim), -math.inf).scatter_reduce(1, index, x, "amax")
        bottom = x.new_full((runs, blocks, dim), math.inf).scatter_reduce(1, index, x, "amin")
        widest = (top - bottom).argmax(dim=-1)  # (R, blocks)
        axis = widest.gather(1, cell.expand(runs, m)).unsqueeze(-1)  # (R, M, 1)
        key = x.gather(2, axis).squeeze(-1)
        low = bottom.gather(2, widest.unsqueeze(-1)).squeeze(-1).gather(1, cell.expand(runs, m))
        span = (top - bottom).gather(2, widest.unsqueeze(-1)).squeeze(-1).gather(1, cell.expand(runs, m))
        # Scaled into [0, 0.5] so each key stays inside its block and keeps its rank there.
        within = (0.5 * (key - low) / span.clamp_min(torch.finfo(x.dtype).tiny)).clamp(0, 0.5)
        perm = (cell.to(torch.float64) + within.to(torch.float64)).argsort(dim=1, stable=True)
        x = x.gather(1, perm.unsqueeze(-1).expand(runs, m, dim))
        order = order.gather(1, perm)
        blocks *= 2
    return order


def ordered_systematic_resample(generator: torch.Generator | None, log_weights: torch.Tensor,
                                points: torch.Tensor) -> torch.Tensor:
    """:func:`systematic_resample` over the particles in :func:`spatial_order`: the indices it
    returns are into each run's own particles, sorted, as there.

    Every particle is still copied ``floor(M w_i)`` or ``ceil(M w_i)`` times, so the
    resampling stays unbiased; in addition, any stretch of the spatial order (a cluster of
    particles) is copied as often as its total weight says, to within one.

    Examples
    --------
    Particles 0 and 2 form a cluster of weight 0.25, so of 4 copies it gets exactly one
    (in the given order, a uniform below 0.1 copies it twice):

    >>> x = torch.tensor([[[0.0], [10.0], [0.1], [10.1]]])
    >>> lw = torch.log(torch.tensor([[0.1, 0.4, 0.15, 0.35]]))
    >>> g = torch.Generator().manual_seed(0)
    >>> [int(torch.isin(ordered_systematic_resample(g, lw, x), torch.tensor([0, 2])).sum()) for _ in range(5)]
    [1, 1, 1, 1, 1]
    """
    order = spatial_order(points)
    idx = systematic_resample(generator, log_weights.gather(1, order))
    return order.gather(1, idx).sort(dim=1).values


def cross_fitted_mixture(
    generator: torch.Generator | None,
    particles: torch.Tensor,
    num_runs: int,
    *,
    num_components: int,
    inflation: float,
    defensive_weight: float,
    log_weights: torch.Tensor | None = None,
) -> tuple[mixture.GaussianMixture, torch.Tensor]:
    """Cross-fitted Gaussian-mixture proposals: ``2R`` mixtures, one per half-run.

    Each run's particles fall into two halves (slots ``[0, M/2)`` and
    ``[M/2, M)``); mixture ``2r + h`` is fitted on half ``h`` of run ``r``, and
    a particle proposes from the mixture of the *other* half of its own run.
    Its proposal then never depends on its own position (an independent MH
    kernel is invariant only for a proposal fixed apart from the chain), and
    runs stay independent of each other.

    Parameters
    ----------
    generator : torch.Generator or None
        Seeds the fits' starting means.
    particles : torch.Tensor, (R * M, D)
        Run-major: run ``r`` owns rows ``r*M .. (r+1)*M - 1``.
    num_runs : int
        ``R``.
    num_components, inflation, defensive_weight
        Passed to :func:`~ppl_audit.inference.kernels.mixture.fit`.
    log_weights : torch.Tensor, (R, M), optional
        Unnormalised log weights of the particles (equal by default): waste-free SMC fits its
        proposals to the weighted particles before resampling. A half whose weights are all 0
        is fitted unweighted (EM cannot normalise it).

    Returns
    -------
    (GaussianMixture, torch.Tensor (R * M,) int64)
        The ``2R`` mixtures, and the mixture each particle proposes from
        (the ``group`` of :func:`~ppl_audit.inference.kernels.imh.step`).

    Examples
    --------
    >>> z = torch.randn(2 * 16, 1, generator=torch.Generator().manual_seed(0))
    >>> mix, group = cross_fitted_mixture(None, z, 2, num_components=1, inflation=1.0, defensive_weight=0.0)
    >>> mix.num_groups, group.view(2, 16)[:, [0, 15]].tolist()
    (4, [[1, 0], [3, 2]])
    """
    runs = num_runs
    m, dim = particles.shape[0] // runs, particles.shape[1]
    dev = particles.device
    half = (torch.arange(m, device=dev) >= m // 2).long()  # (M,)
    fold_mask = torch.stack([half == 0, half == 1])  # (2, M): which slots fit mixture h
    group = (2 * torch.arange(runs, device=dev).unsqueeze(-1) + (1 - half)).flatten()  # (N,)
    points = particles.view(runs, 1, m, dim).expand(runs, 2, m, dim).reshape(2 * runs, m, dim)
    log_w = torch.zeros(2, m, device=dev, dtype=particles.dtype).masked_fill(~fold_mask, -math.inf)
    log_w = log_w.repeat(runs, 1)  # (2R, M)
    if log_weights is not None:
        weighted = log_w + log_weights.to(log_w).repeat_interleave(2, dim=0)
        empty = (weighted == -math.inf).all(dim=1, keepdim=True)
        log_w = torch.where(empty, log_w, weighted)
    fitted = mixture.fit(points, log_w, num_components=num_components, inflation=inflation,
                         defensive_weight=defensive_weight, generator=generator)
    return fitted, group


__all__ = [
    "BISECTION_ITERATIONS",
    "cross_fitted_mixture",
    "effective_sample_size",
    "log_mean_exp",
    "next_temperature",
    "ordered_systematic_resample",
    "spatial_order",
    "systematic_resample",
    "tempered_log_weights",
]
