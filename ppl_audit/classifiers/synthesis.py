"""Classification by synthesis (Wang et al., "Safer Classification by Synthesis", 2017).

A test image ``x`` is labelled by asking every class's generator for the
image it can make that is closest to ``x``:

    d_c(x) = min_z || x - G_c(z) ||_2,     label = argmin_c d_c(x),     confidence = -min_c d_c(x)

The similarity is the negative L2 distance, the paper's. An input unlike
every class (a letter, a character from another alphabet) is far from every
generator's range, so its confidence is low and a selective classifier that
abstains at low confidence rejects it: the classifier "knows when it does not
know".

The minimisation over ``z`` is the latent search (:func:`latent_search`),
batched over images *and* classes: one ``(C, n, D)`` tensor of latents is
decoded by all class generators at once (their parameters are stacked, see
:mod:`ppl_audit.generative.class_generators`), and every ``(image, class)``
problem is solved side by side:

1. **Monte Carlo start.** ``draws`` latents from each class's prior
   ``N(0, I)`` are decoded once and shared by all images; each problem starts
   from its closest draw (squared distances by one batched matrix product).
2. **Encoder start** (VAEs): the encoder mean ``E[q_c(z | x)]`` replaces the
   Monte Carlo start where it is closer.
3. **Optimisation.** ``steps`` Adam steps on the summed squared distances.
   The problems do not interact: each one's gradient is its own and Adam's
   update is elementwise, so this is exactly ``C * n`` independent Adam runs.
   Latents are kept in the ball around 0 that holds ``prior_mass`` of the
   prior's mass (radius ``sqrt(chi2_D quantile)``, :func:`prior_ball_radius`;
   every start and every step is projected onto it) so that a generator is not
   driven where its prior puts little mass and it could draw things unlike its
   class. The best latent seen is kept, so the result is never worse than the
   start.
4. **Refinement** (optional, ``refine_restarts`` > 0): the contested images,
   whose two closest classes lie within ``refine_ratio`` of each other, are
   searched again with far more draws and steps (:func:`refine_contested`).
   On held-out training digits 4 restarts removed 16 of the 70 errors of
   class GANs built like the shipped ones, and 2 restarts just as many, for
   about a quarter of the first search's time
   (``benchmarks/class_gan_holdout.py --headroom``).

The optimiser helps each class's generator come closer to the image, the
wrong classes' generators most of all, since the right class's start is
usually close already: on 4,000 MNIST training digits the class VAEs' search
made 28 errors with latents in the box ``[-3, 3]^10`` and 24 in the ball of
90% prior mass (their starts alone: 19 and 16); on the class GANs the two
constraints tied (``benchmarks/synthesis_mnist.py --split train``).

Examples
--------
>>> from ppl_audit.generative.class_generators import ClassGAN
>>> gan = ClassGAN(classes=3, latent_dim=2, generator_hidden=(8,), critic_hidden=(8,), seed=0)
>>> classifier = SynthesisClassifier(gan, class_names=("a", "b", "c"), config=SearchConfig(draws=16, steps=5))
>>> result = classifier.search(torch.rand(4, 1, 28, 28))
>>> result.distances.shape, result.labels.shape
(torch.Size([4, 3]), torch.Size([4]))
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ppl_audit.classifiers.base import Classifier, check_images
from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.progress import ProgressFn, report
from ppl_audit.validators import is_non_negative_int, is_positive_float, is_positive_int

IMAGE_SHAPE = (1, 28, 28)
SEARCH_TASK = "latent search"  # progress task name
DEFAULT_PIXEL_NOISE = 1.0  # sigma of the Gaussian pixel-noise model that turns distances into probabilities


@dataclass(frozen=True)
class SearchConfig:
    """How :func:`latent_search` looks for each class's closest generation.

    Parameters
    ----------
    draws : int
        Prior draws per class for the Monte Carlo start (shared by all images).
    steps : int
        Adam steps after the start (0: the start is the answer).
    learning_rate : float
        Adam's step size on the latents.
    prior_mass : float or None
        Latents are projected onto the ball around 0 holding this much of the
        ``N(0, I_D)`` prior's mass (:func:`prior_ball_radius`); ``None``:
        unconstrained. 0.9 is a ball of radius 4.00 in 10 dimensions, 4.72 in 15.
    use_encoder : bool
        Start from the encoder mean where the generators have an encoder (VAEs).
    chunk : int
        Images per batched pass (memory: ``C * chunk`` generations at once).
    seed : int
        Seeds the prior draws, so the same images get the same answer.
    refine_restarts : int
        After the search, the *contested* images (the two closest classes
        within a factor ``refine_ratio``) are searched this many times more
        with ``refine_draws`` draws (other ones each time), ``refine_steps``
        steps and ``refine_learning_rate``; every (image, class) keeps its
        best distance. 0 (the default) skips it. Every class is searched
        again, so no label is favoured.
    refine_ratio, refine_draws, refine_steps, refine_learning_rate
        The refinement's settings (see ``refine_restarts``).

    Examples
    --------
    >>> SearchConfig(steps=-1)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: steps must be an integer >= 0, got -1
    """

    draws: int = 1000
    steps: int = 100
    learning_rate: float = 0.05
    prior_mass: float | None = 0.9
    use_encoder: bool = True
    chunk: int = 2500
    seed: int = 0
    refine_restarts: int = 0
    refine_ratio: float = 1.1
    refine_draws: int = 20_000
    refine_steps: int = 300
    refine_learning_rate: float = 0.1

    def __post_init__(self):
        for prefix in ("", "refine_"):  # the search's and its refinement's draws, steps and step size
            draws, steps, rate = (getattr(self, prefix + name) for name in ("draws", "steps", "learning_rate"))
            if not is_positive_int(draws):
                raise InvalidInputError(f"{prefix}draws must be a positive integer, got {draws!r}")
            if not is_non_negative_int(steps):
                raise InvalidInputError(f"{prefix}steps must be an integer >= 0, got {steps!r}")
            if not is_positive_float(rate):
                raise InvalidInputError(f"{prefix}learning_rate must be a number > 0, got {rate!r}")
        if self.prior_mass is not None and not (isinstance(self.prior_mass, (int, float))
                                                and not isinstance(self.prior_mass, bool)
                                                and 0 < self.prior_mass < 1):
            raise InvalidInputError(f"prior_mass must be a number in (0, 1) or None, got {self.prior_mass!r}")
        if not is_positive_int(self.chunk):
            raise InvalidInputError(f"chunk must be a positive integer, got {self.chunk!r}")
        if not is_non_negative_int(self.refine_restarts):
            raise InvalidInputError(f"refine_restarts must be an integer >= 0, got {self.refine_restarts!r}")
        if not (is_positive_float(self.refine_ratio) and self.refine_ratio >= 1):
            raise InvalidInputError(f"refine_ratio must be a number >= 1, got {self.refine_ratio!r}")

    def refinement(self, restart: int) -> "SearchConfig":
        """The search of the contested images' ``restart``-th refinement (its own prior draws)."""
        return dataclasses.replace(self, draws=self.refine_draws, steps=self.refine_steps,
                                   learning_rate=self.refine_learning_rate, seed=self.seed + 1 + restart,
                                   refine_restarts=0)


@dataclass
class SearchResult:
    """What :func:`latent_search` found for ``N`` images and ``C`` classes.

    Attributes
    ----------
    distances : torch.Tensor
        ``(N, C)``: L2 distance from each image to its class's closest generation.
    latents : torch.Tensor
        ``(N, C, D)``: the latents of those generations.
    start_distances : torch.Tensor
        ``(N, C)``: distances at the start (Monte Carlo or encoder), before the optimiser.
    seconds : float
        Wall-clock time of the whole search.
    generator_seconds : float
        The part spent in generator passes (forward and backward through the generators).
    """

    distances: torch.Tensor
    latents: torch.Tensor
    start_distances: torch.Tensor
    seconds: float = 0.0
    generator_seconds: float = 0.0
    timings: dict = field(default_factory=dict)

    @property
    def labels(self) -> torch.Tensor:
        """``(N,)``: the class of the closest generation."""
        return self.distances.argmin(1)

    @property
    def confidence(self) -> torch.Tensor:
        """``(N,)``: the similarity of the closest generation, ``-min_c d_c``; higher = more confident."""
        return -self.distances.min(1).values

    def __len__(self) -> int:
        return self.distances.shape[0]

    def subset(self, index) -> "SearchResult":
        """The result for a subset of the images (same timings)."""
        return SearchResult(self.distances[index], self.latents[index], self.start_distances[index],
                            self.seconds, self.generator_seconds, dict(self.timings))


def _check_generators(generators) -> None:
    for name in ("num_members", "latent_dim", "decode"):
        if not hasattr(generators, name):
            raise InvalidInputError(
                f"generators must have num_members, latent_dim and decode(z) (per-class generators from "
                f"ppl_audit.generative.class_generators); {type(generators).__name__} has no {name}")


@contextmanager
def _frozen(module: torch.nn.Module):
    """Parameters stop requiring gradients inside the block (the search differentiates latents only)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    was_training = module.training
    module.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        module.train(was_training)


def _flat_decode(generators, z: torch.Tensor) -> torch.Tensor:
    images = generators.decode(z)
    return images.reshape(*z.shape[:-1], -1)


def _squared_distances(flat: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """``flat (n, P)`` against ``generated (C, M, P)`` -> ``(C, n, M)`` squared L2 distances (one batched product)."""
    cross = torch.matmul(generated, flat.T).transpose(1, 2)  # (C, n, M)
    out = flat.square().sum(1)[None, :, None] + generated.square().sum(2)[:, None, :] - 2 * cross
    return out.clamp_min(0)


def latent_search(generators, x: torch.Tensor, config: SearchConfig = SearchConfig(), *,
                  progress: ProgressFn | None = None) -> SearchResult:
    """For every image and class, the latent whose generation is closest to the image (L2).

    Parameters
    ----------
    generators
        Per-class generators: ``num_members`` (= classes ``C``), ``latent_dim``
        (``D``) and ``decode(z (C, ..., D)) -> (C, ..., 1, 28, 28)``; with
        ``encode(x) -> (mean, log_var)`` each ``(C, N, D)`` the encoder start is used.
    x : torch.Tensor
        Images ``(N, 1, 28, 28)`` in ``[0, 1]``; moved to the generators' device.
    config : SearchConfig
    progress : callable, optional
        Called as optimiser steps complete.

    Returns
    -------
    SearchResult
        Distances and latents on the generators' device.

    Raises
    ------
    InvalidInputError
        No images, images of the wrong shape or range, generators lacking the interface.
    ModelOutputError
        A generator returned NaN.

    Examples
    --------
    >>> from ppl_audit.generative.class_generators import ClassGAN
    >>> gan = ClassGAN(2, 2, (8,), (8,), seed=0)
    >>> x = gan.decode(torch.full((2, 1, 2), 0.5))[1]  # class 1's own generation
    >>> result = latent_search(gan, x, SearchConfig(draws=64, steps=50))
    >>> int(result.labels), bool(result.distances[0, 1] < 0.05)
    (1, True)
    """
    _check_generators(generators)
    check_images(x, IMAGE_SHAPE)
    if len(x) == 0:
        raise InvalidInputError("latent search needs at least one image, got an empty batch")
    first = next(generators.parameters())
    flat_all = x.detach().to(device=first.device, dtype=first.dtype).flatten(1)
    c, d = generators.num_members, generators.latent_dim
    start_clock = time.perf_counter()
    timings = {"generator_forward": 0.0, "generator_backward": 0.0, "monte_carlo": 0.0}
    distances, latents, starts = [], [], []
    total_steps = config.steps * ((len(flat_all) + config.chunk - 1) // config.chunk)
    done = 0
    with _frozen(generators):
        rng = torch.Generator().manual_seed(config.seed)
        radius = None if config.prior_mass is None else prior_ball_radius(config.prior_mass, d)
        prior = _project(torch.randn(c, config.draws, d, generator=rng).to(first.device), radius)
        t0 = time.perf_counter()
        with torch.no_grad():
            prior_images = _flat_decode(generators, prior)  # (C, M, P), decoded once for every image
        timings["generator_forward"] += time.perf_counter() - t0
        _check_finite(prior_images, "prior draws")
        for flat in flat_all.split(config.chunk):
            n = len(flat)
            t0 = time.perf_counter()
            with torch.no_grad():
                best_d2, where = _squared_distances(flat, prior_images).min(2)  # (C, n)
                z = torch.gather(prior, 1, where[..., None].expand(c, n, d))
                if config.use_encoder and hasattr(generators, "encode"):
                    t1 = time.perf_counter()
                    mean = _project(generators.encode(flat.view(n, *IMAGE_SHAPE))[0], radius)  # (C, n, D)
                    enc_d2 = (_flat_decode(generators, mean) - flat).square().sum(-1)
                    timings["generator_forward"] += time.perf_counter() - t1
                    closer = enc_d2 < best_d2
                    z = torch.where(closer[..., None], mean, z)
                    best_d2 = torch.minimum(best_d2, enc_d2)
            timings["monte_carlo"] += time.perf_counter() - t0
            start_d2 = best_d2.clone()
            best_z = z.clone()
            z = z.clone().requires_grad_(True)
            optimiser = torch.optim.Adam([z], lr=config.learning_rate)
            for _ in range(config.steps):
                t0 = time.perf_counter()
                d2 = (_flat_decode(generators, z) - flat).square().sum(-1)  # (C, n)
                t1 = time.perf_counter()
                optimiser.zero_grad(set_to_none=True)
                d2.sum().backward()
                t2 = time.perf_counter()
                timings["generator_forward"] += t1 - t0
                timings["generator_backward"] += t2 - t1
                with torch.no_grad():
                    _check_finite(d2, "generations")
                    better = d2 < best_d2
                    best_d2 = torch.where(better, d2, best_d2)
                    best_z = torch.where(better[..., None], z, best_z)
                optimiser.step()
                if radius is not None:
                    with torch.no_grad():
                        z.copy_(_project(z, radius))
                done += 1
                report(progress, SEARCH_TASK, done, total_steps)
            if config.steps:  # the last step's update has not been scored yet
                t0 = time.perf_counter()
                with torch.no_grad():
                    d2 = (_flat_decode(generators, z) - flat).square().sum(-1)
                timings["generator_forward"] += time.perf_counter() - t0
                better = d2 < best_d2
                best_d2 = torch.where(better, d2, best_d2)
                best_z = torch.where(better[..., None], z.detach(), best_z)
            distances.append(best_d2.sqrt().T)
            latents.append(best_z.detach().transpose(0, 1))
            starts.append(start_d2.sqrt().T)
    result = SearchResult(torch.cat(distances), torch.cat(latents), torch.cat(starts), 0.0,
                          timings["generator_forward"] + timings["generator_backward"], timings)
    if config.refine_restarts:
        result = refine_contested(generators, flat_all.view(-1, *IMAGE_SHAPE), result, config, progress=progress)
    result.seconds = time.perf_counter() - start_clock
    return result


def contested_images(distances: torch.Tensor, ratio: float) -> torch.Tensor:
    """``(N,)`` mask: the images whose two closest classes lie within a factor ``ratio`` of each other.

    Examples
    --------
    >>> contested_images(torch.tensor([[1.0, 1.05, 3.0], [1.0, 2.0, 3.0]]), 1.1).tolist()
    [True, False]
    """
    if distances.shape[1] < 2:  # one class: nothing to confuse it with
        return torch.zeros(len(distances), dtype=torch.bool, device=distances.device)
    closest = distances.topk(2, dim=1, largest=False).values
    return closest[:, 1] < ratio * closest[:, 0]


def refine_contested(generators, x: torch.Tensor, result: SearchResult, config: SearchConfig, *,
                     progress: ProgressFn | None = None) -> SearchResult:
    """Search the contested images of ``result`` again, keeping each (image, class)'s best distance.

    An image is contested (:func:`contested_images`) when its two closest
    classes lie within a factor ``config.refine_ratio`` of each other: that
    is where a search's errors are. Each is searched ``config.refine_restarts`` more times with
    :meth:`SearchConfig.refinement` (other prior draws each time), for every
    class alike. :func:`latent_search` calls this when ``refine_restarts`` > 0.

    Parameters
    ----------
    generators, x
        As for :func:`latent_search`; ``x`` are the images ``result`` answers.
    result : SearchResult
        The first search's answer (not changed).
    config : SearchConfig

    Returns
    -------
    SearchResult
        Distances and latents improved where a refinement came closer;
        ``timings["refined_images"]`` counts the contested images, and the
        generator time includes the refinements'.
    """
    if len(x) != len(result):
        raise InvalidInputError(f"{len(x)} images for a search result of {len(result)}")
    distances, latents, timings = result.distances.clone(), result.latents.clone(), dict(result.timings)
    index = contested_images(distances, config.refine_ratio).nonzero().flatten()
    timings["refined_images"] = int(len(index))
    generator_seconds = result.generator_seconds
    for restart in range(config.refine_restarts if len(index) else 0):
        task = f"{SEARCH_TASK}: refinement {restart + 1} of {config.refine_restarts} ({len(index)} contested images)"
        again = latent_search(generators, x[index.to(x.device)], config.refinement(restart),
                              progress=None if progress is None else _renamed(progress, task))
        better = again.distances < distances[index]
        distances[index] = torch.where(better, again.distances, distances[index])
        latents[index] = torch.where(better[..., None], again.latents, latents[index])
        generator_seconds += again.generator_seconds
        for key in ("generator_forward", "generator_backward", "monte_carlo"):
            timings[key] = timings.get(key, 0.0) + again.timings[key]
    return SearchResult(distances, latents, result.start_distances, result.seconds, generator_seconds, timings)


def _renamed(progress: ProgressFn, task: str) -> ProgressFn:
    """``progress`` with every report filed under ``task`` (a refinement's own bar)."""
    return lambda _task, done, total: progress(task, done, total)


def prior_ball_radius(mass: float, dim: int) -> float:
    """Radius of the ball around 0 that holds ``mass`` of the ``N(0, I_dim)`` distribution.

    ``||z||^2`` is chi-squared with ``dim`` degrees of freedom, so the radius is
    the square root of its ``mass`` quantile, found by bisection on the
    regularised incomplete gamma function ``P(dim / 2, r^2 / 2)``.

    Examples
    --------
    >>> round(prior_ball_radius(0.9, 10), 3), round(prior_ball_radius(0.9, 15), 3)
    (3.998, 4.723)
    >>> round(prior_ball_radius(0.6827, 1), 3)  # one standard deviation
    1.0
    """
    if not (0 < mass < 1) or not is_positive_int(dim):
        raise InvalidInputError(f"prior ball needs 0 < mass < 1 and a positive dimension, got {mass!r}, {dim!r}")
    half = torch.tensor(dim / 2, dtype=torch.float64)
    low, high = 0.0, 2.0 * dim + 100.0  # chi-squared quantiles, far above any mass < 1 - 1e-12 at these dims
    for _ in range(200):
        middle = (low + high) / 2
        if float(torch.special.gammainc(half, torch.tensor(middle / 2, dtype=torch.float64))) < mass:
            low = middle
        else:
            high = middle
    return ((low + high) / 2) ** 0.5


def _project(z: torch.Tensor, radius: float | None) -> torch.Tensor:
    """``z (..., D)`` scaled onto the ball ``||z|| <= radius`` where outside it (``None``: unchanged)."""
    if radius is None:
        return z
    norms = z.norm(dim=-1, keepdim=True)
    return z * (radius / norms.clamp_min(1e-12)).clamp(max=1.0)


def _check_finite(values: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(values).all()):
        raise ModelOutputError(f"a class generator returned NaN or infinite {what}; its weights are broken")


class SynthesisClassifier(Classifier):
    """A :class:`~ppl_audit.classifiers.base.Classifier` that labels by synthesis.

    Parameters
    ----------
    generators
        Per-class generators (one per class name, in class order).
    class_names : sequence of str
        Default ``"0"`` .. ``"9"``.
    config : SearchConfig
        The latent search.
    pixel_noise : float
        ``probs`` are the class posterior under a uniform class prior and the
        model ``x = G_c(z*) + N(0, sigma^2 I)`` at each class's closest
        latent: ``softmax_c(-d_c^2 / (2 sigma^2))``. The selective
        classifier uses the confidence ``-min_c d_c`` instead, which does not
        depend on ``sigma``.

    Raises
    ------
    InvalidInputError
        The number of generators differs from the number of classes (a class
        without a generator), or ``pixel_noise <= 0``.
    """

    differentiable = False

    def __init__(self, generators, class_names=tuple(str(k) for k in range(10)),
                 config: SearchConfig = SearchConfig(), *, pixel_noise: float = DEFAULT_PIXEL_NOISE,
                 progress: ProgressFn | None = None):
        _check_generators(generators)
        self.class_names = tuple(class_names)
        if generators.num_members != len(self.class_names):
            raise InvalidInputError(
                f"there are {len(self.class_names)} classes but {generators.num_members} generators: every class "
                "needs exactly one generator (a class without one could never be predicted)")
        if not (isinstance(pixel_noise, (int, float)) and pixel_noise > 0):
            raise InvalidInputError(f"pixel_noise must be a number > 0, got {pixel_noise!r}")
        self.generators = generators
        self.config = config
        self.pixel_noise = float(pixel_noise)
        self.progress = progress

    def search(self, x: torch.Tensor) -> SearchResult:
        """:func:`latent_search` of ``x`` against every class (results on the caller's device)."""
        result = latent_search(self.generators, x, self.config, progress=self.progress)
        device = x.device
        return SearchResult(result.distances.to(device), result.latents.to(device),
                            result.start_distances.to(device), result.seconds, result.generator_seconds,
                            result.timings)

    def probs_from(self, result: SearchResult) -> torch.Tensor:
        """Class probabilities ``(N, C)`` from a search result (see ``pixel_noise``)."""
        return torch.softmax(-result.distances.square() / (2 * self.pixel_noise ** 2), dim=1)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(N, C)``: runs the latent search."""
        return self.probs_from(self.search(x))

    @torch.no_grad()
    def generations(self, result: SearchResult) -> torch.Tensor:
        """Each image's closest generation per class, ``(N, C, 1, 28, 28)`` (one batched decode)."""
        device = next(self.generators.parameters()).device
        z = result.latents.to(device).transpose(0, 1)  # (C, N, D)
        return self.generators.decode(z).transpose(0, 1).to(result.latents.device)


__all__ = [
    "SearchConfig",
    "SearchResult",
    "SynthesisClassifier",
    "contested_images",
    "latent_search",
    "refine_contested",
]
