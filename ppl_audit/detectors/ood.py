"""OoD scores of generative ensembles (Choi & Jang, "Generative Ensembles for Robust Anomaly Detection").

Every detector here is built from a plain callable that maps a batch of
images ``(N, 1, 28, 28)`` to one row per ensemble member, ``(K, N)``:

=================================== ======================= ==========================================
detector                            callable                score (higher = more out-of-distribution)
=================================== ======================= ==========================================
:class:`WAICDetector`               ``log p_k(x)``          ``-WAIC(x)``, Eq. 1 over the ``K`` members
:class:`LogLikelihoodDetector`      ``log p_k(x)``          ``-log p_member(x)``
:class:`RateDetector`               ``KL(q_k(z|x)||p(z))``  ``+rate_member(x)``
:class:`CriticDetector`             WGAN critic ``D_k(x)``  ``-D_member(x)`` (critic: higher = more real)
:class:`CriticVarianceDetector`     ``D_k(x)``              ``Var_k D_k(x)``
=================================== ======================= ==========================================

The callables are the VAE ensemble's ``log_likelihood``/``rate`` and the GAN
ensemble's ``critic_scores``, or anything else with that shape; nothing here
imports them. Every callable is run under :func:`torch.no_grad`, its output is
checked for shape ``(K, N)`` and finiteness (a NaN is a model failure, never
dropped), and :func:`score_all` calls each distinct callable once when
several detectors share it.

Variances over members use ``ddof=1`` (:data:`WAIC_VARIANCE_DDOF`), the
unbiased sample variance of Gelman, Hwang & Vehtari (2014)'s ``p_WAIC2``.
ArviZ's ``p_waic`` (arviz 0.23, see
:func:`ppl_audit.diagnostics.ensemble_waic_loo`) uses ``ddof=0``; with
``K = 5`` members the variance term differs by a factor ``5/4``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch

from ppl_audit.validators import check_images
from ppl_audit.detectors.base import Detector, check_scores
from ppl_audit.errors import InvalidInputError, ModelOutputError

IMAGE_SHAPE = (1, 28, 28)  # the paper's MNIST / Fashion-MNIST inputs
WAIC_VARIANCE_DDOF = 1  # unbiased sample variance over members (Gelman, Hwang & Vehtari 2014, p_WAIC2)
MIN_MEMBERS_FOR_VARIANCE = 2  # a variance over members needs at least two of them

EnsembleFn = Callable[[torch.Tensor], torch.Tensor]


def _as_members_by_inputs(values, what: str) -> torch.Tensor:
    """``values`` as a floating ``(K, N)`` tensor, or :class:`InvalidInputError`."""
    values = torch.as_tensor(values)
    if values.ndim != 2:
        raise InvalidInputError(f"{what} must have shape (K, N), got {tuple(values.shape)}")
    return values if torch.is_floating_point(values) else values.double()


def waic_per_input(log_lik, *, ddof: int = WAIC_VARIANCE_DDOF) -> torch.Tensor:
    """WAIC of every input over ensemble members (Choi & Jang, Eq. 1).

    ``WAIC(x_n) = mean_k l_kn - var_k l_kn`` with ``l_kn = log p_k(x_n)``:
    high for inputs every member finds likely and agrees on, low for inputs
    that are unlikely or on which the members disagree.

    Parameters
    ----------
    log_lik : torch.Tensor or array-like, (K, N)
        Log-likelihood of each of ``K >= 2`` members at each of ``N`` inputs.
    ddof : int
        Delta degrees of freedom of the variance: 1 (default, unbiased) or 0
        (the population variance, as ArviZ's ``p_waic``).

    Returns
    -------
    torch.Tensor, (N,)
        Same dtype and device as ``log_lik`` (float64 for integer input).

    Raises
    ------
    InvalidInputError
        Not ``(K, N)``, or ``K <= ddof``.

    Examples
    --------
    >>> waic_per_input(torch.tensor([[-1.0, -4.0], [-2.0, -6.0], [-3.0, -8.0]]))
    tensor([ -3., -10.])
    """
    values = _as_members_by_inputs(log_lik, "log_lik")
    if ddof not in (0, 1):
        raise InvalidInputError(f"ddof must be 0 or 1, got {ddof!r}")
    if values.shape[0] < MIN_MEMBERS_FOR_VARIANCE:
        raise InvalidInputError(
            f"WAIC needs at least {MIN_MEMBERS_FOR_VARIANCE} members for a variance, got K={values.shape[0]}"
        )
    return values.mean(dim=0) - values.var(dim=0, correction=ddof)


def check_ensemble_output(values, num_inputs: int, what: str, min_members: int = 1) -> torch.Tensor:
    """Raise :class:`ModelOutputError` unless ``values`` is a finite ``(K, N)`` batch; return it as a tensor.

    Parameters
    ----------
    values : torch.Tensor or array-like
        What an ensemble callable returned.
    num_inputs : int
        ``N``, the number of images passed in.
    what : str
        The callable's role, for the message (``"log_likelihood_fn"``).
    min_members : int
        Smallest acceptable ``K``.

    Examples
    --------
    >>> check_ensemble_output(torch.tensor([[0.0, 1.0], [2.0, 3.0]]), 2, "rate_fn").shape
    torch.Size([2, 2])
    >>> check_ensemble_output(torch.tensor([[0.0, float("inf")]]), 2, "rate_fn")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ppl_audit.errors.ModelOutputError: rate_fn returned 1 NaN or inf value(s) of 2 (K=1 members x N=2 inputs; ...
    """
    try:
        values = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ModelOutputError(f"{what} returned {type(values).__name__}, expected a (K, N) tensor") from exc
    if values.ndim != 2 or values.shape[1] != num_inputs or values.shape[0] < min_members:
        raise ModelOutputError(
            f"{what} returned shape {tuple(values.shape)}, expected (K, {num_inputs}) with K >= {min_members} members"
        )
    if not torch.is_floating_point(values):
        values = values.double()
    bad = ~torch.isfinite(values)
    if bad.any():
        raise ModelOutputError(
            f"{what} returned {int(bad.sum())} NaN or inf value(s) of {values.numel()} "
            f"(K={values.shape[0]} members x N={num_inputs} inputs; {int(bad.any(dim=0).sum())} input(s) affected)"
        )
    return values.detach()


def _check_member(member: int) -> int:
    if isinstance(member, bool) or not isinstance(member, int) or member < 0:
        raise InvalidInputError(f"member must be a non-negative integer index, got {member!r}")
    return member


class EnsembleDetector(Detector):
    """A detector whose score is a function of one callable's ``(K, N)`` output.

    Subclasses set :attr:`output_role` and :attr:`min_members` and implement
    :meth:`score_from_output`; :meth:`score` checks the images, calls the
    callable once under :func:`torch.no_grad`, checks its output and the scores.

    Parameters
    ----------
    fn : callable
        ``fn(x) -> (K, N)``.
    image_shape : sequence of int
        ``(C, H, W)`` the images must have; the paper's ``(1, 28, 28)`` by default.
    """

    output_role: str = "fn"
    min_members: int = 1

    def __init__(self, fn: EnsembleFn, *, image_shape: Sequence[int] = IMAGE_SHAPE):
        if not callable(fn):
            raise InvalidInputError(f"{self.output_role} must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.image_shape = tuple(int(s) for s in image_shape)

    def ensemble_output(self, x: torch.Tensor) -> torch.Tensor:
        """The callable's checked output ``(K, N)`` for images ``x``."""
        check_images(x, self.image_shape)
        with torch.no_grad():
            out = self.fn(x)
        return check_ensemble_output(out, x.shape[0], self.output_role, self.min_members)

    def score_from_output(self, values: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """Scores ``(N,)`` from the callable's checked ``(K, N)`` output."""
        raise NotImplementedError

    def _score_checked(self, values: torch.Tensor, num_inputs: int) -> torch.Tensor:
        return check_scores(self.score_from_output(values), num_inputs, self.name)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``(N,)``: higher = more out-of-distribution."""
        return self._score_checked(self.ensemble_output(x), x.shape[0])


class _MemberDetector(EnsembleDetector):
    """Reads one member's row of the callable's output."""

    def __init__(self, fn: EnsembleFn, member: int = 0, *, image_shape: Sequence[int] = IMAGE_SHAPE):
        super().__init__(fn, image_shape=image_shape)
        self.member = _check_member(member)

    def _row(self, values: torch.Tensor) -> torch.Tensor:
        if self.member >= values.shape[0]:
            raise InvalidInputError(
                f"{self.name}: member={self.member} asked for but {self.output_role} returned "
                f"K={values.shape[0]} members"
            )
        return values[self.member]


class WAICDetector(EnsembleDetector):
    """``score(x) = -WAIC(x)`` over an ensemble's log-likelihoods (Choi & Jang, Eq. 1).

    WAIC is high where the members agree that ``x`` is likely, so its
    negation is high for out-of-distribution inputs. Variance over members
    with ``ddof=1`` by default (see :func:`waic_per_input`).

    Parameters
    ----------
    log_likelihood_fn : callable
        ``(N, 1, 28, 28) -> (K, N)``, ``log p_k(x_n)`` in nats, ``K >= 2``.
    ddof : int
        0 or 1, the variance convention.
    image_shape : sequence of int
        ``(C, H, W)`` of the images.

    Examples
    --------
    >>> fn = lambda x: torch.stack([-(x - c).pow(2).flatten(1).sum(1) for c in (0.4, 0.5, 0.6)])
    >>> det = WAICDetector(fn)
    >>> s = det.score(torch.cat([torch.full((1, 1, 28, 28), 0.5), torch.ones(1, 1, 28, 28)]))
    >>> bool(s[1] > s[0])
    True
    """

    name = "waic"
    score_meaning = "-WAIC(x) = Var_k log p_k(x) - E_k log p_k(x) over ensemble members (higher = more OoD)"
    output_role = "log_likelihood_fn"
    min_members = MIN_MEMBERS_FOR_VARIANCE

    def __init__(self, log_likelihood_fn: EnsembleFn, *, ddof: int = WAIC_VARIANCE_DDOF,
                 image_shape: Sequence[int] = IMAGE_SHAPE):
        super().__init__(log_likelihood_fn, image_shape=image_shape)
        if ddof not in (0, 1):
            raise InvalidInputError(f"ddof must be 0 or 1, got {ddof!r}")
        self.ddof = ddof

    def score_from_output(self, values: torch.Tensor) -> torch.Tensor:
        """``-waic_per_input(values)``."""
        return -waic_per_input(values, ddof=self.ddof)


class LogLikelihoodDetector(_MemberDetector):
    """``score(x) = -log p_member(x)``: a single generative model's negative log-likelihood.

    Parameters
    ----------
    log_likelihood_fn : callable
        ``(N, 1, 28, 28) -> (K, N)``, ``log p_k(x_n)`` in nats.
    member : int
        Which row (model) to read; the first by default.
    image_shape : sequence of int
        ``(C, H, W)`` of the images.

    Examples
    --------
    >>> det = LogLikelihoodDetector(lambda x: -(x - 0.5).pow(2).flatten(1).sum(1)[None])
    >>> det.score(torch.stack([torch.full((1, 28, 28), 0.5), torch.ones(1, 28, 28)])).tolist()
    [0.0, 196.0]
    """

    name = "log-likelihood"
    score_meaning = "-log p(x) of one generative model, nats (higher = less likely = more OoD)"
    output_role = "log_likelihood_fn"

    def __init__(self, log_likelihood_fn: EnsembleFn, member: int = 0, *,
                 image_shape: Sequence[int] = IMAGE_SHAPE):
        super().__init__(log_likelihood_fn, member, image_shape=image_shape)

    def score_from_output(self, values: torch.Tensor) -> torch.Tensor:
        """``-values[member]``."""
        return -self._row(values)


class RateDetector(_MemberDetector):
    """``score(x) = +rate(x) = KL(q(z|x) || p(z))`` of one VAE.

    A large rate means the encoder needs many nats to place ``x`` in latent
    space; Choi & Jang find it a strong OoD signal.

    Parameters
    ----------
    rate_fn : callable
        ``(N, 1, 28, 28) -> (K, N)``, the rate of each member in nats.
    member : int
        Which row (model) to read; the first by default.
    image_shape : sequence of int
        ``(C, H, W)`` of the images.

    Examples
    --------
    >>> det = RateDetector(lambda x: torch.stack([x.flatten(1).sum(1), x.flatten(1).sum(1) * 2]), member=1)
    >>> det.score(torch.ones(2, 1, 28, 28)).tolist()
    [1568.0, 1568.0]
    """

    name = "rate"
    score_meaning = "VAE rate KL(q(z|x) || p(z)), nats (higher = more OoD)"
    output_role = "rate_fn"

    def __init__(self, rate_fn: EnsembleFn, member: int = 0, *, image_shape: Sequence[int] = IMAGE_SHAPE):
        super().__init__(rate_fn, member, image_shape=image_shape)

    def score_from_output(self, values: torch.Tensor) -> torch.Tensor:
        """``values[member]``."""
        return self._row(values)


class CriticDetector(_MemberDetector):
    """``score(x) = -D(x)`` of one WGAN critic (the critic is higher for more real-looking inputs).

    Parameters
    ----------
    critic_fn : callable
        ``(N, 1, 28, 28) -> (K, N)``, each member's critic value.
    member : int
        Which row (model) to read; the first by default.
    image_shape : sequence of int
        ``(C, H, W)`` of the images.

    Examples
    --------
    >>> CriticDetector(lambda x: torch.tensor([[2.0, -1.0]])).score(torch.zeros(2, 1, 28, 28)).tolist()
    [-2.0, 1.0]
    """

    name = "critic"
    score_meaning = "-D(x) of a WGAN critic (higher = looks less real = more OoD)"
    output_role = "critic_fn"

    def __init__(self, critic_fn: EnsembleFn, member: int = 0, *, image_shape: Sequence[int] = IMAGE_SHAPE):
        super().__init__(critic_fn, member, image_shape=image_shape)

    def score_from_output(self, values: torch.Tensor) -> torch.Tensor:
        """``-values[member]``."""
        return -self._row(values)


class CriticVarianceDetector(EnsembleDetector):
    """``score(x) = Var_k D_k(x)``: disagreement of an ensemble of WGAN critics (``ddof=1``).

    Parameters
    ----------
    critic_fn : callable
        ``(N, 1, 28, 28) -> (K, N)``, each member's critic value, ``K >= 2``.
    image_shape : sequence of int
        ``(C, H, W)`` of the images.

    Examples
    --------
    >>> det = CriticVarianceDetector(lambda x: torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    >>> det.score(torch.zeros(2, 1, 28, 28)).tolist()
    [2.0, 0.0]
    """

    name = "critic-variance"
    score_meaning = "Var_k D_k(x) over an ensemble of WGAN critics, ddof=1 (higher = more disagreement = more OoD)"
    output_role = "critic_fn"
    min_members = MIN_MEMBERS_FOR_VARIANCE

    def __init__(self, critic_fn: EnsembleFn, *, image_shape: Sequence[int] = IMAGE_SHAPE):
        super().__init__(critic_fn, image_shape=image_shape)

    def score_from_output(self, values: torch.Tensor) -> torch.Tensor:
        """``values.var(dim=0, correction=1)``."""
        return values.var(dim=0, correction=WAIC_VARIANCE_DDOF)


def memo_key(fn) -> object:
    """``fn`` itself where hashable (two bound methods of one object compare equal), else its id."""
    try:
        hash(fn)
    except TypeError:
        return ("id", id(fn))  # the detector holds fn, so the id stays unique during score_all
    return fn


def score_all(x: torch.Tensor, detectors: Mapping[str, Detector], *,
              outputs: dict | None = None) -> dict[str, torch.Tensor]:
    """Score one batch with several detectors, calling each shared ensemble callable once.

    Detectors built on the same callable (say :class:`WAICDetector` and
    :class:`LogLikelihoodDetector` over one VAE ensemble's ``log_likelihood``
    method; equal bound methods count as the same) share one call per batch; the memo lives only for
    this call, so nothing stale can be reused. Other detectors are scored by
    their own :meth:`~Detector.score`.

    Parameters
    ----------
    x : torch.Tensor
        Images ``(N, C, H, W)`` in ``[0, 1]``.
    detectors : mapping of str to Detector
        Names (for the caller's tables) to detectors.
    outputs : dict, optional
        Receives each shared callable's checked ``(K, N)`` output, keyed by
        :func:`memo_key` of the callable, for callers that need the raw
        ensemble output as well as the scores (it is filled, not read).

    Returns
    -------
    dict of str to torch.Tensor
        The same names to scores ``(N,)``, higher = more out-of-distribution.

    Examples
    --------
    >>> calls = []
    >>> def log_lik(x):
    ...     calls.append(1)
    ...     return torch.stack([-(x - c).pow(2).flatten(1).sum(1) for c in (0.4, 0.6)])
    >>> dets = {"waic": WAICDetector(log_lik), "nll": LogLikelihoodDetector(log_lik)}
    >>> out = score_all(torch.rand(3, 1, 28, 28), dets)
    >>> sorted(out), len(calls)
    (['nll', 'waic'], 1)
    """
    outputs = {} if outputs is None else outputs
    outputs.clear()  # a memo for this call only: nothing stale can be reused
    scores: dict[str, torch.Tensor] = {}
    for key, detector in detectors.items():
        if not isinstance(detector, EnsembleDetector):
            scores[key] = detector.score(x)
            continue
        check_images(x, detector.image_shape)
        key_fn = memo_key(detector.fn)
        values = outputs.get(key_fn)
        if values is None:
            values = outputs[key_fn] = detector.ensemble_output(x)
        if values.shape[0] < detector.min_members:
            raise ModelOutputError(
                f"{detector.output_role} returned K={values.shape[0]} members; {detector.name!r} needs "
                f"at least {detector.min_members}"
            )
        scores[key] = detector._score_checked(values, x.shape[0])
    return scores


__all__ = [
    "IMAGE_SHAPE",
    "MIN_MEMBERS_FOR_VARIANCE",
    "WAIC_VARIANCE_DDOF",
    "CriticDetector",
    "CriticVarianceDetector",
    "EnsembleDetector",
    "EnsembleFn",
    "LogLikelihoodDetector",
    "RateDetector",
    "WAICDetector",
    "check_ensemble_output",
    "memo_key",
    "score_all",
    "waic_per_input",
]
