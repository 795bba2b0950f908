"""How often does the prior produce an input the classifier calls class ``k`` with confidence at least ``tau``?

The confident region ``R = {z : P(k | decode(z)) >= tau}`` is a level set with a one-sided edge. Its prior
mass ``P(R)`` is a rare-event probability, estimated by the SMC engine (:func:`~ppl_audit.inference.smc.run_smc`)
through a soft indicator of ``R`` in the classifier's logit margin ``m(z) = log P_k - log(1 - P_k)``::

    L(z) = exp(-sharpness * max(0, logit(tau) - m(z)))      (1 inside R, decaying outside)

Tempering from the prior to ``prior * L`` walks the particles into ``R`` through ever thinner shells (SMC for
rare events, Cérou et al. 2012), and each run's evidence estimate ``Z = E_prior[L]`` follows. Since ``L = 1``
exactly on ``R``, ``P(R) = Z * P_post(R)``, with ``P_post(R)`` the share of the run's final draws inside
``R``. And since ``L >= 1_R``, ``Z`` alone bounds ``P(R)`` from above: the bound reported where too few draws
reach ``R`` for an estimate. It is itself an estimate: a part of ``R`` that no run reaches is missing from it.
Independent runs give independent estimates, so their spread is the error.

The adaptive tempering schedule biases each run's ``Z`` slightly low. On exact answers
(``benchmarks/region_mass_bias.py``), the mean over 12 seeds of the default 8 x 256 particles was 0.98x the
truth at ``P(R) = 1e-2`` and 0.96x at ``2e-6``, and 0.85x for a classifier that saturates (``P_k`` exactly 0
outside ``R``): small beside the orders of magnitude a rate spans.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ppl_audit._device import resolve_device
from ppl_audit.classifiers.base import as_classifier, check_probabilities
from ppl_audit.errors import InvalidInputError
from ppl_audit.metrics import first_of_each_distinct, runs_interval_factor
from ppl_audit.priors.base import Prior
from ppl_audit.priors.base import standard_normal_log_prob
from ppl_audit.progress import ProgressFn
from ppl_audit.sampling import SAMPLER_ARGUMENTS_SET_BY_ENGINE, smc_checks, smc_plan
from ppl_audit.validators import check_count, check_seed

DEFAULT_CONFIDENCE = 0.99  # the "called k with 99% confidence"
# Log-likelihood lost per unit of logit margin short of the edge: a draw 0.1 logit outside R keeps
# e^-5 of its weight, so nearly every final draw lies inside R and the share P_post(R) is well estimated.
DEFAULT_SHARPNESS = 50.0
# The soft indicator's maximum, reached on R. Tempering is told it so that a run whose draws all miss R by
# the same saturated margin (a classifier whose P_k underflows to 0) steps slowly until its moves find R,
# instead of leaping to beta = 1 and reporting a mass, and a "bound", of about 0 (run_smc's guard).
LOG_LIKELIHOOD_MAX = 0.0
DEFAULT_PARTICLES = 2048
DEFAULT_RUNS = 8  # independent SMC runs: their spread is the rate's standard error
MIN_RUNS = 2
MAX_PARTICLES = 1 << 17
# An estimate is reported when its relative standard error is at most this, and at least half the runs
# reached R; otherwise only the upper bound is (too few draws inside R to say more).
MAX_RELATIVE_ERROR = 0.5
INTERVAL_LEVEL = 0.95  # intervals and bounds over the runs: Student's t (metrics.runs_interval_factor)
PREDICT_CHUNK = 1024  # images decoded and classified per pass
GALLERY_SIZE = 16


@dataclass(frozen=True)
class ConfidentRegion:
    """The prior mass of a confident region, with the inputs found inside it.

    Attributes
    ----------
    class_index, confidence : int, float
        The region ``P(class_index) >= confidence``.
    rate : float
        Estimated prior mass (mean of the runs' estimates); ``nan`` when not :attr:`estimable`.
    rate_se : float
        Its standard error, from the runs' spread.
    upper_bound : float
        The upper end of a 95% interval on the mass: the soft indicator's evidence plus Student's t
        standard errors over the runs (2.36 for 8 runs).
    run_rates, run_log_evidence, run_share_inside : tuple of float
        Each run's estimate, its ``log Z`` and its share of final draws inside the region.
    latents, probs : torch.Tensor
        Distinct final draws inside the region, most confident first, ``(n, D)`` and ``(n, K)``.
    true_classes : torch.Tensor or None
        Each of those draws' class under a labelled prior (:meth:`class_of`), else ``None``.
    checks : dict
        :func:`~ppl_audit.diagnostics.smc_checks` of the runs, plus ``estimable``.
    """

    class_index: int
    confidence: float
    rate: float
    rate_se: float
    upper_bound: float
    run_rates: tuple[float, ...]
    run_log_evidence: tuple[float, ...]
    run_share_inside: tuple[float, ...]
    latents: torch.Tensor
    probs: torch.Tensor
    true_classes: torch.Tensor | None
    checks: dict[str, Any] = field(default_factory=dict)
    num_evaluations: int = 0
    seconds: float = 0.0

    @property
    def estimable(self) -> bool:
        """Whether :attr:`rate` is an estimate (else only :attr:`upper_bound` is)."""
        return bool(self.checks.get("estimable"))

    @property
    def interval(self) -> tuple[float, float]:
        """A 95% interval on the rate (``(0, upper_bound)`` when only the bound is known)."""
        if not self.estimable:
            return 0.0, self.upper_bound
        half = runs_interval_factor(len(self.run_rates), INTERVAL_LEVEL) * self.rate_se
        return max(0.0, self.rate - half), self.rate + half


def margin(probs: torch.Tensor, class_index: int) -> torch.Tensor:
    """The logit margin ``log P_k - log(1 - P_k)`` in float64 (``+inf`` where ``P_k`` rounds to 1).

    Examples
    --------
    >>> margin(torch.tensor([[0.5, 0.5], [0.01, 0.99]]), 1).round(decimals=3)
    tensor([0.0000, 4.5950], dtype=torch.float64)
    """
    p = probs[:, class_index].double().clamp_min(1e-300)
    rest = (1 - probs.double()[:, class_index]).clamp_min(0.0)
    return p.log() - rest.log()


def _check_arguments(prior, class_index, num_classes, confidence, sharpness, num_particles, num_runs):
    if not isinstance(prior, Prior) or not prior.normal_dim:
        raise InvalidInputError("a confident-region estimate needs a Prior with a standard-normal transform "
                                f"(normal_dim > 0), got {type(prior).__name__}")
    if isinstance(class_index, bool) or not isinstance(class_index, int) or not 0 <= class_index < num_classes:
        raise InvalidInputError(f"class_index must be an integer in [0, {num_classes}), got {class_index!r}")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise InvalidInputError(f"confidence must be a probability strictly between 0 and 1, got {confidence!r}")
    if isinstance(sharpness, bool) or not isinstance(sharpness, (int, float)) or not (
            math.isfinite(sharpness) and sharpness > 0):
        raise InvalidInputError(f"sharpness must be a finite number > 0, got {sharpness!r}")
    check_count(num_particles, "num_particles", MAX_PARTICLES, why="a memory bound")
    check_count(num_runs, "num_runs", num_particles // 8, why="at least 8 particles per run")
    if num_runs < MIN_RUNS or num_particles % num_runs:
        raise InvalidInputError(f"num_runs must be at least {MIN_RUNS} and divide num_particles ({num_particles}), "
                                f"got {num_runs}")


def sample_confident_region(prior: Prior, classifier, class_index: int, *, confidence: float = DEFAULT_CONFIDENCE,
                            num_particles: int = DEFAULT_PARTICLES, num_runs: int = DEFAULT_RUNS,
                            sharpness: float = DEFAULT_SHARPNESS, seed: int = 0, device=None,
                            class_names: Sequence[str] | None = None, progress: ProgressFn | None = None,
                            **smc_options) -> ConfidentRegion:
    """Estimate how often ``prior`` yields an input ``classifier`` calls ``class_index`` with ``>= confidence``.

    Parameters
    ----------
    prior : Prior
        Any prior with a standard-normal transform; a labelled one (``class_of``) also labels the finds.
    classifier : Classifier or callable
    class_index : int
    confidence : float
        The region's edge ``tau`` in (0, 1).
    num_particles, num_runs : int
        SMC particles in all, split into independent runs (their spread is the error).
    sharpness : float
        Log-likelihood per logit of margin short of the edge (module docstring).
    seed : int
    device : str or torch.device, optional
    class_names : sequence of str, optional
        To wrap a plain callable classifier.
    progress : callable, optional
    **smc_options
        Passed to :func:`~ppl_audit.inference.smc.run_smc` (e.g. ``move``, ``num_final_draws``). By default
        the level sets' moves (:func:`~ppl_audit.sampling.smc_plan`): independent proposals from fitted
        mixtures, which jump between the region's islands. On MNIST digit 0 they bought the same precision
        per second as random-walk moves, with a smaller spread of log-evidence across runs
        (``benchmarks/confident_regions_mnist.py``, moves table).

    Returns
    -------
    ConfidentRegion

    Raises
    ------
    InvalidInputError
        A prior without a standard-normal transform, a class index or confidence out of range,
        or particle counts that do not split into at least 2 runs of 8.
    """
    from ppl_audit.inference.smc import run_smc

    names = class_names or getattr(prior, "class_names", None)
    clf = as_classifier(classifier, names)
    _check_arguments(prior, class_index, clf.num_classes, confidence, sharpness, num_particles, num_runs)
    engine_set = sorted(set(smc_options) & SAMPLER_ARGUMENTS_SET_BY_ENGINE)
    if engine_set:  # log_likelihood_bound among them: the soft indicator's maximum, 0
        raise InvalidInputError(f"{', '.join(engine_set)} {'is' if len(engine_set) == 1 else 'are'} set by the "
                                "estimator, not an SMC option")
    seed = check_seed(seed)
    device = resolve_device(device if device is not None else getattr(prior, "device", "cpu"))
    generator = torch.Generator(device=device).manual_seed(seed)
    edge = math.log(confidence) - math.log1p(-confidence)
    evaluations = [0]

    def predict(z):
        parts = [check_probabilities(clf.probs(prior.decode(prior.from_normal(c))), c.shape[0], clf.num_classes)
                 for c in z.split(PREDICT_CHUNK)]
        evaluations[0] += z.shape[0]
        return torch.cat(parts)

    def log_likelihood(u):
        probs = predict(u)
        shortfall = (edge - margin(probs, class_index)).clamp_min(0.0)
        return (-sharpness * shortfall).to(u.dtype), probs

    dim = prior.normal_dim
    start = time.perf_counter()
    with torch.no_grad():
        chain = run_smc(standard_normal_log_prob, log_likelihood,
                        lambda n, g: torch.randn(n, dim, generator=g, device=g.device),
                        num_runs=num_runs, particles_per_run=num_particles // num_runs, generator=generator,
                        log_likelihood_bound=LOG_LIKELIHOOD_MAX,
                        extras_names=clf.class_names, progress=progress, device=device,
                        **smc_plan(num_particles, smc_options)[1])
        return _region(prior, chain, class_index, float(confidence), evaluations[0], time.perf_counter() - start)


def _region(prior: Prior, chain, class_index: int, confidence: float, evaluations: int,
            seconds: float) -> ConfidentRegion:
    """The rate from each run's evidence and share inside, the bound, and the finds ranked by confidence."""
    runs = chain.superchains or 1
    probs = chain.extras_trace  # (R*M, T, K)
    inside = (probs[..., class_index] >= confidence).double().reshape(runs, -1).mean(1)
    log_z = torch.tensor(chain.info["log_evidence"], dtype=torch.float64)
    per_run = log_z.exp() * inside
    rate, se = float(per_run.mean()), float(per_run.std(unbiased=True) / math.sqrt(runs))
    soft = log_z.exp()
    factor = runs_interval_factor(runs, INTERVAL_LEVEL)
    bound = float(soft.mean() + factor * soft.std(unbiased=True) / math.sqrt(runs))
    estimable = bool(rate > 0 and se <= MAX_RELATIVE_ERROR * rate and (inside > 0).double().mean() >= 0.5)
    latents, found = _finds(prior, chain, class_index, confidence)
    checks = {**smc_checks(chain), "estimable": estimable}
    true = prior.class_of(latents) if callable(getattr(prior, "class_of", None)) and len(latents) else None
    return ConfidentRegion(
        class_index=class_index, confidence=confidence, rate=rate if estimable else float("nan"), rate_se=se,
        upper_bound=max(bound, rate + factor * se), run_rates=tuple(float(v) for v in per_run),
        run_log_evidence=tuple(float(v) for v in log_z), run_share_inside=tuple(float(v) for v in inside),
        latents=latents, probs=found, true_classes=true, checks=checks, num_evaluations=evaluations,
        seconds=seconds)


def _finds(prior: Prior, chain, class_index: int, confidence: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct final positions inside the region, as latents ``z``, most confident first."""
    final_u = chain.trace[:, -1]
    final_p = chain.extras_trace[:, -1]
    keep = final_p[:, class_index] >= confidence
    u, p = final_u[keep], final_p[keep]
    if len(u):
        first = first_of_each_distinct(u)
        u, p = u[first], p[first]
    order = torch.argsort(p[:, class_index], descending=True, stable=True)
    with torch.no_grad():
        z = prior.from_normal(u[order].to(getattr(prior, "device", u.device))).cpu() if len(u) else u
    return z, p[order]


__all__ = ["DEFAULT_CONFIDENCE", "DEFAULT_SHARPNESS", "ConfidentRegion", "margin", "sample_confident_region"]
