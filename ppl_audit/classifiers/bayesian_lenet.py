"""Bayesian LeNet-5: a Pyro model of the MNIST classifier with a mean-field Gaussian posterior.

Cosentino & Zhu's GWIN paper (Sec. 3.1) uses a Bayesian LeNet-5 whose
certainty decides which inputs to reject. Here:

* **The model** (:class:`BayesianLeNet5`) is a ``PyroModule``: the LeNet-5 of
  :mod:`ppl_audit.classifiers.lenet` with every weight and bias a
  ``PyroSample`` site under an independent ``Normal(0, prior_scale)`` prior
  (``prior_scale = 1`` by default, the prior of TensorFlow Probability's
  Flipout layers that the paper used), and ``y ~ Categorical(logits)`` inside
  a subsampling ``pyro.plate`` over the training set.
* **The guide** (:class:`MeanFieldGuide`) is a mean-field Gaussian: every
  site is ``Normal(loc, softplus(rho))``, independent of every other.
* **Training** maximises the ELBO by stochastic variational inference. The
  KL term is computed in closed form (Normal against Normal); the expected
  log-likelihood term is estimated with **Flipout** (Wen et al. 2018), as in
  the paper: one weight perturbation per mini-batch, decorrelated across the
  examples of the batch by random sign flips, so every example sees its own
  pseudo-independent weight draw at the cost of about two forward passes.
  Each example's marginal weight distribution is exactly the guide's, so the
  estimator has the same expectation as the plain one-draw estimator (Pyro's
  ``TraceMeanField_ELBO`` on the model and guide; tested equal in
  expectation) with lower variance; ``estimator = "weight-sample"`` trains
  with that Pyro ELBO instead, for comparison. Flipout rather than local
  reparameterisation because the network is mostly convolutional: local
  reparameterisation samples pre-activations from their exact Gaussian,
  which for a convolution needs a second convolution of ``x^2`` with
  ``sigma^2`` and gives no cross-example decorrelation benefit over
  Flipout's at the same cost; Flipout is also what the paper used.
* **Prediction** (:meth:`BayesianClassifier.predict`) draws ``S`` weight
  sets from the guide (the paper: ``S = 10``), batched over draws with
  ``torch.func.vmap``; the label is the class of highest mean probability and
  the certainty is the median over draws of that class's probability
  (Cosentino & Zhu, Sec. 3.1). An input is rejected when its certainty is
  below a threshold ``tau`` (:func:`reject`).

Examples
--------
>>> clf = BayesianClassifier(BayesianLeNet(conv_channels=(2, 4), hidden=(8, 8)))
>>> pred = clf.predict(torch.rand(3, 1, 28, 28), num_samples=5, generator=torch.Generator().manual_seed(0))
>>> pred.samples.shape, pred.labels.shape, pred.certainty.shape
(torch.Size([5, 3, 10]), torch.Size([3]), torch.Size([3]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule, PyroSample
from torch import nn

from ppl_audit._device import resolve_device
from ppl_audit.cards import ModelCard
from ppl_audit.classifiers.base import Classifier, check_images
from ppl_audit.classifiers.pooling import max_pool_2x2
from ppl_audit.classifiers.lenet import (
    IMAGE_SIDE,
    MNIST_CLASS_NAMES,
    MNIST_PIXEL_MEAN,
    MNIST_PIXEL_STD,
    check_layer_sizes,
)
from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.progress import ProgressFn, report
from ppl_audit.training import (
    CardConfig,
    DataConfig,
    Stopwatch,
    Trainer,
    TrainResult,
    check_field,
    load_training_data,
    minibatches,
    seeded,
)
from ppl_audit.validators import is_positive_float, is_positive_int

KIND = "bayesian-lenet-classifier"  # the [model] kind of Bayesian LeNet cards
DEFAULT_CARD = "mnist-bayesian-lenet5"
MODEL_NAME = "bayesian_lenet5"  # the PyroModule's name: every site is "bayesian_lenet5.LAYER.weight|bias"
DEFAULT_NUM_SAMPLES = 10  # Monte Carlo weight draws per prediction (the paper's S)
ESTIMATORS = ("flipout", "weight-sample")
IMAGE_SHAPE = (1, IMAGE_SIDE, IMAGE_SIDE)
TRAINING_TASK = "training Bayesian LeNet-5"  # progress task name
PREDICT_CHUNK = 500  # images per batched S-draw pass: S x 500 x 6 x 28 x 28 floats stay ~200 MB at S = 10
#: (layer name, kind, keyword arguments of the op): LeNet-5 as in ppl_audit.classifiers.lenet.LeNet5
LAYERS = (("conv1", "conv", {"padding": 2}), ("conv2", "conv", {}),
          ("fc1", "linear", {}), ("fc2", "linear", {}), ("fc3", "linear", {}))


def _network(x: torch.Tensor, layer: Callable[[str, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """LeNet-5's computation with each weighted layer supplied by ``layer(name, h)``.

    One definition shared by the Pyro model, the posterior draws and the
    Flipout estimator, so that they cannot drift apart.
    """
    h = (x - MNIST_PIXEL_MEAN) / MNIST_PIXEL_STD
    h = max_pool_2x2(F.relu(layer("conv1", h)))  # 28 -> 28 -> 14
    h = max_pool_2x2(F.relu(layer("conv2", h)))  # 14 -> 10 -> 5
    h = h.flatten(1)
    h = F.relu(layer("fc1", h))
    h = F.relu(layer("fc2", h))
    return layer("fc3", h)


def site_shapes(num_classes: int = 10, conv_channels=(6, 16), hidden=(120, 84)) -> dict[str, tuple[int, ...]]:
    """Shape of every weight and bias, keyed by layer-relative name (``"conv1.weight"``).

    Examples
    --------
    >>> site_shapes()["conv2.weight"]
    (16, 6, 5, 5)
    """
    c1, c2 = conv_channels
    h1, h2 = hidden
    layers = {"conv1": (c1, 1, 5, 5), "conv2": (c2, c1, 5, 5), "fc1": (h1, c2 * 5 * 5), "fc2": (h2, h1),
              "fc3": (num_classes, h2)}
    shapes = {}
    for name, shape in layers.items():
        shapes[f"{name}.weight"] = shape
        shapes[f"{name}.bias"] = (shape[0],)
    return shapes


class BayesianLeNet5(PyroModule):
    """The Pyro model: LeNet-5 with ``Normal(0, prior_scale)`` priors on every weight and bias.

    Parameters
    ----------
    num_classes : int
    conv_channels, hidden : (int, int)
        As :class:`~ppl_audit.classifiers.lenet.LeNet5`.
    prior_scale : float
        Standard deviation of the independent zero-mean Normal prior of every
        weight and bias.

    Examples
    --------
    >>> model = BayesianLeNet5(conv_channels=(2, 4), hidden=(8, 8))
    >>> trace = pyro.poutine.trace(model).get_trace(torch.rand(3, 1, 28, 28), torch.tensor([0, 1, 2]))
    >>> [name for name in trace.nodes if name.endswith("conv1.weight")]
    ['bayesian_lenet5.conv1.weight']
    """

    def __init__(self, num_classes: int = 10, conv_channels=(6, 16), hidden=(120, 84), prior_scale: float = 1.0):
        super().__init__(name=MODEL_NAME)
        if not is_positive_float(prior_scale):
            raise InvalidInputError(f"prior_scale must be a number > 0, got {prior_scale!r}")
        self.prior_scale = float(prior_scale)
        shapes = site_shapes(num_classes, conv_channels, hidden)
        for name, kind, _ in LAYERS:
            out_features, *rest = shapes[f"{name}.weight"]
            if kind == "conv":
                module = PyroModule[nn.Conv2d](rest[0], out_features, kernel_size=rest[1], **dict(LAYERS_KW[name]))
            else:
                module = PyroModule[nn.Linear](rest[0], out_features)
            setattr(self, name, module)
            for part in ("weight", "bias"):
                shape = shapes[f"{name}.{part}"]
                prior = dist.Normal(0.0, self.prior_scale).expand(shape).to_event(len(shape))
                setattr(module, part, PyroSample(prior))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, num_data: int | None = None) -> torch.Tensor:
        """Sample weights from the prior, return logits ``(N, K)``, observe ``y`` if given.

        ``num_data`` is the size of the data set the batch ``x`` was drawn
        from: the likelihood is scaled by ``num_data / N`` through a
        subsampled ``pyro.plate``, so that a mini-batch gives an unbiased
        estimate of the whole data set's log-likelihood.
        """
        logits = _network(x, lambda name, h: getattr(self, name)(h))
        n = x.shape[0]
        with pyro.plate("data", size=num_data or n, subsample=torch.arange(n, device=x.device)):
            pyro.sample("y", dist.Categorical(logits=logits), obs=y)
        return logits


LAYERS_KW = {name: kwargs for name, _, kwargs in LAYERS}
LAYER_KINDS = {name: kind for name, kind, _ in LAYERS}
INIT_SCALE = 1e-3  # guide standard deviation at the start: the network starts near a deterministic LeNet


def _inverse_softplus(y: float) -> float:
    return math.log(math.expm1(y))


class MeanFieldGuide(nn.Module):
    """Mean-field Gaussian guide ``q(w) = prod_i Normal(loc_i, softplus(rho_i))`` over every site.

    A plain ``nn.Module`` (its parameters live in the module, not in Pyro's
    global parameter store) whose ``forward`` is a Pyro guide for
    :class:`BayesianLeNet5`: it samples every weight site of the model.

    Parameters
    ----------
    shapes : dict
        ``{"conv1.weight": shape, ...}`` (:func:`site_shapes`).
    init_scale : float
        Initial standard deviation of every weight.

    Notes
    -----
    Locations start at PyTorch's default initialisation of the same layers
    (Kaiming-uniform), under the caller's torch seed.
    """

    def __init__(self, shapes: dict[str, tuple[int, ...]], init_scale: float = INIT_SCALE):
        super().__init__()
        self.shapes = dict(shapes)
        self.loc = nn.ParameterDict()
        self.rho = nn.ParameterDict()
        for name, _, _ in LAYERS:
            w_shape = shapes[f"{name}.weight"]
            if LAYER_KINDS[name] == "conv":
                ref = nn.Conv2d(w_shape[1], w_shape[0], kernel_size=w_shape[2])
            else:
                ref = nn.Linear(w_shape[1], w_shape[0])
            for part in ("weight", "bias"):
                key = _key(f"{name}.{part}")
                self.loc[key] = nn.Parameter(getattr(ref, part).detach().clone())
                self.rho[key] = nn.Parameter(torch.full(shapes[f"{name}.{part}"], _inverse_softplus(init_scale)))

    def scale(self, name: str) -> torch.Tensor:
        """Posterior standard deviation of site ``name`` (``"conv1.weight"``)."""
        return F.softplus(self.rho[_key(name)])

    def mean(self, name: str) -> torch.Tensor:
        """Posterior mean of site ``name``."""
        return self.loc[_key(name)]

    def forward(self, *args, **kwargs) -> None:
        """The Pyro guide: sample every model site from its Normal (arguments are the model's, unused)."""
        for name in self.shapes:
            pyro.sample(f"{MODEL_NAME}.{name}", dist.Normal(self.mean(name), self.scale(name)).to_event(
                len(self.shapes[name])))

    def kl_to_prior(self, prior_scale: float) -> torch.Tensor:
        """``KL(q || p)`` in closed form, summed over every weight (nats).

        Examples
        --------
        >>> guide = MeanFieldGuide(site_shapes(conv_channels=(2, 4), hidden=(8, 8)))
        >>> bool(guide.kl_to_prior(1.0) > 0)
        True
        """
        total = 0.0
        log_p = math.log(prior_scale)
        for name in self.shapes:
            mu, sigma = self.mean(name), self.scale(name)
            # KL(N(mu, s^2) || N(0, p^2)) = log(p / s) + (s^2 + mu^2) / (2 p^2) - 1/2
            total = total + (log_p - sigma.log() + (sigma.square() + mu.square()) / (2 * prior_scale ** 2)
                             - 0.5).sum()
        return total

    def draw(self, num_samples: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``num_samples`` independent weight sets, each tensor with a leading ``(S,)`` axis."""
        draws = {}
        for name, shape in self.shapes.items():
            mu, sigma = self.mean(name), self.scale(name)
            eps = torch.randn((num_samples, *shape), generator=generator).to(mu.device)
            draws[name] = mu + sigma * eps
        return draws


def _key(site: str) -> str:
    return site.replace(".", "__")  # ParameterDict keys cannot contain dots


def _random_signs(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    return (torch.randint(0, 2, shape, generator=generator).to(device=device, dtype=torch.float32) * 2 - 1)


def _weights_layer(weights: dict[str, torch.Tensor]) -> Callable[[str, torch.Tensor], torch.Tensor]:
    def layer(name: str, h: torch.Tensor) -> torch.Tensor:
        w, b = weights[f"{name}.weight"], weights[f"{name}.bias"]
        if LAYER_KINDS[name] == "conv":
            return F.conv2d(h, w, b, **LAYERS_KW[name])
        return F.linear(h, w, b)

    return layer


def logits_with_weights(x: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """LeNet-5 logits ``(N, K)`` with the given weights (``{"conv1.weight": tensor, ...}``).

    Examples
    --------
    >>> guide = MeanFieldGuide(site_shapes())
    >>> means = {name: guide.mean(name) for name in guide.shapes}
    >>> logits_with_weights(torch.rand(2, 1, 28, 28), means).shape
    torch.Size([2, 10])
    """
    return _network(x, _weights_layer(weights))


def flipout_logits(x: torch.Tensor, guide: MeanFieldGuide, generator: torch.Generator | None = None) -> torch.Tensor:
    """Logits ``(N, K)`` under Flipout weight perturbations (Wen et al. 2018, Eq. 3 and 4).

    One Gaussian perturbation ``dW = sigma * eps`` is drawn per layer; example
    ``n`` sees ``W_n = mu + dW * (r_n s_n^T)`` with random signs ``s_n`` over
    input units (channels, for a convolution) and ``r_n`` over output units,
    computed as ``x W_mu + ((x * s) dW) * r`` without forming ``W_n``.
    Biases are drawn independently per example. Each example's weights are
    distributed exactly as the guide says (the sign-flipped ``eps`` is again
    standard normal); different examples are decorrelated.

    Examples
    --------
    >>> guide = MeanFieldGuide(site_shapes(conv_channels=(2, 4), hidden=(8, 8)))
    >>> flipout_logits(torch.rand(3, 1, 28, 28), guide, torch.Generator().manual_seed(0)).shape
    torch.Size([3, 10])
    """
    n, device = x.shape[0], x.device

    def layer(name: str, h: torch.Tensor) -> torch.Tensor:
        w_name, b_name = f"{name}.weight", f"{name}.bias"
        mu, sigma = guide.mean(w_name), guide.scale(w_name)
        delta = sigma * torch.randn(mu.shape, generator=generator).to(device)
        b_mu, b_sigma = guide.mean(b_name), guide.scale(b_name)
        bias = b_mu + b_sigma * torch.randn((n, *b_mu.shape), generator=generator).to(device)
        if LAYER_KINDS[name] == "conv":
            s = _random_signs((n, h.shape[1], 1, 1), generator, device)
            r = _random_signs((n, mu.shape[0], 1, 1), generator, device)
            kw = LAYERS_KW[name]
            return F.conv2d(h, mu, None, **kw) + F.conv2d(h * s, delta, None, **kw) * r + bias[:, :, None, None]
        s = _random_signs((n, h.shape[1]), generator, device)
        r = _random_signs((n, mu.shape[0]), generator, device)
        return F.linear(h, mu) + F.linear(h * s, delta) * r + bias

    return _network(x, layer)


class BayesianLeNet(nn.Module):
    """The Pyro model and its guide in one module; the state dict is the guide's (``guide.loc.*``, ``guide.rho.*``).

    Parameters
    ----------
    num_classes : int
    conv_channels, hidden : (int, int)
    prior_scale : float
    init_scale : float

    Examples
    --------
    >>> net = BayesianLeNet(conv_channels=(2, 4), hidden=(8, 8))
    >>> sorted({k.split(".")[1] for k in net.state_dict()})
    ['loc', 'rho']
    """

    def __init__(self, num_classes: int = 10, conv_channels=(6, 16), hidden=(120, 84), prior_scale: float = 1.0,
                 init_scale: float = INIT_SCALE):
        super().__init__()
        self.num_classes = int(num_classes)
        self.model = BayesianLeNet5(num_classes, conv_channels, hidden, prior_scale)
        self.guide = MeanFieldGuide(site_shapes(num_classes, conv_channels, hidden), init_scale)

    @property
    def prior_scale(self) -> float:
        """The prior standard deviation of every weight."""
        return self.model.prior_scale

    def negative_elbo(self, x: torch.Tensor, y: torch.Tensor, num_data: int, *, estimator: str = "flipout",
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """An unbiased estimate of ``-ELBO`` of a data set of ``num_data`` images from the batch ``(x, y)`` (nats).

        ``-ELBO = KL(q || p) - sum_n E_q[log p(y_n | x_n, w)]``: the KL in
        closed form, the expected log-likelihood scaled from the batch.

        Parameters
        ----------
        x, y : torch.Tensor
            A mini-batch of images and labels.
        num_data : int
            Size of the training set the batch was drawn from.
        estimator : {"flipout", "weight-sample"}
            ``"flipout"``: :func:`flipout_logits`; ``"weight-sample"``: Pyro's
            ``TraceMeanField_ELBO`` on the model and guide (one weight draw
            shared by the batch; analytic KL).
        generator : torch.Generator, optional
            Randomness of the Flipout estimator (Pyro's estimator uses torch's
            global generator).
        """
        if estimator == "flipout":
            nll = F.cross_entropy(flipout_logits(x, self.guide, generator), y, reduction="sum")
            return self.guide.kl_to_prior(self.prior_scale) + nll * (num_data / x.shape[0])
        if estimator == "weight-sample":
            return pyro.infer.TraceMeanField_ELBO().differentiable_loss(self.model, self.guide, x, y, num_data)
        raise InvalidInputError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")

    def posterior_mean_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits with every weight at its posterior mean (a cheap point summary, not the predictive)."""
        return logits_with_weights(x, {name: self.guide.mean(name) for name in self.guide.shapes})


@dataclass(frozen=True)
class Prediction:
    """Monte Carlo prediction of a Bayesian classifier (Cosentino & Zhu, Sec. 3.1).

    Attributes
    ----------
    samples : torch.Tensor
        ``(S, N, K)`` class probabilities under ``S`` posterior weight draws.
    mean_probs : torch.Tensor
        ``(N, K)``: the mean over draws (the posterior predictive).
    labels : torch.Tensor
        ``(N,)``: the class of highest mean probability.
    certainty : torch.Tensor
        ``(N,)``: the median over draws of the probability of ``labels``.
    """

    samples: torch.Tensor
    mean_probs: torch.Tensor
    labels: torch.Tensor
    certainty: torch.Tensor

    def rejected(self, tau: float) -> torch.Tensor:
        """Boolean ``(N,)``: certainty below ``tau`` (:func:`reject`)."""
        return reject(self.certainty, tau)


def median_probability(samples: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Median over draws of each input's probability of ``labels``: ``(S, N, K), (N,) -> (N,)``.

    With an even ``S`` the median is the mean of the two middle values.

    Examples
    --------
    >>> s = torch.tensor([[[0.9, 0.1]], [[0.6, 0.4]], [[0.7, 0.3]], [[0.2, 0.8]]])
    >>> round(float(median_probability(s, torch.tensor([0]))), 4)
    0.65
    """
    if samples.ndim != 3 or labels.shape != samples.shape[1:2]:
        raise InvalidInputError(f"samples must be (S, N, K) and labels (N,), got {tuple(samples.shape)} and "
                                f"{tuple(labels.shape)}")
    chosen = samples.gather(2, labels.view(1, -1, 1).expand(samples.shape[0], -1, 1)).squeeze(2)  # (S, N)
    return chosen.quantile(0.5, dim=0)


def check_threshold(tau: float, name: str = "tau") -> float:
    """Return ``tau`` as a float if it lies in ``[0, 1]``, else raise :class:`InvalidInputError`.

    Examples
    --------
    >>> check_threshold(1.5)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: tau must be a number in [0, 1], got 1.5
    """
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0 <= tau <= 1 or math.isnan(tau):
        raise InvalidInputError(f"{name} must be a number in [0, 1], got {tau!r}")
    return float(tau)


def reject(certainty: torch.Tensor, tau: float) -> torch.Tensor:
    """The reject rule: ``certainty < tau`` (the paper rejects below the threshold).

    Examples
    --------
    >>> reject(torch.tensor([0.3, 0.5, 0.9]), 0.5).tolist()
    [True, False, False]
    """
    return certainty < check_threshold(tau)


def check_num_samples(num_samples) -> int:
    """Return ``num_samples`` if it is a positive integer, else raise :class:`InvalidInputError`."""
    if not is_positive_int(num_samples):
        raise InvalidInputError(f"num_samples (S) must be a positive integer, got {num_samples!r}")
    return num_samples


class BayesianClassifier(Classifier):
    """A trained :class:`BayesianLeNet` behind the Classifier contract, with Monte Carlo prediction.

    Parameters
    ----------
    net : BayesianLeNet
    class_names : sequence of str
        Default ``"0"`` .. ``"9"``.
    num_samples : int
        ``S`` used by :meth:`probs` (the paper's 10).
    seed : int
        Seeds the weight draws of :meth:`probs`, so that it is a deterministic
        function of its input.

    Examples
    --------
    >>> clf = BayesianClassifier(BayesianLeNet(conv_channels=(2, 4), hidden=(8, 8)), num_samples=4)
    >>> clf.probs(torch.rand(2, 1, 28, 28)).sum(dim=1).allclose(torch.ones(2))
    True
    """

    differentiable = True

    def __init__(self, net: BayesianLeNet, class_names=MNIST_CLASS_NAMES, *, num_samples: int = DEFAULT_NUM_SAMPLES,
                 seed: int = 0):
        self.net = net.eval().requires_grad_(False)
        self.class_names = tuple(class_names)
        if len(self.class_names) != net.num_classes:
            raise InvalidInputError(f"{len(self.class_names)} class names for a {net.num_classes}-class network")
        self.num_samples = check_num_samples(num_samples)
        self.seed = int(seed)

    @property
    def device(self) -> torch.device:
        """Where the guide's parameters live."""
        return next(self.net.parameters()).device

    def predictive(self, x: torch.Tensor, num_samples: int = DEFAULT_NUM_SAMPLES, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """Class probabilities ``(S, N, K)`` under ``S`` independent posterior weight draws.

        The same ``S`` weight sets are used for every image (draw ``s`` is one
        network); the ``S`` networks run batched with ``torch.func.vmap``.

        Raises
        ------
        InvalidInputError
            Images not ``(N, 1, 28, 28)`` floats in ``[0, 1]``, or ``S <= 0``.
        ModelOutputError
            The network produced NaN or inf.
        """
        check_images(x, IMAGE_SHAPE)
        check_num_samples(num_samples)
        x = x.to(self.device)
        with torch.no_grad():
            weights = self.net.guide.draw(num_samples, generator)
            batched = torch.func.vmap(logits_with_weights, in_dims=(None, 0))
            out = torch.cat([batched(chunk, weights).softmax(-1) for chunk in x.split(PREDICT_CHUNK)], dim=1) \
                if len(x) else x.new_zeros((num_samples, 0, self.num_classes))
        if not torch.isfinite(out).all():
            raise ModelOutputError("the Bayesian LeNet returned NaN or inf probabilities")
        return out

    def predict(self, x: torch.Tensor, num_samples: int = DEFAULT_NUM_SAMPLES, *,
                generator: torch.Generator | None = None) -> Prediction:
        """Label and certainty from ``S`` posterior draws (Cosentino & Zhu, Sec. 3.1).

        Examples
        --------
        >>> clf = BayesianClassifier(BayesianLeNet(conv_channels=(2, 4), hidden=(8, 8)))
        >>> pred = clf.predict(torch.rand(4, 1, 28, 28), 3, generator=torch.Generator().manual_seed(0))
        >>> bool(((pred.certainty >= 0) & (pred.certainty <= 1)).all())
        True
        """
        samples = self.predictive(x, num_samples, generator=generator)
        mean = samples.mean(0)
        labels = mean.argmax(-1)
        return Prediction(samples, mean, labels, median_probability(samples, labels))

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior predictive ``(N, K)`` from ``self.num_samples`` draws seeded by ``self.seed``."""
        return self.predictive(x, self.num_samples, generator=torch.Generator().manual_seed(self.seed)).mean(0)

    def sample_logits(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits ``(N, K)`` of one posterior weight draw, differentiable with respect to ``x``.

        The guide's parameters are frozen (GWIN trains a generator against a
        fixed classifier).
        """
        weights = {k: v[0] for k, v in self.net.guide.draw(1, generator).items()}
        return logits_with_weights(x, weights)


# --------------------------------------------------------------------------- card, training, loading


@dataclass(frozen=True)
class BayesianLeNetConfig(CardConfig):
    """The ``[architecture]`` and ``[training]`` keys of a Bayesian LeNet card.

    Parameters
    ----------
    type : str
        Must be ``"bayesian-lenet5"``.
    conv_channels, hidden : (int, int)
    prior_scale : float
        Standard deviation of the Normal prior of every weight.
    init_scale : float
        Initial posterior standard deviation of every weight.
    estimator : {"flipout", "weight-sample"}
        Gradient estimator of the expected log-likelihood.
    epochs, batch_size : int
    learning_rate : float
        Adam's (constant) learning rate.
    eval_samples : int
        ``S`` for the test accuracy recorded after training.
    seed : int

    Examples
    --------
    >>> BayesianLeNetConfig(estimator="reinforce")
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: estimator must be one of ('flipout', 'weight-sample'), got 'reinforce'
    """

    type: str = "bayesian-lenet5"
    conv_channels: tuple[int, int] = (6, 16)
    hidden: tuple[int, int] = (120, 84)
    prior_scale: float = 1.0
    init_scale: float = INIT_SCALE
    estimator: str = "flipout"
    epochs: int = 30
    batch_size: int = 128
    learning_rate: float = 1e-3
    eval_samples: int = DEFAULT_NUM_SAMPLES
    seed: int = 0

    TYPE = 'bayesian-lenet5'
    POSITIVE_INTEGERS = ('epochs', 'batch_size', 'eval_samples')

    def __post_init__(self):
        super().__post_init__()
        check_layer_sizes(self)
        for name in ("prior_scale", "init_scale"):
            check_field(is_positive_float(getattr(self, name)), name, getattr(self, name), "a number > 0")
        check_field(self.estimator in ESTIMATORS, "estimator", self.estimator, f"one of {ESTIMATORS}")


def _net(config: BayesianLeNetConfig) -> BayesianLeNet:
    return BayesianLeNet(len(MNIST_CLASS_NAMES), config.conv_channels, config.hidden, config.prior_scale,
                         config.init_scale)


def build_bayesian_lenet(card: ModelCard) -> BayesianLeNet:
    """The untrained model and guide a card describes (validates the card).

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> build_bayesian_lenet(load_card("mnist-bayesian-lenet5")).prior_scale
    1.0
    """
    config = BayesianLeNetConfig.from_card(card)
    DataConfig.from_card(card)
    return _net(config)


def evaluate_bayesian(net: BayesianLeNet, images: torch.Tensor, labels: torch.Tensor, num_samples: int,
                      seed: int) -> dict[str, float]:
    """Accuracy of the S-draw prediction and the mean predictive NLL (nats) on a labelled set.

    Examples
    --------
    >>> out = evaluate_bayesian(BayesianLeNet(conv_channels=(2, 4), hidden=(8, 8)), torch.rand(4, 1, 28, 28),
    ...                         torch.zeros(4, dtype=torch.long), 2, 0)
    >>> sorted(out)
    ['accuracy', 'nll_nats']
    """
    was_training = net.training
    clf = BayesianClassifier(net, num_samples=num_samples)
    pred = clf.predict(images, num_samples, generator=torch.Generator().manual_seed(seed))
    labels = labels.to(pred.labels.device)
    accuracy = float((pred.labels == labels).float().mean())
    nll = float(-pred.mean_probs.gather(1, labels[:, None]).clamp_min(1e-12).log().mean())
    net.train(was_training).requires_grad_(True)
    return {"accuracy": accuracy, "nll_nats": nll}


def train_bayesian_lenet(card: ModelCard, *, data_dir=None, device="auto",
                         progress: ProgressFn | None = None) -> TrainResult:
    """Fit the mean-field guide by SVI: Adam on the ELBO estimated by the card's estimator.

    Returns
    -------
    TrainResult
        ``metrics``: ``test_accuracy`` (S-draw prediction), ``test_nll_nats``,
        ``final_elbo_per_image_nats``, ``kl_per_image_nats``, ``mean_posterior_std``,
        ``num_train``, ``num_test``, ``seconds``, ``seconds_per_epoch``; ``history``:
        the ELBO per image and its KL part per epoch, and test accuracy.

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> card = load_card("mnist-bayesian-lenet5").with_overrides(
    ...     data={"train_split": "test", "num_train": 20}, training={"epochs": 1})
    >>> train_bayesian_lenet(card, data_dir="tests/fixtures/data").metrics["num_train"]  # doctest: +SKIP
    20
    """
    config = BayesianLeNetConfig.from_card(card)
    data = DataConfig.from_card(card)
    device = resolve_device(device)
    watch = Stopwatch()
    train, test = load_training_data(data, data_dir, device)
    with seeded(config.seed):
        net = _net(config).to(device)
    pyro.set_rng_seed(config.seed)  # Pyro's own estimator ("weight-sample") draws from torch's global generator
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=config.learning_rate)
    n = len(train)
    total = config.epochs * math.ceil(n / config.batch_size)
    history = {"elbo": [], "kl": [], "test_accuracy": []}
    epoch_seconds = []
    step = 0
    net.train()
    for epoch in range(config.epochs):
        epoch_watch = Stopwatch()
        loss_sum = 0.0
        for idx in minibatches(n, config.batch_size, generator, device):
            loss = net.negative_elbo(train.images[idx], train.labels[idx], n, estimator=config.estimator,
                                     generator=generator)
            if not torch.isfinite(loss):
                raise ModelOutputError(f"the ELBO became {float(loss)} in epoch {epoch + 1}; lower learning_rate")
            optimiser.zero_grad(set_to_none=True)
            (loss / n).backward()
            optimiser.step()
            loss_sum += float(loss.detach()) * len(idx) / n
            step += 1
            report(progress, TRAINING_TASK, step, total)
        epoch_seconds.append(float(epoch_watch))
        with torch.no_grad():
            kl = float(net.guide.kl_to_prior(net.prior_scale))
        history["elbo"].append(-loss_sum / n)  # running mean over the epoch of the ELBO estimate, per image
        history["kl"].append(kl / n)
        history["test_accuracy"].append(evaluate_bayesian(net, test.images, test.labels, config.eval_samples,
                                                          config.seed)["accuracy"])
    net.eval()
    final = evaluate_bayesian(net, test.images, test.labels, config.eval_samples, config.seed)
    with torch.no_grad():
        stds = torch.cat([net.guide.scale(name).flatten() for name in net.guide.shapes])
    metrics = {
        "test_accuracy": final["accuracy"],
        "test_nll_nats": final["nll_nats"],
        "final_elbo_per_image_nats": history["elbo"][-1],
        "kl_per_image_nats": history["kl"][-1],
        "mean_posterior_std": float(stds.mean()),
        "num_train": n,
        "num_test": len(test),
        "seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
        "seconds": float(watch),
    }
    curves = {
        "unit": "epoch",
        "panels": {
            "ELBO per training image (nats)": {"ELBO (running mean over the epoch)": history["elbo"]},
            "KL(q || prior) per training image (nats)": {"KL": history["kl"]},
            f"test accuracy (S = {config.eval_samples} draws)": {"test": history["test_accuracy"]},
        },
    }
    return TrainResult(net.cpu().requires_grad_(True), metrics, curves)


def _classifier(trained) -> BayesianClassifier:
    """The loaded Bayesian LeNet-5 as a classifier of the ten digits, S = ``DEFAULT_NUM_SAMPLES``."""
    return BayesianClassifier(trained.module, MNIST_CLASS_NAMES, num_samples=DEFAULT_NUM_SAMPLES)


TRAINER = Trainer(
    kind=KIND,
    build=build_bayesian_lenet,
    train=train_bayesian_lenet,
    wrap=_classifier,
    headline=("test_accuracy", "test accuracy (S-draw prediction)"),
    description="Bayesian LeNet-5 (Pyro model, mean-field Gaussian guide, SVI with Flipout)",
)


__all__ = [
    "BayesianClassifier",
    "BayesianLeNet",
    "BayesianLeNet5",
    "BayesianLeNetConfig",
    "DEFAULT_CARD",
    "DEFAULT_NUM_SAMPLES",
    "KIND",
    "MeanFieldGuide",
    "Prediction",
    "TRAINER",
    "build_bayesian_lenet",
    "check_threshold",
    "flipout_logits",
    "logits_with_weights",
    "median_probability",
    "reject",
    "site_shapes",
    "train_bayesian_lenet",
]
