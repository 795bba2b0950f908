"""``sample_level_set``: the public entry point of level-set sampling.

The paper's sampler (Booth et al. 2020, Sec. 3.2): ``N`` particles of
gradient-free random-walk Metropolis-Hastings for ``T`` steps, the last state
of each particle kept, then ``n <= N`` drawn with replacement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ppl_audit import diagnostics
from ppl_audit._device import resolve_device
from ppl_audit.errors import InvalidInputError
from ppl_audit.inference.mcmc import MCMCConfig, SamplingResult, run_mh
from ppl_audit.levelset import LevelSet
from ppl_audit.metrics import (
    AMBIGUOUS_BAND,
    average_deviation,
    count_distinct,
    fraction_in_band,
    target_confidence,
)
from ppl_audit.priors.base import Prior
from ppl_audit.progress import ProgressFn

METHODS = ("mh",)
INIT_STRATEGIES = ("prior", "importance")
# "importance" starts the particles from prior draws resampled by their
# likelihood: INIT_OVERSAMPLE * N draws, N kept. Random-walk chains then start
# in the right mode instead of having to cross between classes, which the
# level sets of this world (rockets vs houses) make rare.
INIT_OVERSAMPLE = 4


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


def _initial_particles(level_set: LevelSet, n: int, init: str, generator) -> torch.Tensor:
    prior = level_set.prior
    if init == "prior":
        return prior.sample(n, generator=generator)
    draws = prior.sample(INIT_OVERSAMPLE * n, generator=generator)
    log_w = level_set.log_likelihood(level_set.predict(draws))
    idx = torch.multinomial(torch.softmax(log_w, 0), n, replacement=True, generator=generator)
    return draws[idx]


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


def sample_level_set(
    prior: Prior,
    classifier,
    target: Sequence[float],
    *,
    concentration: float = 10.0,
    num_particles: int = 1000,
    num_steps: int = 200,
    num_samples: int | None = None,
    seed: int = 0,
    method: str = "mh",
    init: str = "importance",
    warmup_fraction: float = 0.5,
    device="auto",
    class_names: Sequence[str] | None = None,
    progress: ProgressFn | None = None,
) -> LevelSetResult:
    """Sample inputs whose prediction matches ``target`` (Booth et al. 2020).

    Parameters
    ----------
    prior : Prior
        Generative prior over images (for example :class:`~ppl_audit.priors.HouseRocketWorld`).
    classifier : Classifier or callable
        Any callable mapping images ``(N, C, H, W)`` to probabilities ``(N, K)``;
        it is used as a black box (no gradients).
    target : sequence of float
        Target prediction, strictly inside the simplex (e.g. ``[0.5, 0.5]``).
    concentration : float
        Dirichlet concentration ``alpha`` > 0 (the paper uses 10).
    num_particles : int
        ``N``, chains run side by side.
    num_steps : int
        ``T``, MH steps per particle (warm-up included).
    num_samples : int, optional
        ``n <= N`` samples drawn with replacement from the particles' last
        states (default ``N``).
    seed : int
        Seeds every random draw: the same seed gives the same samples.
    method : {"mh"}
        Sampler.
    init : {"importance", "prior"}
        Start from likelihood-resampled prior draws, or from plain prior draws.
    warmup_fraction : float
        Share of the steps spent adapting the proposal scale.
    device : str
        ``"auto"`` picks CUDA when present.
    class_names : sequence of str, optional
        Needed to wrap a plain callable when the prior has no class names.
    progress : callable, optional
        ``progress(task, done, total)``.

    Returns
    -------
    LevelSetResult

    Examples
    --------
    >>> from ppl_audit.priors import HouseRocketWorld
    >>> clf = lambda x: torch.stack([1 - x.mean((1, 2, 3)), x.mean((1, 2, 3))], -1)
    >>> res = sample_level_set(HouseRocketWorld(), clf, [0.9, 0.1], num_particles=64, num_steps=20, device="cpu")
    >>> res.latents.shape
    torch.Size([64, 3])
    """
    if method not in METHODS:
        raise InvalidInputError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    if init not in INIT_STRATEGIES:
        raise InvalidInputError(f"unknown init {init!r}; available: {', '.join(INIT_STRATEGIES)}")
    for name, value in (("num_particles", num_particles), ("num_steps", num_steps)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    num_samples = num_particles if num_samples is None else num_samples
    if not isinstance(num_samples, int) or not 0 < num_samples <= num_particles:
        raise InvalidInputError(f"num_samples must be in 1..num_particles={num_particles}, got {num_samples!r}")
    config = MCMCConfig(num_steps=num_steps, warmup_fraction=warmup_fraction)
    dev = resolve_device(device)
    level_set = LevelSet(prior, classifier, target, concentration, class_names=class_names)
    generator = torch.Generator(device=dev).manual_seed(int(seed))
    with torch.no_grad():
        start = _initial_particles(level_set, num_particles, init, generator).to(dev)
        chain = run_mh(
            level_set.log_density_and_probs,
            start,
            config,
            generator=generator,
            latent_names=prior.latent_names,
            extras_names=level_set.classifier.class_names,
            progress=progress,
        )
        chain.num_evaluations = level_set.evaluations
        idx = torch.randint(num_particles, (num_samples,), generator=generator, device=dev).cpu()
        latents = chain.final_position[idx]
        probs = chain.final_extras[idx]
        images = prior.decode(latents.to(dev)).cpu()
    target_t = level_set.target
    confidence = target_confidence(probs, target_t)
    summary = diagnostics.summarize(chain.to_arviz())
    evals = chain.num_evaluations
    k = int(torch.argmax(target_t))
    metrics = {
        "delta": average_deviation(probs, target_t),
        "mean_confidence": float(confidence.mean()),
        "min_confidence": float(confidence.min()),
        "max_confidence": float(confidence.max()),
        "fraction_in_ambiguous_band": fraction_in_band(probs[:, k]),
        "acceptance_rate": chain.acceptance_rate,
        "num_samples": num_samples,
        "num_distinct": count_distinct(latents),
        "rhat_max": summary["rhat_max"],
        "ess_bulk_min": summary["ess_bulk_min"],
        "ess_tail_min": summary["ess_tail_min"],
        "classifier_evaluations": evals,
        "ambiguous_per_1000_evaluations": 1000.0 * visited_yield(chain, k) / evals,
    }
    return LevelSetResult(latents, images, probs, target_t, level_set.concentration, metrics, chain, summary)
