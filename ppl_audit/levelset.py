"""The relaxed prediction likelihoods that tie a prior to a classifier.

The Dirichlet relaxation of Booth et al. (2020), Eq. 3-4, and the Gaussian
observation ``target ~ Normal(f(x), sigma)`` of the paper's successor code,
chosen by name (``relaxation="dirichlet"|"gaussian"``):

::

    z ~ p(z)                      latent of a generative prior
    x = g(z)                      decoder / renderer
    p ~ Dirichlet(alpha * f(x))   classifier f relaxed into a likelihood
    observe p = target            sample p(z | p = target)

:class:`LevelSet` gives the Pyro model and a batched ``log_density(z)`` over
many particles at once (the same maths written directly, and tested equal to
the Pyro trace's log-probability).
"""

from __future__ import annotations

import math
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch

from ppl_audit.classifiers.base import Classifier, as_classifier, check_probabilities
from ppl_audit.errors import InvalidInputError
from ppl_audit.priors.base import LATENT_SITE, PARTICLE_PLATE, Prior
from ppl_audit.validators import check_real, is_positive_int

PREDICTION_SITE = "prediction"  # the observed Dirichlet site
TARGET_SUM_TOLERANCE = 1e-6  # |sum(target) - 1| accepted; the tolerance
# A saturated softmax gives f_k(x) = 0 (float32 underflow) and Dirichlet
# concentration 0, where the density is undefined; clamping f to this floor
# (then renormalising) keeps log-densities finite and changes nothing above it.
PROBABILITY_FLOOR = 1e-6
DEFAULT_CHUNK_SIZE = 256  # particles per decode + classify pass (bounded memory)
RELAXATIONS = ("dirichlet", "gaussian")
DEFAULT_GAUSSIAN_SIGMA = 0.05  # a level set about 0.05 wide in each class probability
# The likelihood is float32. Its lgamma terms grow like alpha log alpha: at 1e5 the log-density is within
# 0.03 nats of float64's (0.8 nats at 1e6, 7,500 at 1e10); at 1e-6, alpha * PROBABILITY_FLOOR = 1e-12 stays
# far above float32's smallest normal (1.2e-38), where lgamma(0) = inf would make it NaN.
MIN_CONCENTRATION, MAX_CONCENTRATION = 1e-6, 1e5
# As tight as the Dirichlet bound (its sd sqrt(p(1-p)/alpha) is 1.6e-3 at 1e5), so (f - t)^2 / sigma^2 stays
# below 1e6 in float32; at 100 the likelihood is flat to 5e-5 nats over the whole simplex.
MIN_SIGMA, MAX_SIGMA = 1e-3, 100.0


def validate_target(target, num_classes: int | None = None, *, allow_boundary: bool = False) -> torch.Tensor:
    """Check that ``target`` is a point strictly inside the probability simplex.

    Parameters
    ----------
    target : sequence of float or torch.Tensor
        Target prediction ``(K,)``.
    num_classes : int, optional
        The classifier's ``K``.

    Returns
    -------
    torch.Tensor
        The target as float32 ``(K,)``.

    Raises
    ------
    InvalidInputError
        On a wrong length, a negative entry, a sum off 1 by more than 1e-6, or
        an exact 0 or 1 entry: the Dirichlet density is 0 or infinite on the
        simplex boundary, so use e.g. 0.001 / 0.999 instead.

    Examples
    --------
    >>> validate_target([0.25, 0.75], 2)
    tensor([0.2500, 0.7500])
    """
    try:
        t = torch.as_tensor(target, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidInputError(f"target must be a list of numbers, got {target!r}") from exc
    if num_classes is not None and t.numel() != num_classes:
        raise InvalidInputError(f"target has {t.numel()} entries but the classifier has {num_classes} classes")
    if t.numel() < 2:
        raise InvalidInputError(f"target needs at least 2 entries, got {t.numel()}")
    if not torch.isfinite(t).all():
        raise InvalidInputError(f"target has non-finite entries: {_shown(t)}")
    if (t < 0).any():
        raise InvalidInputError(f"target has negative entries: {_shown(t)}")
    if abs(float(t.sum()) - 1.0) > TARGET_SUM_TOLERANCE:
        raise InvalidInputError(
            f"target must sum to 1 (tolerance {TARGET_SUM_TOLERANCE:g}), sums to {float(t.sum()):.8g}"
        )
    t32 = t.to(torch.float32)  # the likelihood's precision: 1e-50 and 0.9999999999999 become 0 and 1 there
    if not allow_boundary and ((t32 == 0) | (t32 == 1)).any():
        raise InvalidInputError(
            f"target {_shown(t)} lies on the simplex boundary in float32, the likelihood's precision (an entry "
            "is exactly 0 or 1 there), where the Dirichlet density is 0 or infinite; give interior values such as "
            "0.001 / 0.999 (entries between 1.2e-38 and 1 - 6e-8)"
        )
    return t32


def _shown(t: torch.Tensor) -> str:
    """A target's entries for a one-line message: at most 10 of them."""
    values = t.tolist()
    return str(values) if len(values) <= 10 else str(values[:10])[:-1] + f", ... ({len(values)} entries)]"


def validate_concentration(concentration: float) -> float:
    """Return ``concentration`` as a float, raising unless it lies in ``[MIN_CONCENTRATION, MAX_CONCENTRATION]``.

    Examples
    --------
    >>> validate_concentration(10)
    10.0
    """
    return check_real(concentration, "concentration (alpha)", MIN_CONCENTRATION, MAX_CONCENTRATION,
                      why="where the float32 Dirichlet log-density stays finite and accurate")


def validate_sigma(sigma: float | None) -> float:
    """The Gaussian relaxation's scale (default :data:`DEFAULT_GAUSSIAN_SIGMA`), in ``[MIN_SIGMA, MAX_SIGMA]``.

    Examples
    --------
    >>> validate_sigma(None)
    0.05
    """
    if sigma is None:
        return DEFAULT_GAUSSIAN_SIGMA
    return check_real(sigma, "sigma", MIN_SIGMA, MAX_SIGMA,
                      why="where the float32 Gaussian log-density stays finite and not flat")


def dirichlet_log_likelihood(probs: torch.Tensor, target: torch.Tensor, concentration: float) -> torch.Tensor:
    """``log Dirichlet(target; alpha * f)`` for a batch of predictions ``f`` (Booth et al. Eq. 4).

    Parameters
    ----------
    probs : torch.Tensor, shape (N, K)
        Classifier predictions ``f(x)``; clamped at :data:`PROBABILITY_FLOOR`.
    target : torch.Tensor, shape (K,)
    concentration : float
        ``alpha``.

    Returns
    -------
    torch.Tensor, shape (N,)

    Examples
    --------
    >>> f = torch.tensor([[0.5, 0.5]])
    >>> t = torch.tensor([0.5, 0.5])
    >>> torch.allclose(dirichlet_log_likelihood(f, t, 10.0), dist.Dirichlet(10 * f).log_prob(t))
    True
    """
    f = probs.clamp(min=PROBABILITY_FLOOR)
    a = concentration * f / f.sum(-1, keepdim=True)
    log_t = target.to(a).log()
    return torch.lgamma(a.sum(-1)) - torch.lgamma(a).sum(-1) + ((a - 1) * log_t).sum(-1)


def dirichlet_log_likelihood_max(target: torch.Tensor, concentration: float) -> float:
    """The largest value of :func:`dirichlet_log_likelihood` over all predictions ``f``.

    The maximum is not at ``f = target`` (for ``target = (0.001, 0.999)`` at
    concentration 20 it lies at ``f ~ (0.013, 0.987)``, 1.7 nats higher). With
    ``a = alpha f``, the log density ``sum_k (a_k - 1) log t_k - sum_k lgamma(a_k)``
    is concave in ``a``; on ``sum_k a_k = alpha`` its maximum solves
    ``digamma(a_k) = log t_k - lam``, and ``sum_k a_k`` falls as ``lam`` grows,
    so a bisection over ``lam`` (inverting the digamma by Newton's method) finds it.

    Examples
    --------
    >>> t = torch.tensor([0.5, 0.5])
    >>> abs(dirichlet_log_likelihood_max(t, 1000.0) - float(dirichlet_log_likelihood(t[None], t, 1000.0))) < 1e-3
    True
    >>> t = torch.tensor([0.001, 0.999])
    >>> dirichlet_log_likelihood_max(t, 20.0) - float(dirichlet_log_likelihood(t[None], t, 20.0)) > 1.5
    True
    """
    log_t = target.detach().to("cpu", torch.float64).log()
    size = log_t.numel()
    # At the maximum every a_k <= alpha and the largest >= alpha / K, which brackets lam.
    lo = float(log_t.max()) - float(torch.special.digamma(torch.tensor(float(concentration), dtype=torch.float64)))
    hi = float(log_t.max()) - float(torch.special.digamma(torch.tensor(concentration / size, dtype=torch.float64)))
    for _ in range(100):
        lam = 0.5 * (lo + hi)
        if float(_inverse_digamma(log_t - lam).sum()) > concentration:
            lo = lam
        else:
            hi = lam
    a = _inverse_digamma(log_t - 0.5 * (lo + hi))
    best = dirichlet_log_likelihood((a / a.sum()).unsqueeze(0), log_t.exp(), concentration)
    at_target = dirichlet_log_likelihood(log_t.exp().unsqueeze(0), log_t.exp(), concentration)
    return float(torch.maximum(best, at_target))


def _inverse_digamma(y: torch.Tensor, iterations: int = 8) -> torch.Tensor:
    """``x`` with ``digamma(x) = y`` (Minka 2000, Appendix C: his start, then Newton's steps)."""
    euler = -float(torch.special.digamma(torch.tensor(1.0, dtype=torch.float64)))
    x = torch.where(y >= -2.22, y.exp() + 0.5, -1.0 / (y + euler))
    for _ in range(iterations):
        x = x - (torch.special.digamma(x) - y) / torch.special.polygamma(1, x)
    return x


def gaussian_log_likelihood(probs: torch.Tensor, target: torch.Tensor, sigma: float) -> torch.Tensor:
    """``sum_k log Normal(target_k; f_k, sigma)``: the successor code's relaxation.

    Examples
    --------
    >>> f = torch.tensor([[0.5, 0.5]])
    >>> float(gaussian_log_likelihood(f, torch.tensor([0.5, 0.5]), 1.0)) == float(2 * dist.Normal(0., 1.).log_prob(torch.tensor(0.)))
    True
    """
    return dist.Normal(probs, sigma).log_prob(target.to(probs)).sum(-1)


class LevelSet:
    """The level-set posterior ``p(z | prediction = target)``.

    Parameters
    ----------
    prior : Prior
    classifier : Classifier or callable
        A callable is wrapped with ``prior.class_names`` (or ``class_names``).
    target : sequence of float
        Target prediction, strictly inside the simplex.
    concentration : float
        Dirichlet concentration ``alpha`` (> 0); larger gives a tighter level set.
    relaxation : {"dirichlet", "gaussian"}
        The prediction likelihood.
    sigma : float, optional
        Standard deviation of the Gaussian relaxation (> 0; default 0.05).
    chunk_size : int
        Particles per decode + classify pass.
    class_names : sequence of str, optional
        Needed only to wrap a plain callable when the prior has no class names.

    Examples
    --------
    >>> from ppl_audit.priors import HouseRocketWorld
    >>> world = HouseRocketWorld()
    >>> clf = lambda x: torch.full((len(x), 2), 0.5)
    >>> ls = LevelSet(world, clf, [0.5, 0.5], concentration=10.0)
    >>> ls.log_density(world.sample(3)).shape
    torch.Size([3])
    """

    def __init__(
        self,
        prior: Prior,
        classifier,
        target,
        concentration: float = 10.0,
        *,
        relaxation: str = "dirichlet",
        sigma: float | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        class_names: Sequence[str] | None = None,
    ):
        names = class_names or getattr(prior, "class_names", None)
        self.prior = prior
        self.classifier: Classifier = as_classifier(classifier, names)
        if relaxation not in RELAXATIONS:
            raise InvalidInputError(f"unknown relaxation {relaxation!r}; available: {', '.join(RELAXATIONS)}")
        self.relaxation = relaxation
        self.target = validate_target(target, self.classifier.num_classes, allow_boundary=relaxation == "gaussian")
        self.concentration = validate_concentration(concentration)
        self.sigma = validate_sigma(sigma)
        if not is_positive_int(chunk_size):
            raise InvalidInputError(f"chunk_size must be positive, got {chunk_size}")
        self.chunk_size = int(chunk_size)
        #: number of classifier evaluations made so far (one per image)
        self.evaluations = 0

    def predict(self, z: torch.Tensor) -> torch.Tensor:
        """Classifier probabilities ``f(g(z))``, ``(N, K)``, chunked and checked."""
        out = []
        for chunk in z.split(self.chunk_size):
            p = self.classifier.probs(self.prior.decode(chunk))
            out.append(check_probabilities(p, chunk.shape[0], self.classifier.num_classes))
        self.evaluations += z.shape[0]
        return torch.cat(out) if out else z.new_zeros((0, self.classifier.num_classes))

    def log_likelihood(self, probs: torch.Tensor) -> torch.Tensor:
        """Log likelihood of the target under the relaxation, shape ``(N,)``."""
        if self.relaxation == "gaussian":
            return gaussian_log_likelihood(probs, self.target.to(probs.device), self.sigma)
        return dirichlet_log_likelihood(probs, self.target.to(probs.device), self.concentration)

    def log_likelihood_bound(self) -> float:
        """The largest log likelihood any prediction can have (what SMC's tempering guards with).

        Examples
        --------
        >>> ls = LevelSet(lambda: None, lambda x: x, [0.5, 0.5], 1000.0, class_names=("a", "b"))
        >>> round(ls.log_likelihood_bound(), 3)
        3.228
        """
        if self.relaxation == "gaussian":
            return -self.target.numel() * (math.log(self.sigma) + 0.5 * math.log(2 * math.pi))
        return dirichlet_log_likelihood_max(self.target, self.concentration)

    def log_density_and_probs(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unnormalised log posterior ``(N,)`` and the predictions ``(N, K)``.

        Latents outside the prior's support get ``-inf`` (their images are
        still classified, so the count of evaluations stays honest).
        """
        probs = self.predict(z)
        return self.prior.log_prob(z) + self.log_likelihood(probs), probs

    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """Unnormalised log posterior of a batch of latents ``(N, D)``, shape ``(N,)``."""
        return self.log_density_and_probs(z)[0]

    def model(self, num_particles: int | None = None) -> torch.Tensor:
        """The Pyro model; with ``num_particles`` the sites are plated over particles."""
        def body():
            z = pyro.sample(LATENT_SITE, self.prior.distribution())
            batch = z.reshape(-1, z.shape[-1])
            probs = self.classifier.probs(self.prior.decode(batch))
            if self.relaxation == "gaussian":
                likelihood = dist.Normal(probs.reshape(*z.shape[:-1], -1), self.sigma).to_event(1)
            else:
                probs = probs.clamp(min=PROBABILITY_FLOOR)
                probs = (probs / probs.sum(-1, keepdim=True)).reshape(*z.shape[:-1], -1)
                likelihood = dist.Dirichlet(self.concentration * probs)
            pyro.sample(PREDICTION_SITE, likelihood, obs=self.target.to(z.device))
            return z

        if num_particles is None:
            return body()
        with pyro.plate(PARTICLE_PLATE, num_particles):
            return body()


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_GAUSSIAN_SIGMA",
    "MAX_CONCENTRATION",
    "MAX_SIGMA",
    "MIN_CONCENTRATION",
    "MIN_SIGMA",
    "PREDICTION_SITE",
    "PROBABILITY_FLOOR",
    "RELAXATIONS",
    "TARGET_SUM_TOLERANCE",
    "LevelSet",
    "dirichlet_log_likelihood",
    "dirichlet_log_likelihood_max",
    "gaussian_log_likelihood",
    "validate_concentration",
    "validate_sigma",
    "validate_target",
]
