"""``sample_level_set``: the public entry point of level-set sampling.

The paper's sampler (Booth et al. 2020, Sec. 3.2): ``N`` particles of
gradient-free random-walk Metropolis-Hastings for ``T`` steps, the last state
of each particle kept, then ``n <= N`` drawn with replacement.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ppl_audit import diagnostics
from ppl_audit._device import resolve_device
from ppl_audit.errors import InvalidInputError
from ppl_audit.inference.mcmc import MCMCConfig, run_mh
from ppl_audit.inference.result import SamplingResult
from ppl_audit.levelset import LevelSet
from ppl_audit.metrics import (
    AMBIGUOUS_BAND,
    average_deviation,
    count_distinct,
    fraction_in_band,
    target_confidence,
)
from ppl_audit.priors.base import Prior
from ppl_audit.priors.base import standard_normal_log_prob
from ppl_audit.progress import ProgressFn
from ppl_audit.validators import check_count, check_fits_in_memory, check_real, check_seed, is_int, is_positive_int

METHODS = ("smc", "mh", "hmc", "nuts", "svi")
# The fastest method that passes its diagnostics on both level sets of
# benchmarks/levelset_throughput.py (results/levelset_throughput.json).
DEFAULT_METHOD = "smc"
GRADIENT_METHODS = ("hmc", "nuts", "svi")  # need a differentiable classifier
INIT_STRATEGIES = ("prior", "importance")
# "importance" starts the MH/HMC particles from prior draws resampled by their
# likelihood: INIT_OVERSAMPLE * N draws, N kept. Random-walk chains then start
# in the right mode instead of having to cross between classes, which the
# level sets of this world (rockets vs houses) make rare.
INIT_OVERSAMPLE = 4
MAX_SUPERCHAINS = 16  # independent groups of particles compared by nested R-hat
# Moves at the posterior after tempering, kept as draws. 20 rather than 10 gave
# 25% more ESS per evaluation at N = 4,096 (the run means' spread shrinks with them).
SMC_FINAL_DRAWS = 20
# SMC runs: at least this many particles each (one run when nothing else divides N).
SMC_MIN_PARTICLES_PER_RUN = 16
# Fitted moves need runs large enough to fit a mixture, and nested R-hat enough runs to estimate a
# variance: at least 8 runs of 125, else random-walk moves (README, "Samplers", for the measurements).
# Of the run counts that qualify the fewest is taken: larger runs fit more mixture components and keep more
# particles on each island of a level set (the GAN's 8-vs-9 target: benchmarks/smc_mode_tracking.py).
SMC_FITTED_PARTICLES_PER_RUN = 125
SMC_MIN_FITTED_RUNS = 8
SMC_RW_MOVES = 10  # random-walk moves per stage: 5 left the concentration-1,000 level set at nested R-hat 1.02-1.09
# Where SMC moves: "unconstrained", over v with z = biject_to(support)(v) and the prior's density carried
# over with its Jacobian, as Stan and Pyro's NUTS move; "normal", over u ~ N(0, I) with
# z = prior.from_normal(u), where the prior has that transform; or "latent", over z itself.
SMC_SPACES = ("unconstrained", "normal", "latent")
SMC_DEFAULT_SPACE = "unconstrained"  # benchmarks/levelset_smc_levers.py
# Each stage keeps moving (up to the sampler's cap) until this share of every run's particles has left
# its resampled copy: with a fixed 4 moves the circle world's runs were worth 1-4 effective particles each.
SMC_MIN_MOVED_FRACTION = 0.9
# A run whose moves accepted under 15% over a stage keeps 80% of its ESS at the next reweighting, not 50%.
SMC_SLOW_ESS_FRACTION = 0.8
# A level set that fails its checks gets a second round of runs twice as large (3x the first round's cost):
# larger runs are worth more effective particles each (README, "Samplers"; levelset_smc_levers.py).
SMC_MAX_ROUNDS = 2
SMC_ROUNDS_LIMIT = 5  # each round doubles the run size: the fifth's runs are 16x the first's
# Below this many effective particles per superchain (nested R-hat above ~1.1) the runs disagree about where
# the level set is, which pooling more runs with them does not fix; a precision shortfall it does.
SMC_ROUND_MIN_EFFECTIVE_PARTICLES = 5.0
# A first round whose runs disagree (below the line above) is replaced by runs twice as large that temper
# at this ESS fraction: runs lose the region holding most of the mass at early, large steps (MNIST
# ten-way target, benchmarks/smc_mode_tracking.py: 5 of 16 runs lost it at 0.5, none at 0.8).
SMC_GENTLE_ESS_FRACTION = 0.8
# Option run_groups: a round's runs split into this many groups, each one batch with its own random stream,
# which an executor may run side by side (issue 26). 1, the default, is one batch on the level set's stream.
SMC_RUN_GROUPS = 1


@dataclass(frozen=True)
class SMCGroup:
    """One group of a round's independent SMC runs, and the seed of its own random stream.

    Attributes
    ----------
    round, index : int
        The round (0 first) and the group's place in it.
    runs, particles_per_run : int
    seed : int
        Derived from the level set's seed, the round and the index alone (:func:`smc_groups`).
    target_ess_fraction, slow_ess_fraction : float, optional
        The ESS fractions the group's round tempers at, exactly as the round's options hold them (a
        round that replaced one whose runs disagreed sets its own, :func:`_run_smc_rounds`); ``None``
        where the options leave one unset.
    """

    round: int
    index: int
    runs: int
    particles_per_run: int
    seed: int
    target_ess_fraction: float | None = None
    slow_ess_fraction: float | None = None

    @property
    def name(self) -> str:
        """``"round 1 group 2"``: how a unit of this group is named."""
        return f"round {self.round + 1} group {self.index + 1}"


#: ``map_groups(groups) -> results``: runs :class:`SMCGroup` s (one :func:`sample_smc_group` each), in order.
MapGroupsFn = Callable[[Sequence[SMCGroup]], Sequence[SamplingResult]]


def smc_groups(seed: int, round_index: int, runs: int, particles_per_run: int, count: int, *,
               target_ess_fraction: float | None = None, slow_ess_fraction: float | None = None
               ) -> list[SMCGroup]:
    """A round's ``runs`` in ``count`` groups whose sizes differ by at most one, each seeded from ``seed``,
    the round and its index (a hash: no two groups of any level set share a stream by arithmetic).

    Examples
    --------
    >>> [(g.runs, g.name) for g in smc_groups(0, 0, 8, 125, 3)]
    [(3, 'round 1 group 1'), (3, 'round 1 group 2'), (2, 'round 1 group 3')]
    >>> smc_groups(0, 0, 8, 125, 2)[0].seed == smc_groups(0, 0, 8, 125, 4)[0].seed
    True
    """
    bounds = [runs * i // count for i in range(count + 1)][::-1]
    sizes = [a - b for a, b in zip(bounds, bounds[1:])]  # larger groups first

    def group_seed(index: int) -> int:
        digest = hashlib.sha256(f"smc group {seed} {round_index} {index}".encode()).digest()
        return int.from_bytes(digest[:7], "big")

    return [SMCGroup(round_index, i, size, particles_per_run, group_seed(i), target_ess_fraction, slow_ess_fraction)
            for i, size in enumerate(sizes)]


@dataclass
class LevelSetResult:
    """Samples from a level set and what was measured on them.

    Attributes
    ----------
    latents : torch.Tensor, (n, D)
    images : torch.Tensor, (n, C, H, W)
    probs : torch.Tensor, (n, K)
        The classifier's predictions on ``images``.
    metrics : dict
        ``delta``, ``mean_confidence``, ``min_confidence``, ``acceptance_rate``,
        ``num_distinct``, ``rhat_max``, ``ess_bulk_min``, ... (JSON-safe).
    chain : SamplingResult
        The full post-warm-up trace.
    """

    latents: torch.Tensor
    images: torch.Tensor
    probs: torch.Tensor
    target: torch.Tensor
    concentration: float
    metrics: dict[str, Any]
    chain: SamplingResult
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def to_arviz(self):
        """The MCMC trace as ``arviz.InferenceData`` (chain = particle)."""
        return self.chain.to_arviz()


def superchain_count(num_particles: int) -> int | None:
    """Largest ``K <= MAX_SUPERCHAINS`` (``K >= 2``) that divides ``num_particles``, else ``None``.

    Examples
    --------
    >>> superchain_count(1000), superchain_count(4096), superchain_count(7)
    (10, 16, 7)
    """
    counts = _dividing_counts(num_particles, 1, 2)
    return counts[-1] if counts else None


def _dividing_counts(num_particles: int, min_per_run: int, fewest: int) -> list[int]:
    """The counts from ``fewest`` up to :data:`MAX_SUPERCHAINS`, ascending, that divide ``num_particles``
    into equal groups of at least ``min_per_run``."""
    most = min(MAX_SUPERCHAINS, num_particles // min_per_run)
    return [k for k in range(fewest, most + 1) if num_particles % k == 0]


def smc_run_count(num_particles: int, min_per_run: int = SMC_MIN_PARTICLES_PER_RUN) -> int:
    """Independent SMC runs for ``num_particles``: the most (``<= MAX_SUPERCHAINS``) that
    divide it with at least ``min_per_run`` particles each, else 1.

    Examples
    --------
    >>> smc_run_count(4096), smc_run_count(1000), smc_run_count(64), smc_run_count(37)
    (16, 10, 4, 1)
    >>> smc_run_count(1000, SMC_FITTED_PARTICLES_PER_RUN)
    8
    """
    counts = _dividing_counts(num_particles, min_per_run, 2)
    return counts[-1] if counts else 1


def smc_fitted_run_count(num_particles: int, min_per_run: int = SMC_FITTED_PARTICLES_PER_RUN) -> int | None:
    """Independent SMC runs for fitted moves: the fewest, from :data:`SMC_MIN_FITTED_RUNS` up to
    :data:`MAX_SUPERCHAINS`, that divide ``num_particles`` into runs of at least ``min_per_run``; ``None``
    where no count does (the level set then moves by random walk).

    Examples
    --------
    >>> smc_fitted_run_count(4096), smc_fitted_run_count(1000), smc_fitted_run_count(1500)
    (8, 8, 10)
    >>> smc_fitted_run_count(999) is None  # 8 runs of 124.9, and no larger count divides it into runs of 125
    True
    """
    counts = _dividing_counts(num_particles, min_per_run, SMC_MIN_FITTED_RUNS)
    return counts[0] if counts else None


def smc_plan(num_particles: int, options: dict) -> tuple[int, dict]:
    """Runs and move settings of an SMC level-set run: independent moves from fitted
    mixtures when ``num_particles`` makes at least :data:`SMC_MIN_FITTED_RUNS` runs of
    :data:`SMC_FITTED_PARTICLES_PER_RUN` (:func:`smc_fitted_run_count`: the fewest such runs),
    random-walk moves otherwise. Settings given in
    ``options`` win; ``min_particles_per_run`` asks for larger runs (an estimate that averages over a run's
    particles is biased by O(1 / particles per run), which the runs' spread does not show): above
    ``num_particles / 8`` they are fewer than 8, too few to fit, and move by random walk.

    Examples
    --------
    >>> smc_plan(1000, {})
    (8, {'move': 'independent', 'min_moved_fraction': 0.9, 'slow_ess_fraction': 0.8})
    >>> smc_plan(256, {})[1]["num_moves"]
    10
    >>> smc_plan(256, {"move": "independent", "min_moved_fraction": 0.0})
    (16, {'move': 'independent', 'min_moved_fraction': 0.0, 'slow_ess_fraction': 0.8})
    >>> smc_plan(4096, {})[0], smc_plan(4096, {"move": "rw"})[0]  # 8 runs of 512; random walks in 16 of 256
    (8, 16)
    >>> smc_plan(4000, {"min_particles_per_run": 1000})[0]  # larger runs: 4 of 1,000, random walks
    4
    """
    options = dict(options)
    per_run = options.pop("min_particles_per_run", 1)
    if isinstance(per_run, bool) or not isinstance(per_run, int) or not 1 <= per_run <= num_particles:
        raise InvalidInputError(f"smc option min_particles_per_run must be an integer in 1..{num_particles}, "
                                f"got {per_run!r}")
    fitted_runs = smc_fitted_run_count(num_particles, max(per_run, SMC_FITTED_PARTICLES_PER_RUN))
    move = options.get("move", "independent" if fitted_runs else "rw")
    runs = (fitted_runs if move != "rw" and fitted_runs else
            smc_run_count(num_particles, max(per_run, SMC_MIN_PARTICLES_PER_RUN)))
    groups = options.get("run_groups", SMC_RUN_GROUPS)
    if isinstance(groups, bool) or not isinstance(groups, int) or not 1 <= groups <= runs:
        raise InvalidInputError(f"smc option run_groups must be an integer in 1..{runs} (the runs of "
                                f"{num_particles} particles), got {groups!r}")
    plan = {"move": move, "min_moved_fraction": SMC_MIN_MOVED_FRACTION, "slow_ess_fraction": SMC_SLOW_ESS_FRACTION,
            **({"num_moves": SMC_RW_MOVES} if move == "rw" else {})}
    return runs, {**plan, **options}


def _initial_particles(level_set: LevelSet, n: int, init: str, generator, superchains: int | None) -> torch.Tensor:
    """``n`` starting points; with superchains, each group is initialised independently."""
    prior = level_set.prior
    if init == "prior":
        return prior.sample(n, generator=generator)
    groups = superchains or 1
    per_group = n // groups
    draws = prior.sample(INIT_OVERSAMPLE * n, generator=generator)
    log_w = level_set.log_likelihood(level_set.predict(draws)).reshape(groups, -1)
    idx = torch.multinomial(torch.softmax(log_w, -1), per_group, replacement=True, generator=generator)
    idx = idx + torch.arange(groups, device=idx.device).unsqueeze(-1) * log_w.shape[1]
    return draws[idx.reshape(-1)]


def visited_yield(chain: SamplingResult, class_index: int, band: tuple[float, float] = AMBIGUOUS_BAND) -> int:
    """Distinct states after warm-up whose prediction for ``class_index`` lies in ``band``.

    A state counts once when a chain first occupies it: the states at the end
    of warm-up, then every accepted move (a rejection repeats the state).
    """
    if chain.extras_trace is None:
        raise InvalidInputError("the chain carries no predictions")
    p = chain.extras_trace[..., class_index]
    inside = (p >= band[0]) & (p <= band[1])
    new_state = chain.accepted.clone()
    new_state[:, 0] = True
    return int((inside & new_state).sum())


def _run_backend(method, level_set, prior, *, num_particles, num_steps, warmup_fraction, init, seed,
                 generator, device, options, progress, run_round=None):
    """Dispatch to the sampler: ``(SamplingResult with predictions as extras, its diagnostics summary)``.

    The summary is ``None`` except for SMC, whose rounds already computed it to decide when to stop;
    ``run_round`` runs one SMC round (:func:`_round_runner`)."""
    names = prior.latent_names
    classes = level_set.classifier.class_names

    def density(z):
        return level_set.log_density_and_probs(z)

    def predict(z):
        with torch.no_grad():
            return level_set.predict(z)

    if method in ("mh", "hmc"):
        superchains = superchain_count(num_particles)
        with torch.no_grad():
            start = _initial_particles(level_set, num_particles, init, generator, superchains).to(device)
        config = MCMCConfig(num_steps=num_steps, warmup_fraction=warmup_fraction)
        if method == "mh":
            with torch.no_grad():
                chain = run_mh(density, start, config, generator=generator, latent_names=names,
                               extras_names=classes, progress=progress, **options)
        else:
            from ppl_audit.inference.mcmc import run_hmc

            chain = run_hmc(density, start, config, generator=generator, latent_names=names, extras_names=classes,
                            superchains=superchains, progress=progress, **options)
        chain = dataclasses.replace(chain, superchains=superchains)  # run_mh leaves it unset
        return chain, None
    if method == "smc":
        return _run_smc_rounds(num_particles, options, run_round)
    if method == "nuts":
        from ppl_audit.inference.pyro_backends import run_nuts

        warmup = int(num_steps * warmup_fraction)
        return run_nuts(level_set.model, num_chains=num_particles, num_warmup=warmup,
                        num_samples=num_steps - warmup, seed=seed, latent_names=names, extras_fn=predict,
                        progress=progress, **options), None
    from ppl_audit.inference.pyro_backends import run_svi

    return run_svi(level_set.model, num_steps=num_steps, num_samples=num_particles, seed=seed, latent_names=names,
                   extras_fn=predict, log_density_fn=level_set.log_density, progress=progress, **options), None


def _run_smc_rounds(num_particles: int, options: dict, run_round: Callable[[int, int, int, dict], SamplingResult]
                    ) -> tuple[SamplingResult, dict[str, Any]]:
    """SMC in rounds until the runs pass their checks (at most ``max_rounds``, default :data:`SMC_MAX_ROUNDS`):
    the pooled result and its diagnostics summary (:func:`_smc_summary`, computed once per round).

    The first round's runs are the superchains. Where they fail on a precision shortfall (at least
    :data:`SMC_ROUND_MIN_EFFECTIVE_PARTICLES` per superchain), the next round runs as many again, each
    twice the size of the last round's, and superchain ``k`` pools run ``k`` of every round
    (:func:`~ppl_audit.inference.smc.pool_runs`). Where the first round's runs disagree instead, it is
    discarded for a fresh round of runs twice its size, tempering at :data:`SMC_GENTLE_ESS_FRACTION`:
    the verdict is then the new round's alone, and the result's cost and ``info["discarded_rounds"]``
    keep the old one's.
    ``run_round(round, runs, size, options)`` runs one round.
    """
    from ppl_audit.inference.smc import pool_runs

    runs, options = smc_plan(num_particles, options)
    max_rounds = options.pop("max_rounds", SMC_MAX_ROUNDS)
    _check_max_rounds(max_rounds)
    size = num_particles // runs
    results, discarded = [run_round(0, runs, size, dict(options))], []
    pooled = results[0]
    summary = _smc_summary(pooled)
    while len(results) + len(discarded) < max_rounds and not summary["converged"]:
        round_index = len(results) + len(discarded)
        if summary["ess_per_superchain_min"] >= SMC_ROUND_MIN_EFFECTIVE_PARTICLES:
            size *= 2
            results.append(run_round(round_index, runs, size, dict(options)))
            pooled = pool_runs(results, superchains=runs)
        elif len(results) == 1 and _target_ess_fraction(options) < SMC_GENTLE_ESS_FRACTION:
            discarded.append(_discarded_round(pooled, summary, options))
            options, size = _tempering_at(options, SMC_GENTLE_ESS_FRACTION), size * 2
            results = [run_round(round_index, runs, size, dict(options))]
            pooled = results[0]
        else:
            break
        summary = _smc_summary(pooled)
    if discarded:
        pooled = dataclasses.replace(
            pooled, num_evaluations=pooled.num_evaluations + sum(d["classifier_evaluations"] for d in discarded),
            seconds=pooled.seconds + sum(d["seconds"] for d in discarded),
            info={**pooled.info, "discarded_rounds": discarded})
    return pooled, summary


def _target_ess_fraction(options: dict) -> float:
    """The ESS fraction ``options`` temper at (the sampler's default where unset)."""
    from ppl_audit.inference.smc import SMCConfig

    return float(options.get("target_ess_fraction", SMCConfig.target_ess_fraction))


def _tempering_at(options: dict, fraction: float) -> dict:
    """``options`` tempering at ESS fraction ``fraction`` (slow stages at least as gently)."""
    slow = max(options.get("slow_ess_fraction", SMC_SLOW_ESS_FRACTION), fraction)
    return {**options, "target_ess_fraction": fraction, "slow_ess_fraction": slow}


def _discarded_round(chain: SamplingResult, summary: dict[str, Any], options: dict) -> dict[str, Any]:
    """What a discarded round was and cost, for ``info["discarded_rounds"]`` and the report."""
    return {"target_ess_fraction": _target_ess_fraction(options),
            "ess_per_superchain_min": float(summary["ess_per_superchain_min"]),
            "nested_rhat_max": float(summary["nested_rhat_max"]),
            "log_evidence_sd": float(summary["smc"]["log_evidence_sd"]),
            "lagging_runs": int(summary["smc"]["lagging_runs"]),
            "classifier_evaluations": int(chain.num_evaluations), "seconds": float(chain.seconds)}


def _run_smc_once(level_set: LevelSet, prior: Prior, runs: int, particles_per_run: int, generator, device,
                  options: dict, progress) -> SamplingResult:
    """One batch of ``runs`` independent SMC runs, in the space the ``space`` option names."""
    from ppl_audit.inference.smc import run_smc

    options.pop("run_groups", None)  # the caller split the round already

    names, classes = prior.latent_names, level_set.classifier.class_names

    def log_likelihood(z):
        probs = level_set.predict(z)
        return level_set.log_likelihood(probs), probs

    settings = dict(num_runs=runs, particles_per_run=particles_per_run,
                    num_final_draws=options.pop("num_final_draws", SMC_FINAL_DRAWS), generator=generator,
                    extras_names=classes, progress=progress, device=device,
                    log_likelihood_bound=level_set.log_likelihood_bound())
    space = options.pop("space", SMC_DEFAULT_SPACE)
    if space not in SMC_SPACES or (space == "normal" and not prior.normal_dim):
        raise InvalidInputError(f"smc option space must be one of {', '.join(SMC_SPACES)} ('normal' needs a prior "
                                f"with a standard-normal transform), got {space!r}")
    settings = {**settings, **options}
    with torch.no_grad():
        if space == "normal":
            return _smc_in_normal_space(prior, log_likelihood, names, settings)
        if space == "unconstrained":
            return _smc_unconstrained(prior, log_likelihood, names, settings)
        return run_smc(prior.log_prob, log_likelihood, lambda n, generator: prior.sample(n, generator=generator),
                       latent_names=names, **settings)


def _round_runner(level_set: LevelSet, prior: Prior, generator, device, progress, *, seed: int,
                  map_groups: MapGroupsFn) -> Callable[[int, int, int, dict], SamplingResult]:
    """``run_round(round, runs, size, options)``: one batch on the level set's own stream, or, with option
    ``run_groups`` above 1, that many groups on streams of their own, run by ``map_groups`` and joined."""
    from ppl_audit.inference.smc import concat_runs

    def run_round(round_index: int, runs: int, size: int, options: dict) -> SamplingResult:
        count = options.pop("run_groups", SMC_RUN_GROUPS)
        if count == 1:
            return _run_smc_once(level_set, prior, runs, size, generator, device, options, progress)
        groups = smc_groups(seed, round_index, runs, size, count,
                            target_ess_fraction=options.get("target_ess_fraction"),
                            slow_ess_fraction=options.get("slow_ess_fraction"))
        results = list(map_groups(groups))
        if len(results) != len(groups):
            raise InvalidInputError(f"map_groups returned {len(results)} results for {len(groups)} SMC groups")
        return concat_runs(results)

    return run_round


def sample_smc_group(
    prior: Prior,
    classifier,
    target: Sequence[float],
    group: SMCGroup,
    *,
    concentration: float = 10.0,
    relaxation: str = "dirichlet",
    sigma: float | None = None,
    num_particles: int = 1024,
    method: str = DEFAULT_METHOD,
    device="auto",
    class_names: Sequence[str] | None = None,
    options: dict | None = None,
    progress: ProgressFn | None = None,
    num_steps: int | None = None,
    num_samples: int | None = None,
    seed: int | None = None,
) -> SamplingResult:
    """One group of an SMC level set's runs, on the group's own stream: what :func:`sample_level_set` runs
    for each group when its ``options`` set ``run_groups``, in process or as a unit elsewhere.

    The keywords are :func:`sample_level_set`'s, so that a unit hands the same ones to both;
    ``num_steps``, ``num_samples`` and ``seed`` are not used (the group carries its own seed). The result
    counts the classifier evaluations of the group's own level set.
    """
    if method != "smc":
        raise InvalidInputError(f"SMC groups are runs of method 'smc', not {method!r}")
    options = check_sampler_options(method, options)
    dev = resolve_device(device)
    level_set = _level_set(method, prior, classifier, target, concentration, relaxation, sigma, class_names)
    _, plan = smc_plan(num_particles, options)
    plan.pop("max_rounds", None)
    tempering = {"target_ess_fraction": group.target_ess_fraction, "slow_ess_fraction": group.slow_ess_fraction}
    plan.update({key: value for key, value in tempering.items() if value is not None})  # as its round ran
    generator = torch.Generator(device=dev).manual_seed(group.seed)
    chain = _run_smc_once(level_set, prior, group.runs, group.particles_per_run, generator, dev, plan, progress)
    return dataclasses.replace(chain, num_evaluations=max(chain.num_evaluations, level_set.evaluations))


def _smc_summary(chain: SamplingResult) -> dict[str, Any]:
    """The diagnostics summary an SMC result's report is judged by (its verdict, its ESS per superchain)."""
    return diagnostics.summarize(chain.to_arviz(), superchains=chain.superchains, chains_independent=False,
                                 smc=smc_checks(chain))


def smc_checks(chain: SamplingResult) -> dict[str, Any]:
    """:func:`~ppl_audit.diagnostics.smc_checks` of an SMC result (its runs are its superchains)."""
    runs = chain.superchains or 1
    final = chain.final_position.reshape(runs, -1, chain.final_position.shape[-1])
    distinct = min(torch.unique(run, dim=0).shape[0] / run.shape[0] for run in final)  # one call per run
    log_evidence = chain.info.get("log_evidence_superchains", chain.info["log_evidence"])
    return diagnostics.smc_checks(log_evidence, chain.acceptance_rate, distinct)


def _smc_unconstrained(prior: Prior, log_likelihood, names, settings: dict) -> SamplingResult:
    """SMC over ``v`` with ``z = biject_to(support)(v)``; the result's trace is in ``z``.

    The prior over ``v`` is ``p(z(v)) |dz/dv|``: the same prior, with no boundary for a proposal to
    cross (positive lengths become logs, the circle's box a logit), and a mixture stays a smooth
    density (``benchmarks/levelset_smc_levers.py`` measures what it buys).
    """
    from pyro.distributions.transforms import biject_to

    transform = biject_to(prior.distribution().support)

    def log_prior(v):
        z = transform(v)
        return prior.log_prob(z) + transform.log_abs_det_jacobian(v, z)

    def sample(n, generator):
        return transform.inv(prior.sample(n, generator=generator))

    return _smc_through(transform, log_prior, sample, tuple(f"v_{name}" for name in names), "unconstrained",
                        log_likelihood, names, settings)


def _smc_in_normal_space(prior: Prior, log_likelihood, names, settings: dict) -> SamplingResult:
    """SMC over ``u ~ N(0, I_U)`` with ``z = prior.from_normal(u)``; the result's trace is in ``z``.

    The tempered targets are then a whitened Gaussian prior times the likelihood: no box to propose out
    of, no truncation or class mixture for the fitted proposals to miss
    (``benchmarks/levelset_smc_levers.py`` measures what it buys).
    """
    dim = prior.normal_dim

    def sample(n, generator):
        return torch.randn(n, dim, generator=generator, device=generator.device if generator is not None else None)

    return _smc_through(prior.from_normal, standard_normal_log_prob, sample, tuple(f"u{i}" for i in range(dim)),
                        "normal", log_likelihood, names, settings)


def _smc_through(to_latent, log_prior, sample, space_names, space: str, log_likelihood, names,
                 settings: dict) -> SamplingResult:
    """Run SMC in another space (``z = to_latent(x)``), then report its trace in ``z``."""
    from ppl_audit.inference.smc import run_smc

    chain = run_smc(log_prior, lambda x: log_likelihood(to_latent(x)), sample, latent_names=space_names, **settings)
    x = chain.trace
    z = to_latent(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:2], -1).cpu()
    return dataclasses.replace(chain, trace=z, latent_names=tuple(names), info={**chain.info, "space": space})


# Backend arguments that sample_level_set sets itself: never sampler options.
SAMPLER_ARGUMENTS_SET_BY_ENGINE = frozenset({
    "generator", "latent_names", "extras_names", "progress", "device", "num_runs", "particles_per_run",
    "superchains", "site", "model_args", "model_kwargs", "num_chains", "num_warmup", "num_samples", "seed",
    "extras_fn", "log_density_fn", "num_steps", "log_likelihood_bound",
})
# Options sample_level_set itself reads before the backend: name -> annotation (as a backend's would read).
ENGINE_OPTIONS = {"smc": {"space": "str", "max_rounds": "int", "min_particles_per_run": "int", "run_groups": "int"}}
# Python types an option's annotation names; an annotation naming anything else is left to the backend.
_ANNOTATION_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),),
                     "torch.Tensor": (torch.Tensor,)}


_BACKENDS = {"smc": ("ppl_audit.inference.smc", "run_smc"), "mh": ("ppl_audit.inference.mcmc", "run_mh"),
             "hmc": ("ppl_audit.inference.mcmc", "run_hmc"), "nuts": ("ppl_audit.inference.pyro_backends", "run_nuts"),
             "svi": ("ppl_audit.inference.pyro_backends", "run_svi")}


def _backend(method: str):
    """The function that runs ``method``, importing only its module: Pyro's backends are slow to import."""
    module, name = _BACKENDS[method]
    return getattr(importlib.import_module(module), name)


def sampler_option_types(method: str) -> dict[str, str]:
    """The options ``method`` takes, each with its annotation text: the backend's keyword-only
    parameters that :func:`sample_level_set` does not set itself, and its own (smc's ``space``).

    Examples
    --------
    >>> sampler_option_types("hmc")["num_leapfrog"]
    'int'
    >>> sampler_option_types("mh")
    {}
    """
    import inspect

    taken = {}
    for name, parameter in inspect.signature(_backend(method)).parameters.items():
        if parameter.kind == parameter.KEYWORD_ONLY and name not in SAMPLER_ARGUMENTS_SET_BY_ENGINE:
            annotation = parameter.annotation
            taken[name] = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return {**taken, **ENGINE_OPTIONS.get(method, {})}


def _option_value_ok(annotation: str, value) -> bool:
    """Whether ``value`` has a type the annotation names (``bool`` is no number, numbers are finite)."""
    names = [part.strip() for part in annotation.split("|")]
    if not all(n in _ANNOTATION_TYPES for n in names):
        return True  # a callable or another object: the backend checks it
    if isinstance(value, bool) and "bool" not in names:
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return any(isinstance(value, _ANNOTATION_TYPES[n]) for n in names)


def _check_max_rounds(value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= SMC_ROUNDS_LIMIT:
        raise InvalidInputError(f"smc option max_rounds must be an integer in 1..{SMC_ROUNDS_LIMIT}, got {value!r}")


def check_sampler_options(method: str, options, what: str = "options") -> dict[str, Any]:
    """A copy of ``options`` once every name is a setting of ``method`` and every value has its type.

    Raises
    ------
    InvalidInputError
        Naming the unknown option (and the ones ``method`` takes) or the ill-typed one (and its type).

    Examples
    --------
    >>> check_sampler_options("hmc", {"num_leapfrog": 4})
    {'num_leapfrog': 4}
    >>> check_sampler_options("hmc", {"num_leapfrog": "4"})
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: options num_leapfrog of method 'hmc' must be int, got '4'
    """
    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise InvalidInputError(f"{what} must be a dict of setting names to values, got {type(options).__name__}")
    taken = sampler_option_types(method)
    unknown = sorted(set(options) - set(taken))
    if unknown:
        raise InvalidInputError(f"{what} {unknown} are not settings of method {method!r}; it takes: "
                                f"{', '.join(sorted(taken)) or 'none'}")
    for name, value in options.items():
        if not _option_value_ok(taken[name], value):
            raise InvalidInputError(f"{what} {name} of method {method!r} must be {taken[name]}, got {value!r}"[:300])
    if method == "smc" and "max_rounds" in options:  # before any work, not when the rounds start
        _check_max_rounds(options["max_rounds"])
    return dict(options)


# Documented upper bounds (README, "Bounds"). A million particles is ~250x the largest run benchmarked.
MAX_PARTICLES = 1_000_000
MAX_STEPS = 1_000_000  # steps per chain; with MAX_EVALUATIONS it keeps any run to hours, not days
# particles x steps (x leapfrog steps for hmc): ~18 h at the ~30,000 evaluations/s measured on 2 CPU cores.
MAX_EVALUATIONS = 2 * 10**9
MAX_OPTION_COUNT = 1_000_000  # any integer sampler option (num_leapfrog, max_stages, num_proposals...)
MAX_PRIOR_SAMPLES = 1_000_000  # prior draws in an audit's latent figure (paper: 3,000)
# A kept draw is held as float32 latents and predictions plus an acceptance flag, about 4 times over: the
# per-step list, its stacked trace, and ArviZ's float64 copy (2x).
TRACE_COPIES = 4
HMC_DEFAULT_LEAPFROG = 8  # run_hmc's default num_leapfrog: evaluations per step when options leave it out


def estimate_run_bytes(method: str, num_particles: int, num_steps: int, latent_dim: int, num_classes: int,
                       options: dict | None = None) -> int:
    """Bytes a level-set run holds at its peak: its trace, counted :data:`TRACE_COPIES` times, and the
    ``INIT_OVERSAMPLE * N`` prior draws of its initialisation.

    Examples
    --------
    >>> estimate_run_bytes("mh", 1000, 200, 3, 2)  # 1000 x 200 draws of 3 latents and 2 predictions
    16880000
    """
    options = options or {}
    if method == "smc":
        kept = options.get("num_final_draws", SMC_FINAL_DRAWS)
    elif method == "svi":
        kept = 1 + options.get("num_proposals", 4096) // num_particles
    else:
        kept = num_steps
    per_draw = 4 * (latent_dim + num_classes) + 1
    return TRACE_COPIES * num_particles * kept * per_draw + INIT_OVERSAMPLE * num_particles * 4 * (latent_dim + num_classes)


def check_run_size(method: str, num_particles: int, num_steps: int, options: dict | None = None) -> None:
    """Refuse counts above the documented bounds: particles, steps, evaluations and integer options.

    Examples
    --------
    >>> check_run_size("mh", 10**12, 200)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: num_particles must be an integer in 1..1000000 (the documented bound), got 1000000000000
    """
    check_count(num_particles, "num_particles", MAX_PARTICLES, why="the documented bound")
    check_count(num_steps, "num_steps", MAX_STEPS, why="the documented bound")
    for name, value in (options or {}).items():
        if is_int(value) and value > MAX_OPTION_COUNT:
            raise InvalidInputError(f"option {name} = {value} is above the documented bound {MAX_OPTION_COUNT}")
    if method == "smc" and "run_groups" in (options or {}):  # at most one group per run, checked up front
        smc_plan(num_particles, options)
    if method != "smc":  # smc's length is its tempering schedule's, bounded by its max_stages
        leapfrog = (options or {}).get("num_leapfrog", HMC_DEFAULT_LEAPFROG) if method == "hmc" else 1
        evaluations = num_particles * num_steps * leapfrog
        if evaluations > MAX_EVALUATIONS:
            raise InvalidInputError(
                f"{num_particles} particles x {num_steps} steps{f' x {leapfrog} leapfrog steps' if leapfrog > 1 else ''}"
                f" = {evaluations:.3g} classifier evaluations is above the bound of {MAX_EVALUATIONS:.0e} (about 18 h "
                "on 2 CPU cores); use fewer particles or steps")


def _check_arguments(method, init, num_particles, num_steps, num_samples, seed, warmup_fraction, options) -> dict:
    """:func:`sample_level_set`'s checks of its own arguments, before any work; returns the checked options."""
    if method not in METHODS:
        raise InvalidInputError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    if init not in INIT_STRATEGIES:
        raise InvalidInputError(f"unknown init {init!r}; available: {', '.join(INIT_STRATEGIES)}")
    for name, value in (("num_particles", num_particles), ("num_steps", num_steps)):
        if not is_positive_int(value):
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    # NUTS pools every chain's draws, so its samples may outnumber its chains.
    max_samples = num_particles * num_steps if method == "nuts" else num_particles
    if num_samples is not None and (not is_int(num_samples) or not 0 < num_samples <= max_samples):
        raise InvalidInputError(f"num_samples must be in 1..{max_samples} for method {method!r}, got {num_samples!r}")
    check_seed(seed)
    check_real(warmup_fraction, "warmup_fraction", 0, 1, high_open=True)
    options = check_sampler_options(method, options)
    check_run_size(method, num_particles, num_steps, options)
    return options


def _level_set(method: str, prior: Prior, classifier, target, concentration, relaxation, sigma,
               class_names) -> LevelSet:
    """:func:`sample_level_set`'s level set, refused when ``method`` needs gradients the classifier or the
    prior's decoder lacks (a prior says so with ``differentiable = False``, as an ONNX decoder does)."""
    level_set = LevelSet(prior, classifier, target, concentration, relaxation=relaxation, sigma=sigma,
                         class_names=class_names)
    if method in GRADIENT_METHODS:
        for what, differentiable in (("classifier", level_set.classifier.differentiable),
                                     ("prior's decoder", getattr(prior, "differentiable", True))):
            if not differentiable:
                raise InvalidInputError(
                    f"method {method!r} needs gradients, but the {what} is a black box; use 'smc' or 'mh'"
                )
    return level_set


def _draw_samples(chain: SamplingResult, method: str, prior: Prior, num_particles: int, num_samples: int | None,
                  generator, dev) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(num_samples, latents, probs, images)``: draws with replacement from the particles' last states
    (from every kept draw for nuts and svi), and their images."""
    with torch.no_grad():
        if method in ("nuts", "svi"):
            pool = chain.trace.reshape(-1, chain.trace.shape[-1])
            pool_probs = chain.extras_trace.reshape(pool.shape[0], -1)
        else:
            pool, pool_probs = chain.final_position, chain.final_extras
        if num_samples is None:
            num_samples = min(pool.shape[0], max(num_particles, 1000)) if method == "nuts" else num_particles
        if num_samples > pool.shape[0]:
            raise InvalidInputError(f"num_samples={num_samples} exceeds the {pool.shape[0]} draws the run kept")
        idx = torch.randint(pool.shape[0], (num_samples,), generator=generator, device=dev).cpu()
        latents = pool[idx]
        probs = pool_probs[idx]
        images = prior.decode(latents.to(dev)).cpu()
    return num_samples, latents, probs, images


def _metrics(method: str, chain: SamplingResult, summary: dict[str, Any], latents: torch.Tensor,
             probs: torch.Tensor, target: torch.Tensor, num_samples: int) -> dict[str, Any]:
    """:class:`LevelSetResult`'s ``metrics``: how close the samples came to ``target``, and how well the run mixed."""
    confidence = target_confidence(probs, target)
    smc = summary.get("smc")
    evals = chain.num_evaluations
    k = int(torch.argmax(target))
    return {
        "method": method,
        "delta": average_deviation(probs, target),
        "mean_confidence": float(confidence.mean()),
        "min_confidence": float(confidence.min()),
        "max_confidence": float(confidence.max()),
        "fraction_in_ambiguous_band": fraction_in_band(probs[:, k]),
        "acceptance_rate": chain.acceptance_rate,
        "num_samples": num_samples,
        "num_distinct": count_distinct(latents),
        "rhat_max": summary["rhat_max"],
        "nested_rhat_max": summary.get("nested_rhat_max"),
        "ess_bulk_min": summary["ess_bulk_min"],
        "ess_tail_min": summary["ess_tail_min"],
        "ess_superchains_min": summary.get("ess_superchains_min"),
        **({"log_evidence_sd": smc["log_evidence_sd"], "distinct_share_min": smc["distinct_share_min"],
            "final_acceptance": smc["final_acceptance"], "smc_rounds": chain.info.get("rounds", 1),
            "smc_discarded_rounds": len(chain.info.get("discarded_rounds", []))} if smc else {}),
        "converged": summary["converged"],
        "classifier_evaluations": evals,
        "ambiguous_per_1000_evaluations": (
            1000.0 * visited_yield(chain, k) / evals if chain.accepted is not None and evals else None
        ),
    }


def sample_level_set(
    prior: Prior,
    classifier,
    target: Sequence[float],
    *,
    concentration: float = 10.0,
    relaxation: str = "dirichlet",
    sigma: float | None = None,
    num_particles: int = 1024,
    num_steps: int = 200,
    num_samples: int | None = None,
    seed: int = 0,
    method: str = DEFAULT_METHOD,
    init: str = "importance",
    warmup_fraction: float = 0.5,
    device="auto",
    class_names: Sequence[str] | None = None,
    options: dict | None = None,
    progress: ProgressFn | None = None,
    map_groups: MapGroupsFn | None = None,
) -> LevelSetResult:
    """Sample inputs whose prediction matches ``target`` (Booth et al. 2020).

    Parameters
    ----------
    prior : Prior
        Generative prior over images (for example :class:`~ppl_audit.priors.HouseRocketWorld`).
    classifier : Classifier or callable
        Any callable mapping images ``(N, C, H, W)`` to probabilities ``(N, K)``.
        The gradient-free methods (``smc``, ``mh``) use it as a black box.
    target : sequence of float
        Target prediction, strictly inside the simplex (e.g. ``[0.5, 0.5]``).
    concentration : float
        Dirichlet concentration ``alpha`` > 0 (the paper uses 10).
    relaxation : {"dirichlet", "gaussian"}
        The prediction likelihood; ``sigma`` is the Gaussian's scale.
    num_particles : int
        ``N``: particles (smc, mh, hmc), chains (nuts) or resampled draws (svi).
    num_steps : int
        Steps per chain, warm-up included (mh, hmc, nuts), or optimisation
        steps (svi); smc's length is set by its tempering schedule.
    num_samples : int, optional
        ``n <= N`` samples drawn with replacement from the particles' last
        states (default ``N``); for nuts, from all kept draws (default up to 1,000).
    seed : int
        Seeds every random draw: the same seed gives the same samples. An ``int`` in
        ``0..2**63 - 1`` (:func:`~ppl_audit.validators.check_seed`; not a bool or a float).
    method : {"smc", "mh", "hmc", "nuts", "svi"}
        Sampler. ``"smc"`` (the default) is adaptively tempered SMC with
        independent MH moves from fitted mixtures (gradient-free, the fastest
        that passes its diagnostics in ``benchmarks/levelset_throughput.py``);
        ``"mh"`` is the paper's particle random-walk MH.
    init : {"importance", "prior"}
        mh/hmc start: likelihood-resampled prior draws, or plain prior draws.
    warmup_fraction : float
        Share of the steps spent adapting (mh, hmc, nuts).
    device : str
        ``"auto"`` picks CUDA when present.
    class_names : sequence of str, optional
        Needed to wrap a plain callable when the prior has no class names.
    options : dict, optional
        Method-specific settings passed to the backend (e.g. ``num_leapfrog``). smc also takes
        ``space``: ``"normal"`` (the default where the prior has :meth:`~ppl_audit.priors.base.Prior.from_normal`)
        moves over the standard normal the prior transforms, ``"latent"`` over ``z``; ``max_rounds``,
        ``min_particles_per_run``; and ``run_groups``: each round's runs in that many groups on streams of
        their own (:func:`smc_groups`), which ``map_groups`` may run elsewhere.
        A name the method does not take, or a value of the wrong type, raises
        :class:`~ppl_audit.errors.InvalidInputError` naming it (:func:`check_sampler_options`).
    progress : callable, optional
        ``progress(task, done, total)``.
    map_groups : callable, optional
        With smc option ``run_groups`` above 1: runs a round's :class:`SMCGroup` s and returns their results
        in order (an executor's fan-out). Default: one after another here, by :func:`sample_smc_group`.
        Where they run does not change the samples.

    Returns
    -------
    LevelSetResult

    Examples
    --------
    >>> from ppl_audit.priors import HouseRocketWorld
    >>> clf = lambda x: torch.stack([1 - x.mean((1, 2, 3)), x.mean((1, 2, 3))], -1)
    >>> res = sample_level_set(HouseRocketWorld(), clf, [0.9, 0.1], method="mh", num_particles=64,
    ...                        num_steps=20, device="cpu")
    >>> res.latents.shape
    torch.Size([64, 3])
    """
    options = _check_arguments(method, init, num_particles, num_steps, num_samples, seed, warmup_fraction, options)
    dev = resolve_device(device)
    level_set = _level_set(method, prior, classifier, target, concentration, relaxation, sigma, class_names)
    check_fits_in_memory(estimate_run_bytes(method, num_particles, num_steps, len(prior.latent_names),
                                            level_set.classifier.num_classes, options), f"a {method} run")
    generator = torch.Generator(device=dev).manual_seed(int(seed))
    if map_groups is None:
        def map_groups(groups):
            return [sample_smc_group(prior, classifier, target, g, concentration=concentration, relaxation=relaxation,
                                     sigma=sigma, num_particles=num_particles, device=dev, class_names=class_names,
                                     options=options, progress=progress) for g in groups]
    run_round = _round_runner(level_set, prior, generator, dev, progress, seed=seed, map_groups=map_groups)
    chain, summary = _run_backend(method, level_set, prior, num_particles=num_particles, num_steps=num_steps,
                                  warmup_fraction=warmup_fraction, init=init, seed=seed, generator=generator,
                                  device=dev, options=options, progress=progress, run_round=run_round)
    # The level set counts every image it classified (initialisation included);
    # Pyro backends evaluate through its model, which only the backend counts.
    chain = dataclasses.replace(chain, num_evaluations=max(chain.num_evaluations, level_set.evaluations))
    num_samples, latents, probs, images = _draw_samples(chain, method, prior, num_particles, num_samples, generator,
                                                        dev)
    if summary is None:  # chains that are independent (MH, HMC, NUTS, SVI draws)
        summary = diagnostics.summarize(chain.to_arviz(), superchains=chain.superchains)
    target_t = level_set.target
    metrics = _metrics(method, chain, summary, latents, probs, target_t, num_samples)
    return LevelSetResult(latents, images, probs, target_t, level_set.concentration, metrics, chain, summary)


__all__ = [
    "DEFAULT_METHOD",
    "ENGINE_OPTIONS",
    "GRADIENT_METHODS",
    "HMC_DEFAULT_LEAPFROG",
    "INIT_OVERSAMPLE",
    "INIT_STRATEGIES",
    "MAX_EVALUATIONS",
    "MAX_OPTION_COUNT",
    "MAX_PARTICLES",
    "MAX_PRIOR_SAMPLES",
    "MAX_STEPS",
    "MAX_SUPERCHAINS",
    "METHODS",
    "SAMPLER_ARGUMENTS_SET_BY_ENGINE",
    "SMC_DEFAULT_SPACE",
    "SMC_FINAL_DRAWS",
    "SMC_FITTED_PARTICLES_PER_RUN",
    "SMC_MAX_ROUNDS",
    "SMC_MIN_FITTED_RUNS",
    "SMC_GENTLE_ESS_FRACTION",
    "SMC_MIN_MOVED_FRACTION",
    "SMC_MIN_PARTICLES_PER_RUN",
    "SMC_ROUND_MIN_EFFECTIVE_PARTICLES",
    "SMC_RUN_GROUPS",
    "SMC_RW_MOVES",
    "SMC_SLOW_ESS_FRACTION",
    "SMC_SPACES",
    "TRACE_COPIES",
    "LevelSetResult",
    "MapGroupsFn",
    "SMCGroup",
    "check_run_size",
    "check_sampler_options",
    "estimate_run_bytes",
    "sample_level_set",
    "sample_smc_group",
    "sampler_option_types",
    "smc_groups",
    "smc_fitted_run_count",
    "smc_plan",
    "smc_run_count",
    "superchain_count",
    "visited_yield",
]
