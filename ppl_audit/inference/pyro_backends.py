"""Pyro backends: NUTS and SVI + importance resampling, returning :class:`SamplingResult`.

Both take a Pyro model whose latent site is ``"z"`` (every prior and
``LevelSet.model()`` here) and leave the caller's Pyro state alone: the
global param store is scoped (:func:`~ppl_audit.inference.pyro_density.isolated_param_store`)
and the global random state is restored, while ``seed`` alone decides the
draws (same seed, same result on the same machine).

* :func:`run_nuts` runs Pyro's NUTS one chain after another in this process
  (Pyro's multi-chain mode spawns processes: on a 2-core machine that buys
  little and costs determinism), recording per-draw statistics Pyro's
  ``MCMC`` does not expose.
* :func:`run_svi` fits an autoguide by maximising the ELBO, then corrects it
  by importance resampling: ``num_proposals`` guide draws weighted by
  ``p(z, y) / q(z)``, ``num_samples`` drawn from them with replacement.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS, Trace_ELBO
from pyro.infer.autoguide import AutoMultivariateNormal, AutoNormal, init_to_median, init_to_sample

from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.inference.adaptation import HMC_TARGET_ACCEPTANCE
from ppl_audit.inference.kernels.mh import evaluate
from ppl_audit.inference.kernels.smc import effective_sample_size
from ppl_audit.inference.pyro_density import (
    batched_log_density,
    inspect_site,
    isolated_param_store,
    preserved_rng,
    trace_log_density,
    vectorized_trace,
)
from ppl_audit.inference.result import SamplingResult
from ppl_audit.progress import ProgressFn, report
from ppl_audit.validators import LATENT_SITE

GUIDES = {"normal": AutoNormal, "mvn": AutoMultivariateNormal}  # guide= names and their Pyro autoguides
# Resampled draws are exchangeable, so splitting them into groups changes no
# estimate; 4 groups give ArviZ the several chains its diagnostics expect
# (their R-hat is near 1 by construction: it says nothing about the fit).
RESAMPLED_CHAINS = 4
CHUNK_SIZE = 256  # latents per model / extras evaluation: the renderer + CNN's fastest batch (DESIGN facts)
_INIT_FAILURE = "cannot find valid initial params"  # Pyro's RuntimeError when no finite start exists


def _positive_int(name: str, value, *, allow_zero: bool = False) -> int:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        what = "a non-negative integer" if allow_zero else "a positive integer"
        raise InvalidInputError(f"{name} must be {what}, got {value!r}")
    return int(value)


def _latent_names(latent_names: Optional[Sequence[str]], dim: int) -> tuple[str, ...]:
    names = tuple(latent_names) if latent_names is not None else tuple(f"z{i}" for i in range(dim))
    if len(names) != dim:
        raise InvalidInputError(f"got {len(names)} latent names for {dim} latents")
    return names


def _chain_seeds(seed: int, num_chains: int) -> list[int]:
    """Independent per-chain seeds from one seed (NumPy's SeedSequence: no overlap between seed and seed + 1)."""
    children = np.random.SeedSequence(int(seed)).spawn(num_chains)
    return [int(c.generate_state(1)[0]) for c in children]  # uint32: valid for every seeder pyro.set_rng_seed calls


def _evaluate_extras(extras_fn: Callable, z: torch.Tensor) -> torch.Tensor:
    """``extras_fn`` over ``z (N, D)`` in chunks under ``no_grad``; checked to be ``(N, E)`` and NaN-free."""
    out = []
    with torch.no_grad():
        for chunk in z.split(CHUNK_SIZE):
            e = torch.as_tensor(extras_fn(chunk))
            if e.ndim != 2 or e.shape[0] != chunk.shape[0]:
                raise ModelOutputError(f"extras_fn returned shape {tuple(e.shape)}, expected ({chunk.shape[0]}, E)")
            out.append(e.detach().cpu())
    extras = torch.cat(out)
    if torch.isnan(extras).any():
        raise ModelOutputError(f"extras_fn returned NaN for {int(torch.isnan(extras).any(-1).sum())} of {len(z)} latents")
    return extras


class _RecordingNUTS(NUTS):
    """Pyro's NUTS plus the per-iteration statistics Pyro keeps to itself.

    Per ``sample`` call it records the acceptance statistic (mean Metropolis
    acceptance over the trajectory's proposals, as NUTS adapts on), whether
    a sub-tree diverged, the tree depth (doublings), the potential
    evaluations (leapfrog steps; during warm-up also step-size searches)
    and the log density (``-potential energy``, unconstrained, Jacobian
    included) of the state kept. Relies on Pyro 1.9's ``_build_tree``;
    the project pins ``pyro-ppl<1.10``.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records: list[tuple[float, bool, int, int, float]] = []
        self.potential_calls = 0
        self._nesting = 0
        self._trees: list = []

    def _initialize_model_properties(self, model_args, model_kwargs):
        super()._initialize_model_properties(model_args, model_kwargs)
        potential = self.potential_fn

        def counted(params):
            self.potential_calls += 1
            return potential(params)

        self.potential_fn = counted

    def _build_tree(self, *args, **kwargs):
        self._nesting += 1
        try:
            tree = super()._build_tree(*args, **kwargs)
        finally:
            self._nesting -= 1
        if self._nesting == 0:
            self._trees.append(tree)
        return tree

    def sample(self, params):
        self._trees = []
        calls = self.potential_calls
        out = super().sample(params)
        proposals = sum(int(t.num_proposals) for t in self._trees)
        accept = float(sum(float(t.sum_accept_probs) for t in self._trees) / proposals) if proposals else 1.0
        diverging = any(bool(t.diverging) for t in self._trees)
        pe = self._potential_energy_last
        lp = -float(pe) if pe is not None else float("nan")
        self.records.append((accept, diverging, len(self._trees), self.potential_calls - calls, lp))
        return out


def _check_nuts_arguments(num_chains, num_samples, num_warmup, max_tree_depth, target_acceptance, seed):
    """:func:`run_nuts`' counts and seed, checked in the order it has always checked them."""
    num_chains = _positive_int("num_chains", num_chains)
    num_samples = _positive_int("num_samples", num_samples)
    num_warmup = _positive_int("num_warmup", num_warmup, allow_zero=True)
    max_tree_depth = _positive_int("max_tree_depth", max_tree_depth)
    if not 0 < float(target_acceptance) < 1:
        raise InvalidInputError(f"target_acceptance must be in (0, 1), got {target_acceptance!r}")
    seed = _positive_int("seed", seed, allow_zero=True)
    return num_chains, num_samples, num_warmup, max_tree_depth, seed


def _progress_hook(progress: ProgressFn | None, task: str, total: int) -> Callable:
    """A Pyro ``hook_fn`` reporting ``(task, iterations so far, total)``, counted over every chain it serves."""
    done = [0]

    def hook(*_):
        done[0] += 1
        report(progress, task, done[0], total)

    return hook


@dataclass(frozen=True)
class _NUTSChain:
    """What one NUTS chain leaves: its kept draws, their statistics and its adapted kernel."""

    draws: torch.Tensor  # (num_samples, D), on the CPU
    records: list  # per kept draw: _RecordingNUTS.records' tuples
    step_size: float
    inverse_mass: list  # the diagonal of each block of the adapted inverse mass matrix
    potential_calls: int  # gradient evaluations, warm-up included


def _nuts_chain(model: Callable, site: str, model_args: tuple, kwargs: dict, dim: int, chain_seed: int,
                num_warmup: int, num_samples: int, hook: Callable, settings: dict) -> _NUTSChain:
    """One ``pyro.infer.MCMC`` run of :class:`_RecordingNUTS` seeded by ``chain_seed``."""
    pyro.set_rng_seed(chain_seed)
    kernel = _RecordingNUTS(model, **settings)
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=num_warmup, num_chains=1,
                disable_progbar=True, hook_fn=hook)
    try:
        mcmc.run(*model_args, **kwargs)
    except RuntimeError as exc:
        if _INIT_FAILURE in str(exc):
            raise ModelOutputError(
                f"NUTS found no initial value of {site!r} with a finite log density (NaN or -inf "
                f"everywhere it tried): {exc}"
            ) from exc
        raise
    samples = mcmc.get_samples(group_by_chain=True)[site]  # (1, num_samples, *site shape)
    return _NUTSChain(
        draws=samples.reshape(num_samples, dim).detach().cpu(),
        records=kernel.records[num_warmup:],
        step_size=float(kernel.step_size),
        inverse_mass=[v.detach().cpu().flatten().tolist() for v in kernel.inverse_mass_matrix.values()],
        potential_calls=kernel.potential_calls,
    )


def _nuts_sample_stats(records: list[list]) -> dict[str, torch.Tensor]:
    """The per-draw statistics of :func:`run_nuts` from every chain's records; a NaN log density is an error."""
    stats = torch.tensor([[list(r) for r in chain] for chain in records], dtype=torch.float64)  # (C, S, 5)
    lp = stats[..., 4]
    if torch.isnan(lp).any():
        raise ModelOutputError(f"NUTS kept {int(torch.isnan(lp).sum())} draws whose log density is NaN")
    return {
        "acceptance_prob": stats[..., 0].to(torch.float32),
        "diverging": stats[..., 1].bool(),
        "tree_depth": stats[..., 2].long(),
        "n_steps": stats[..., 3].long(),
        "lp": lp.to(torch.float32),
    }


def _nuts_info(chains: list[_NUTSChain], sample_stats: dict, target_acceptance, max_tree_depth: int,
               seeds: list[int], extras: torch.Tensor | None) -> dict:
    """:func:`run_nuts`' ``info`` (see its Returns)."""
    return {
        "step_size": [chain.step_size for chain in chains],
        "inverse_mass": [chain.inverse_mass for chain in chains],
        "total_leapfrog_steps": int(sample_stats["n_steps"].sum()),
        "num_divergences": int(sample_stats["diverging"].sum()),
        "target_acceptance": float(target_acceptance),
        "max_tree_depth": max_tree_depth,
        "chain_seeds": seeds,
        "extras_evaluations": 0 if extras is None else extras.shape[0] * extras.shape[1],
    }


def run_nuts(
    model: Callable,
    *,
    site: str = LATENT_SITE,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    num_chains: int = 2,
    num_warmup: int = 200,
    num_samples: int = 200,
    seed: int = 0,
    target_acceptance: float = HMC_TARGET_ACCEPTANCE,
    max_tree_depth: int = 10,
    init_strategy: Callable | None = None,
    latent_names: Sequence[str] | None = None,
    extras_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    extras_names: Sequence[str] = (),
    progress: ProgressFn | None = None,
) -> SamplingResult:
    """Sample ``site`` of a Pyro model with Pyro's NUTS, chains one after another.

    Each chain is one ``pyro.infer.MCMC`` run (diagonal mass matrix and step
    size adapted in warm-up, Hoffman & Gelman 2014, Alg. 6 with multinomial
    sampling) seeded by its own seed derived from ``seed``; the global random
    state is restored afterwards.

    Parameters
    ----------
    model : callable
        A Pyro model with latent site ``site`` of ``D`` scalars. Other latent
        sites are sampled too but not reported.
    site : str
    model_args, model_kwargs
        What the model is called with.
    num_chains, num_samples : int
        Chains and kept draws per chain (> 0).
    num_warmup : int
        Adaptation iterations per chain, dropped (>= 0).
    seed : int
    target_acceptance : float
        Step-size adaptation target, in ``(0, 1)``.
    max_tree_depth : int
        Cap on trajectory doublings (> 0).
    init_strategy : callable, optional
        A Pyro init strategy; default ``init_to_sample``: each chain starts
        at its own prior draw (over-dispersed starts make R-hat meaningful,
        and Pyro's default, uniform on (-2, 2) unconstrained, puts pixel-scale
        latents such as a house width of 30 at most e^2 = 7.4).
    latent_names : sequence of str, optional
        Names of the ``D`` coordinates (default ``z0``, ``z1``, ...).
    extras_fn : callable, optional
        ``z (N, D) -> (N, E)`` evaluated on every kept draw (in chunks, no
        gradients): for level sets the classifier's predictions.
    extras_names : sequence of str
    progress : callable, optional
        ``progress("nuts", done, total)`` after every iteration, all chains
        counted together.

    Returns
    -------
    SamplingResult
        ``method="nuts"``, trace ``(num_chains, num_samples, D)`` in the
        constrained space; ``sample_stats``: ``diverging``, ``acceptance_prob``,
        ``tree_depth``, ``n_steps`` (leapfrog steps) and ``lp`` (log density
        in unconstrained space, Jacobian included); ``num_evaluations``:
        every gradient evaluation of the model after initialisation
        (leapfrog steps and step-size searches, all chains); ``info``:
        ``step_size`` and ``inverse_mass`` per chain, ``total_leapfrog_steps``,
        ``num_divergences``, ``chain_seeds``.

    Raises
    ------
    InvalidInputError
        On a non-positive count, a negative seed, a target acceptance outside
        (0, 1), or a missing / observed ``site``.
    ModelOutputError
        If the model's log density is NaN at a prior draw, or NUTS finds no
        start with a finite log density.

    Examples
    --------
    >>> import pyro.distributions as dist
    >>> def model():
    ...     pyro.sample("z", dist.Normal(torch.tensor([1.0]), 1.0).to_event(1))
    >>> res = run_nuts(model, num_chains=1, num_warmup=30, num_samples=30)
    >>> res.trace.shape, res.method
    (torch.Size([1, 30, 1]), 'nuts')
    """
    start = time.perf_counter()
    num_chains, num_samples, num_warmup, max_tree_depth, seed = _check_nuts_arguments(
        num_chains, num_samples, num_warmup, max_tree_depth, target_acceptance, seed
    )
    kwargs = dict(model_kwargs or {})
    info = inspect_site(model, site, model_args, kwargs, single_latent=False)
    names = _latent_names(latent_names, info.dim)
    seeds = _chain_seeds(seed, num_chains)
    hook = _progress_hook(progress, "nuts", num_chains * (num_warmup + num_samples))
    settings = dict(target_accept_prob=float(target_acceptance), max_tree_depth=max_tree_depth,
                    max_plate_nesting=info.max_plate_nesting, init_strategy=init_strategy or init_to_sample)
    with isolated_param_store(), preserved_rng():
        chains = [_nuts_chain(model, site, model_args, kwargs, info.dim, chain_seed, num_warmup, num_samples, hook,
                              settings) for chain_seed in seeds]
    trace = torch.stack([chain.draws for chain in chains])
    sample_stats = _nuts_sample_stats([chain.records for chain in chains])
    extras = None
    if extras_fn is not None:
        extras = _evaluate_extras(extras_fn, trace.reshape(-1, info.dim)).reshape(num_chains, num_samples, -1)
    return SamplingResult(
        method="nuts",
        latent_names=names,
        trace=trace,
        sample_stats=sample_stats,
        extras_trace=extras,
        extras_names=tuple(extras_names),
        num_warmup=num_warmup,
        num_evaluations=sum(chain.potential_calls for chain in chains),
        seconds=time.perf_counter() - start,
        info=_nuts_info(chains, sample_stats, target_acceptance, max_tree_depth, seeds, extras),
    )


def _check_svi_arguments(num_steps, num_proposals, num_samples, learning_rate, guide, seed):
    """:func:`run_svi`'s counts, learning rate, guide and seed, checked in the order it has always checked them."""
    num_steps = _positive_int("num_steps", num_steps)
    num_proposals = _positive_int("num_proposals", num_proposals)
    num_samples = _positive_int("num_samples", num_samples)
    if num_samples % RESAMPLED_CHAINS:
        raise InvalidInputError(
            f"num_samples must be a positive multiple of {RESAMPLED_CHAINS} (the resampled draws fill "
            f"{RESAMPLED_CHAINS} chains), got {num_samples}"
        )
    if isinstance(learning_rate, bool) or not (
        isinstance(learning_rate, (int, float)) and math.isfinite(learning_rate) and learning_rate > 0
    ):
        raise InvalidInputError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
    if guide not in GUIDES:
        raise InvalidInputError(f"unknown guide {guide!r}; known guides: {', '.join(GUIDES)}")
    seed = _positive_int("seed", seed, allow_zero=True)
    return num_steps, num_proposals, num_samples, seed


def _fit_guide(model: Callable, q, model_args: tuple, kwargs: dict, max_plate_nesting: int, num_steps: int,
               learning_rate, progress: ProgressFn | None) -> list[float]:
    """Step 1 of :func:`run_svi`: Adam on the one-particle ELBO, gradients of the guide's parameters only;
    the per-step ELBO estimates."""
    loss_fn = Trace_ELBO(num_particles=1, max_plate_nesting=max_plate_nesting)
    with torch.no_grad():
        q(*model_args, **kwargs)  # builds the guide's parameters
    params = [p for p in q.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=float(learning_rate))
    elbo_values = []
    for step in range(num_steps):
        loss = loss_fn.differentiable_loss(model, q, *model_args, **kwargs)
        if torch.isnan(loss):
            raise ModelOutputError(f"the ELBO is NaN at step {step} (the model's log density or its gradient)")
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()
        elbo_values.append(-float(loss.detach()))
        report(progress, "svi", step + 1, num_steps)
    return elbo_values


@dataclass(frozen=True)
class _Proposals:
    """The guide's draws and the densities that weight them (step 2 of :func:`run_svi`)."""

    z: torch.Tensor  # (num_proposals, D)
    log_q: torch.Tensor  # (num_proposals,) guide log density
    log_p: torch.Tensor  # (num_proposals,) model log density
    extras_chunks: list  # the extras log_density_fn returned, chunk by chunk (empty when it returned none)


def _weighted_proposals(q, log_density_fn: Callable, site: str, dim: int, max_plate_nesting: int,
                        num_proposals: int, model_args: tuple, kwargs: dict, progress: ProgressFn | None) -> _Proposals:
    """``num_proposals`` draws of the guide from one vectorised trace, scored by guide and model."""
    with torch.no_grad():
        guide_trace = vectorized_trace(q, num_proposals, max_plate_nesting, model_args, kwargs)
        log_q = trace_log_density(guide_trace, num_proposals, max_plate_nesting)
        z = guide_trace.nodes[site]["value"].reshape(num_proposals, dim)
        log_p, extras_chunks = [], []
        for i, chunk in enumerate(z.split(CHUNK_SIZE)):
            lp, ex = evaluate(log_density_fn, chunk)
            log_p.append(lp)
            if ex is not None:
                extras_chunks.append(ex)
            report(progress, "importance", min((i + 1) * CHUNK_SIZE, num_proposals), num_proposals)
    return _Proposals(z, log_q, torch.cat(log_p).detach(), extras_chunks)


@dataclass(frozen=True)
class _Resampled:
    """The importance weights of the proposals and the ones drawn by them (step 3 of :func:`run_svi`)."""

    z: torch.Tensor  # (num_proposals, D) on the CPU
    log_w: torch.Tensor  # (num_proposals,) float64 log importance weights, unnormalised
    log_w_norm: torch.Tensor  # (num_proposals,) normalised
    index: torch.Tensor  # (num_samples,) the proposals drawn, with replacement


def _resample(proposals: _Proposals, num_samples: int, seed: int) -> _Resampled:
    """``num_samples`` proposals drawn with probability proportional to ``p / q``, by a generator seeded ``seed``."""
    log_p = proposals.log_p
    log_w = (log_p - proposals.log_q.to(log_p)).cpu().double()
    if not torch.isfinite(log_w).any():
        raise ModelOutputError(f"all {log_w.shape[0]} proposals from the guide have zero model density")
    log_w_norm = log_w - torch.logsumexp(log_w, 0)
    generator = torch.Generator().manual_seed(seed)
    index = torch.multinomial(log_w_norm.exp(), num_samples, replacement=True, generator=generator)
    return _Resampled(proposals.z.detach().cpu(), log_w, log_w_norm, index)


def _svi_extras(extras_fn: Callable | None, extras_chunks: list, draws: _Resampled, shape: tuple[int, int]):
    """The resampled draws' extras: ``extras_fn`` once per distinct draw, else what the log density returned."""
    if extras_fn is not None:
        unique, inverse = torch.unique(draws.index, return_inverse=True)
        return _evaluate_extras(extras_fn, draws.z[unique])[inverse].reshape(*shape, -1)
    if extras_chunks:
        return torch.cat(extras_chunks).detach().cpu()[draws.index].reshape(*shape, -1)
    return None


def _svi_info(elbo_values: list[float], draws: _Resampled, num_proposals: int, guide: str, num_steps: int,
              learning_rate, extras_fn: Callable | None) -> dict:
    """:func:`run_svi`'s ``info`` (see its Returns)."""
    log_w = draws.log_w
    ess = float(effective_sample_size(log_w.unsqueeze(0))[0])  # Kish ESS of the importance weights
    return {
        "elbo": elbo_values,
        "importance_ess": ess,
        "importance_ess_fraction": ess / num_proposals,
        "log_evidence": float(torch.logsumexp(log_w, 0) - math.log(num_proposals)),
        "num_proposals": num_proposals,
        "guide": guide,
        "num_steps": num_steps,
        "learning_rate": float(learning_rate),
        "extras_evaluations": 0 if extras_fn is None else int(torch.unique(draws.index).numel()),
    }


def run_svi(
    model: Callable,
    *,
    site: str = LATENT_SITE,
    model_args: tuple = (),
    model_kwargs: dict | None = None,
    num_steps: int = 1000,
    learning_rate: float = 0.01,
    num_proposals: int = 4096,
    num_samples: int = 1000,
    seed: int = 0,
    guide: str = "normal",
    latent_names: Sequence[str] | None = None,
    extras_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    extras_names: Sequence[str] = (),
    log_density_fn: Callable | None = None,
    progress: ProgressFn | None = None,
) -> SamplingResult:
    """Variational fit, then importance resampling towards the exact posterior.

    1. Fit ``q`` (``AutoNormal``, or ``AutoMultivariateNormal`` for
       ``guide="mvn"``; both Gaussian in unconstrained space, started at the
       prior median) by Adam on the one-particle ``Trace_ELBO`` (Wingate &
       Weber 2013; Kingma & Welling 2014, Eq. 3), in a param-store scope and
       with gradients taken with respect to the guide's parameters only
       (nothing of the model is trained, and no ``.grad`` of a classifier's
       weights is touched). The scope, rather than
       ``module_local_params=True``, keeps a ``PyroModule`` inside the model
       (a Bayesian classifier) reading its parameters as it always does.
    2. Draw ``num_proposals`` latents from ``q`` in one vectorised trace and
       weight them by ``log w = log p(z, y) - log q(z)``.
    3. Draw ``num_samples`` of them with replacement, with probability
       proportional to ``w`` (sampling-importance-resampling, Rubin 1988).

    Parameters
    ----------
    model : callable
        A Pyro model whose only latent site is ``site``.
    site : str
    model_args, model_kwargs
    num_steps : int
        Optimisation steps (> 0).
    learning_rate : float
        Adam's step size (> 0).
    num_proposals : int
        Guide draws to weight (> 0).
    num_samples : int
        Resampled draws: a positive multiple of 4. They fill the trace as
        ``(4, num_samples // 4, D)``: resampled draws are exchangeable, so
        the 4 groups are interchangeable chains for ArviZ. ArviZ's ESS of
        them counts resampled draws, duplicates included; the posterior
        approximation's effective size is ``info["importance_ess"]``.
    seed : int
        Seeds the fit and the proposals (global random state restored after)
        and the resampling's ``torch.Generator``.
    guide : {"normal", "mvn"}
    latent_names : sequence of str, optional
    extras_fn : callable, optional
        ``z (N, D) -> (N, E)``, evaluated once per distinct resampled draw.
    extras_names : sequence of str
    log_density_fn : callable, optional
        ``z (N, D) -> (N,)`` or ``-> ((N,), (N, E))``: the model's joint log
        density written directly (e.g. ``LevelSet.log_density_and_probs``);
        default :func:`~ppl_audit.inference.pyro_density.batched_log_density`.
        Extras it returns fill ``extras_trace`` when ``extras_fn`` is None.
    progress : callable, optional
        ``progress("svi", step, num_steps)``, then ``progress("importance", done, num_proposals)``.

    Returns
    -------
    SamplingResult
        ``method="svi"``; ``sample_stats``: ``lp`` (model log density) and
        ``log_weight`` (normalised log importance weight) of each draw;
        ``num_evaluations = num_steps + num_proposals``; ``info``: ``elbo``
        (per-step ELBO estimates: the loss curve, negated), ``importance_ess``,
        ``importance_ess_fraction``, ``log_evidence`` (importance estimate of
        ``log p(y)``), ``num_proposals``, ``guide``, ``num_steps``,
        ``learning_rate``.

    Raises
    ------
    InvalidInputError
        On a non-positive count or learning rate, a negative seed,
        ``num_samples`` not a multiple of 4, an unknown guide, or a model with another latent site.
    ModelOutputError
        If the model's log density is NaN (at a prior draw, during the fit or
        at a proposal), or every proposal has zero density.

    Examples
    --------
    >>> import pyro.distributions as dist
    >>> def model():
    ...     z = pyro.sample("z", dist.Normal(torch.zeros(1), 2.0).to_event(1))
    ...     pyro.sample("y", dist.Normal(z.sum(-1), 0.5), obs=torch.tensor(1.0))
    >>> res = run_svi(model, num_steps=50, num_proposals=256, num_samples=64, learning_rate=0.05)
    >>> res.trace.shape
    torch.Size([4, 16, 1])
    """
    start = time.perf_counter()
    num_steps, num_proposals, num_samples, seed = _check_svi_arguments(
        num_steps, num_proposals, num_samples, learning_rate, guide, seed
    )
    kwargs = dict(model_kwargs or {})
    info = inspect_site(model, site, model_args, kwargs)
    names = _latent_names(latent_names, info.dim)
    if log_density_fn is None:
        log_density_fn = batched_log_density(model, site=site, model_args=model_args, model_kwargs=kwargs)
    q = GUIDES[guide](model, init_loc_fn=init_to_median)
    with isolated_param_store(exclude_prefixes=(q._pyro_name,)), preserved_rng():
        pyro.set_rng_seed(seed)
        elbo_values = _fit_guide(model, q, model_args, kwargs, info.max_plate_nesting, num_steps, learning_rate,
                                 progress)
        proposals = _weighted_proposals(q, log_density_fn, site, info.dim, info.max_plate_nesting, num_proposals,
                                        model_args, kwargs, progress)
    draws = _resample(proposals, num_samples, seed)
    shape = (RESAMPLED_CHAINS, num_samples // RESAMPLED_CHAINS)
    return SamplingResult(
        method="svi",
        latent_names=names,
        trace=draws.z[draws.index].reshape(*shape, info.dim),
        sample_stats={
            "lp": proposals.log_p.cpu()[draws.index].reshape(shape).to(torch.float32),
            "log_weight": draws.log_w_norm[draws.index].reshape(shape).to(torch.float32),
        },
        extras_trace=_svi_extras(extras_fn, proposals.extras_chunks, draws, shape),
        extras_names=tuple(extras_names),
        num_warmup=0,
        num_evaluations=num_steps + num_proposals,
        seconds=time.perf_counter() - start,
        info=_svi_info(elbo_values, draws, num_proposals, guide, num_steps, learning_rate, extras_fn),
    )


__all__ = [
    "CHUNK_SIZE",
    "GUIDES",
    "RESAMPLED_CHAINS",
    "run_nuts",
    "run_svi",
]
