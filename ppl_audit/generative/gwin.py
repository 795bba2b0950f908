"""Generative Well-intentioned Networks (Cosentino & Zhu 2019): re-map rejected inputs for a fixed BNN.

A Bayesian classifier ``C`` (the BNN LeNet-5 of
:mod:`ppl_audit.classifiers.bayesian_lenet`) rejects an input whose
certainty is below ``tau``. A conditional generator ``G(x, z)`` maps such an
input toward the distribution of images that ``C`` labels correctly with
certainty ``>= tau*`` (the *confident set*), and ``C`` labels ``G(x, z)``
again. ``G`` is trained as a conditional WGAN-GP (Gulrajani et al. 2017) whose
critic ``D(x, y)`` sees the class label, plus a transformation loss that asks
``C`` to recognise the class of the transformed image:

* critic, over ``n_critic`` batches per generator step, with real confident
  images ``x_r`` of labels ``y`` and inputs ``x`` drawn from *all* training
  images of the same labels::

      L_D = E[D(G(x, z), y)] - E[D(x_r, y)] + lambda_GP E[(||grad D(x_hat, y)||_2 - 1)^2]

* generator, with ``(x, y)`` drawn from all training images::

      L_G = -E[D(G(x, z), y)] + lambda_Loss E[CE(C(G(x, z)), y)]

  where ``C(.)`` is the logits of one posterior weight draw of the BNN (its
  weights stay fixed; the gradient flows through the image only).

The GWIN is trained against one classifier, named in the card's
``[training] classifier``; :func:`pin` records that classifier's recipe hash in
the card so that the GWIN's cache entry changes when the classifier's recipe
does, and :func:`train_gwin` refuses a classifier whose recipe differs from
the pinned one.

Networks
--------
:class:`ConditionalGenerator`
    Conditioned on the whole input image by input concatenation: ``z`` is
    projected to a 28 x 28 map and stacked with ``x`` as a 2-channel input;
    a strided-convolution encoder (28 -> 14 -> 7) and a transposed-convolution
    decoder (7 -> 14 -> 28) with batch norm and ReLU; a skip path feeds ``x``
    itself into the last (3 x 3) convolution, initialised so that ``G``
    starts near the identity; sigmoid output in ``[0, 1]``.
:class:`LabelCritic`
    Two stride-2 convolutions with leaky ReLU and no normalisation (the
    gradient penalty is per sample), a hidden layer, the one-hot label
    concatenated at that hidden layer, one more hidden layer, then a scalar.

Examples
--------
>>> gwin = GWIN(noise_dim=4, channels=8, critic_channels=8)
>>> x = torch.rand(3, 1, 28, 28)
>>> out = gwin.transform(x, torch.Generator().manual_seed(0))
>>> out.shape, gwin.critic(out, torch.tensor([0, 1, 2])).shape
(torch.Size([3, 1, 28, 28]), torch.Size([3]))
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ppl_audit._device import resolve_device
from ppl_audit.cards import ModelCard, load_card
from ppl_audit.validators import check_images, is_fraction, is_positive_int
from ppl_audit.classifiers.lenet import check_augment_shift, random_shift
from ppl_audit.errors import AuditFileError, ModelOutputError
from ppl_audit.generative.common import IMAGE_SHAPE, NUM_PIXELS, SAMPLE_SEED
from ppl_audit.progress import ProgressFn, report
from ppl_audit.training import (
    CardConfig,
    EVAL_CHUNK,
    DataConfig,
    Stopwatch,
    Trainer,
    TrainedModel,
    TrainResult,
    check_adversarial_fields,
    check_field,
    load_model,
    load_training_data,
    seeded,
)

KIND = "gwin"  # the [model] kind of GWIN cards
CLASSIFIER_KIND = "bayesian-lenet-classifier"  # the kind of the classifier a GWIN is trained against
NUM_CLASSES = 10  # MNIST digits; the critic's one-hot label has this many entries
LEAKY_SLOPE = 0.2  # leaky ReLU slope of the critic (DCGAN's and WGAN-GP's choice)
CRITIC_HIDDEN = 128  # units of the critic's two hidden layers (the label joins the second)
SKIP_INIT = 4.0  # initial weight of x in G's last layer: sigmoid(+-4) = 0.98 / 0.02, so G starts near identity
EVAL_THRESHOLD = 0.9  # tau of the held-out check: test images with BNN certainty below it are rejected
EVAL_SEED = 1  # seeds the BNN draws and the noise of the held-out check
HISTORY_POINTS = 100  # training curves are averaged over this many windows of generator steps
NUM_REPORT_EXAMPLES = 8  # rejected test images shown (with their transformations) in the training report
CONFIDENT_TASK = "GWIN: classifier's confident set"  # progress task names
TRAINING_TASK = "training GWIN"


# --------------------------------------------------------------------------- networks


def _noise(n: int, noise_dim: int, generator: torch.Generator, device) -> torch.Tensor:
    """``z ~ N(0, I)`` of shape ``(n, noise_dim)`` drawn on the generator's device, moved to ``device``."""
    return torch.randn(n, noise_dim, generator=generator, device=generator.device).to(device)


class ConditionalGenerator(nn.Module):
    """``G(x, z)``: images ``(N, 1, 28, 28)`` and noise ``(N, D)`` -> images ``(N, 1, 28, 28)`` in ``[0, 1]``.

    ``z`` is projected linearly to one 28 x 28 map and concatenated with ``x``
    (input concatenation over the whole image); an encoder of two stride-2
    convolutions (28 -> 14 -> 7) and a decoder of two stride-2 transposed
    convolutions (7 -> 14 -> 28), with batch norm and ReLU, produce feature
    maps at full resolution. A skip path concatenates ``x`` with those maps
    before the last 3 x 3 convolution, whose weight on ``x``'s centre pixel
    starts at ``SKIP_INIT``: ``G`` starts close to the identity and can stay
    near its input where that input is already confident.

    Parameters
    ----------
    noise_dim : int
        ``D``, the dimension of ``z``.
    channels : int
        Maps at 14 x 14; the 7 x 7 stage has twice as many, the 28 x 28 stage half as many.

    Examples
    --------
    >>> g = ConditionalGenerator(4, 8).eval()
    >>> y = g(torch.rand(2, 1, 28, 28), torch.randn(2, 4))
    >>> y.shape, bool(y.min() >= 0 and y.max() <= 1)
    (torch.Size([2, 1, 28, 28]), True)
    """

    def __init__(self, noise_dim: int = 16, channels: int = 32):
        super().__init__()
        self.noise_dim = int(noise_dim)
        c = int(channels)
        top = max(1, c // 2)  # maps at 28 x 28: half width, as a full-width 28 x 28 stage cost 4x the time
        ch = IMAGE_SHAPE[0]
        self.noise_map = nn.Sequential(nn.Linear(self.noise_dim, NUM_PIXELS), nn.Unflatten(1, IMAGE_SHAPE))
        self.encoder = nn.Sequential(
            nn.Conv2d(2 * ch, c, kernel_size=4, stride=2, padding=1),  # 28 -> 14
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.Conv2d(c, 2 * c, kernel_size=4, stride=2, padding=1),  # 14 -> 7
            nn.BatchNorm2d(2 * c),
            nn.ReLU(),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(2 * c, c, kernel_size=4, stride=2, padding=1),  # 7 -> 14
            nn.BatchNorm2d(c),
            nn.ReLU(),
            nn.ConvTranspose2d(c, top, kernel_size=4, stride=2, padding=1),  # 14 -> 28
            nn.BatchNorm2d(top),
            nn.ReLU(),
        )
        self.output = nn.Conv2d(top + ch, ch, kernel_size=3, padding=1)  # decoder maps + the skip from x
        with torch.no_grad():
            self.output.weight[:, top:].zero_()
            self.output.weight[:, top:, 1, 1] = SKIP_INIT

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Transformed images ``(N, 1, 28, 28)`` in ``[0, 1]`` (inputs centred to ``[-1, 1]`` inside)."""
        centred = 2.0 * x - 1.0
        h = self.decoder(self.encoder(torch.cat([centred, self.noise_map(z)], dim=1)))
        return torch.sigmoid(self.output(torch.cat([h, centred], dim=1)))


class LabelCritic(nn.Module):
    """``D(x, y)``: images ``(N, 1, 28, 28)`` and labels ``(N,)`` -> scores ``(N,)``; higher = more like a confident y.

    Convolutional features of the image (two stride-2 convolutions, leaky
    ReLU, no normalisation: the gradient penalty is per sample) go through a
    hidden layer; the one-hot label is concatenated at that hidden layer
    (hidden-layer concatenation) and one more hidden layer precedes the
    scalar. That second layer matters: a linear head on ``[h, onehot(y)]``
    would add only a per-class constant, whose gradient with respect to the
    image is zero, so the label could not shape what the generator learns.

    Parameters
    ----------
    num_classes : int
    channels : int
        Maps at 14 x 14; the 7 x 7 stage has twice as many.
    hidden : int
        Units of both hidden layers.

    Examples
    --------
    >>> LabelCritic(10, 8)(torch.rand(4, 1, 28, 28), torch.tensor([0, 3, 9, 3])).shape
    torch.Size([4])
    """

    def __init__(self, num_classes: int = NUM_CLASSES, channels: int = 32, hidden: int = CRITIC_HIDDEN):
        super().__init__()
        self.num_classes = int(num_classes)
        c = int(channels)
        side = IMAGE_SHAPE[1] // 4
        self.features = nn.Sequential(
            nn.Conv2d(IMAGE_SHAPE[0], c, kernel_size=4, stride=2, padding=1),  # 28 -> 14
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Conv2d(c, 2 * c, kernel_size=4, stride=2, padding=1),  # 14 -> 7
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Flatten(),
            nn.Linear(2 * c * side * side, hidden),
            nn.LeakyReLU(LEAKY_SLOPE),
        )
        self.head = nn.Sequential(
            nn.Linear(hidden + self.num_classes, hidden),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scores ``(N,)`` of images in ``[0, 1]`` (centred to ``[-1, 1]`` inside) given their labels."""
        h = self.features(2.0 * x - 1.0)
        onehot = F.one_hot(labels.long(), self.num_classes).to(h.dtype)
        return self.head(torch.cat([h, onehot], dim=1)).squeeze(-1)


class GWIN(nn.Module):
    """The conditional generator and its label critic; one safetensors file stores ``generator.*`` and ``critic.*``.

    Parameters
    ----------
    noise_dim : int
    channels : int
        Generator width (see :class:`ConditionalGenerator`).
    critic_channels : int, optional
        Critic width (default: ``channels``).
    num_classes : int

    Examples
    --------
    >>> sorted({k.split(".")[0] for k in GWIN(4, 8).state_dict()})
    ['critic', 'generator']
    """

    def __init__(self, noise_dim: int = 16, channels: int = 32, critic_channels: int | None = None,
                 num_classes: int = NUM_CLASSES):
        super().__init__()
        self.noise_dim = int(noise_dim)
        self.generator = ConditionalGenerator(noise_dim, channels)
        self.critic = LabelCritic(num_classes, critic_channels or channels)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``G(x, z)``."""
        return self.generator(x, z)

    @torch.no_grad()
    def transform(self, x: torch.Tensor, generator: torch.Generator, chunk: int = EVAL_CHUNK) -> torch.Tensor:
        """``G(x, z)`` with ``z ~ N(0, I)``, in eval mode and without gradients, ``chunk`` images at a time.

        Parameters
        ----------
        x : torch.Tensor
            ``(N, 1, 28, 28)`` images in ``[0, 1]``, on the module's device.
        generator : torch.Generator
            Source of ``z`` (all ``N`` rows drawn at once on the generator's
            device, then moved to ``x``'s, so ``chunk`` does not change the result).
        chunk : int
            Images per forward pass.

        Returns
        -------
        torch.Tensor
            ``(N, 1, 28, 28)`` in ``[0, 1]``, on ``x``'s device. The module's
            train/eval mode is restored afterwards.

        Raises
        ------
        InvalidInputError
            ``x`` is not a float batch of 28 x 28 grey images in ``[0, 1]``,
            or ``chunk`` is not a positive integer.

        Examples
        --------
        >>> gwin = GWIN(4, 8)
        >>> gwin.transform(torch.rand(5, 1, 28, 28), torch.Generator().manual_seed(0), chunk=2).shape
        torch.Size([5, 1, 28, 28])
        >>> gwin.transform(torch.rand(5, 3, 28, 28), torch.Generator())
        Traceback (most recent call last):
        ...
        ppl_audit.errors.InvalidInputError: images must have shape (N, 1, 28, 28), got (5, 3, 28, 28)
        """
        check_images(x, IMAGE_SHAPE)
        check_field(is_positive_int(chunk), "chunk", chunk, "a positive integer")
        was_training = self.training
        self.eval()
        z = _noise(len(x), self.noise_dim, generator, x.device)  # all at once: the result is chunk-invariant
        try:
            outs = [self.generator(part, z_part) for part, z_part in zip(x.split(chunk), z.split(chunk))]
        finally:
            self.train(was_training)
        return torch.cat(outs) if outs else x.new_zeros((0, *IMAGE_SHAPE))


def conditional_gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor,
                                 generator: torch.Generator) -> torch.Tensor:
    """``E[(||grad_x D(x_hat, y)||_2 - 1)^2]`` at random interpolates of real and fake images of the same labels.

    The label-conditional form of Gulrajani et al. (2017), Algorithm 1, line
    7: ``x_hat = eps x_r + (1 - eps) G(x, z)`` with ``eps ~ U[0, 1]`` per
    sample, where ``x_r`` and ``G(x, z)`` share the label ``y`` that the
    critic is given at ``x_hat``; the gradient is taken with respect to the
    image only.

    Parameters
    ----------
    critic : nn.Module
        ``critic(x, labels) -> (N,)``.
    real, fake : torch.Tensor
        ``(N, 1, 28, 28)`` images; row ``i`` of both has label ``labels[i]``.
    labels : torch.Tensor
        ``(N,)`` long.
    generator : torch.Generator
        Source of ``eps``.

    Returns
    -------
    torch.Tensor
        A scalar that keeps the graph (``create_graph=True``), to be added to the critic loss.

    Examples
    --------
    >>> gp = conditional_gradient_penalty(LabelCritic(10, 4), torch.rand(3, 1, 28, 28), torch.rand(3, 1, 28, 28),
    ...                                   torch.tensor([1, 2, 3]), torch.Generator().manual_seed(0))
    >>> gp.ndim, bool(gp >= 0)
    (0, True)
    """
    eps = torch.rand(real.shape[0], 1, 1, 1, generator=generator, device=generator.device).to(real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat, labels).sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


# --------------------------------------------------------------------------- the card


@dataclass(frozen=True)
class GWINConfig(CardConfig):
    """The ``[architecture]`` and ``[training]`` keys of a GWIN card.

    Parameters
    ----------
    type : str
        ``"gwin-conv"``.
    noise_dim, channels, critic_channels : int
        Network sizes (:class:`GWIN`).
    classifier : str
        Card name (or path) of the fixed Bayesian classifier.
    classifier_recipe_hash : str
        That classifier's recipe hash, filled by :func:`pin` ("" = not pinned).
    confidence_threshold : float
        ``tau*``: the critic's real images are the training images the
        classifier labels correctly with certainty ``>= tau*``.
    classifier_samples : int
        Posterior draws ``S`` behind that certainty.
    gradient_penalty : float
        ``lambda_GP``.
    transformation_penalty : float
        ``lambda_Loss``, the weight of the classifier's cross-entropy in the generator loss.
    critic_steps : int
        ``n_critic``, critic steps per generator step.
    learning_rate, beta1, beta2 : float
        Adam's, for both networks.
    batch_size : int
    generator_steps : int
        The training budget, in generator iterations.
    uncertain_input_fraction : float
        Share of each generator batch drawn from the training images outside
        the confident set (labelled wrongly or with certainty below ``tau*``),
        the rest uniformly from all training images; 0 draws every input
        uniformly. Those are the inputs a GWIN is used on at inference, and
        with uniform draws they are ~2% of a batch.
    augment_shift_pixels : int
        Shift each of G's training inputs by up to this many pixels in x and y
        before G sees it (0: none, the paper); the transformation loss still
        asks for the input's true label. Meant to keep G from memorising the
        few uncertain training images it re-maps; on MNIST it made G worse
        (``models/mnist-gwin.toml``).
    seed : int

    Examples
    --------
    >>> GWINConfig(confidence_threshold=1.5)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: confidence_threshold must be a number in [0, 1], got 1.5
    """

    type: str = "gwin-conv"
    noise_dim: int = 16
    channels: int = 32
    critic_channels: int = 32
    classifier: str = "mnist-bayesian-lenet5"
    classifier_recipe_hash: str = ""
    confidence_threshold: float = 0.95
    classifier_samples: int = 10
    gradient_penalty: float = 10.0
    transformation_penalty: float = 10.0
    critic_steps: int = 5
    learning_rate: float = 1e-4
    beta1: float = 0.5
    beta2: float = 0.9
    batch_size: int = 64
    generator_steps: int = 2000
    uncertain_input_fraction: float = 0.0
    augment_shift_pixels: int = 0
    seed: int = 0

    TYPE = 'gwin-conv'
    POSITIVE_INTEGERS = ('generator_steps', 'batch_size', 'critic_steps', 'classifier_samples')

    def __post_init__(self):
        super().__post_init__()
        for name in ("noise_dim", "channels", "critic_channels"):
            check_field(is_positive_int(getattr(self, name)), name, getattr(self, name), "a positive integer")
        check_field(isinstance(self.classifier, str) and bool(self.classifier.strip()), "classifier",
                    self.classifier, "the name (or path) of a bayesian-lenet-classifier card")
        check_field(isinstance(self.classifier_recipe_hash, str)
                    and (self.classifier_recipe_hash == "" or _is_recipe_hash(self.classifier_recipe_hash)),
                    "classifier_recipe_hash", self.classifier_recipe_hash, "16 hex digits (or '' before pin)")
        check_field(_is_number(self.confidence_threshold) and 0 <= self.confidence_threshold <= 1,
                    "confidence_threshold", self.confidence_threshold, "a number in [0, 1]")
        check_field(is_fraction(self.uncertain_input_fraction),
                    "uncertain_input_fraction", self.uncertain_input_fraction, "a number in [0, 1)")
        check_augment_shift(self)
        check_adversarial_fields(self)
        check_field(_is_number(self.transformation_penalty) and self.transformation_penalty >= 0,
                    "transformation_penalty", self.transformation_penalty, "a number >= 0")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_recipe_hash(value: str) -> bool:
    return len(value) == 16 and all(ch in "0123456789abcdef" for ch in value)


def build_gwin(card: ModelCard) -> GWIN:
    """The untrained GWIN a card describes (validates the card).

    Examples
    --------
    >>> build_gwin(load_card("mnist-gwin")).noise_dim
    16
    """
    config = GWINConfig.from_card(card)
    DataConfig.from_card(card)
    return GWIN(config.noise_dim, config.channels, config.critic_channels)


def pin(card: ModelCard) -> ModelCard:
    """A copy of a GWIN card that records its classifier card's recipe hash in ``[training]``.

    The hash enters the GWIN's own recipe hash, so a GWIN cached against one
    classifier recipe is never loaded for another. :func:`ppl_audit.training.load_model`
    pins before it looks in the cache.

    Parameters
    ----------
    card : ModelCard
        A ``gwin`` card; its ``[training] classifier`` names the classifier card.

    Returns
    -------
    ModelCard
        With ``training["classifier_recipe_hash"]`` set (replaced if present).

    Raises
    ------
    AuditFileError
        The classifier card cannot be found or parsed.

    Examples
    --------
    >>> card = load_card("mnist-gwin").with_overrides(training={"classifier": "mnist-lenet5"})
    >>> pin(card).training["classifier_recipe_hash"] == load_card("mnist-lenet5").recipe_hash
    True
    """
    classifier = card.training.get("classifier", GWINConfig.classifier)
    return card.with_overrides(training={"classifier_recipe_hash": load_card(classifier).recipe_hash})


# --------------------------------------------------------------------------- training


def _load_classifier(name, **kwargs):
    """The Bayesian LeNet-5 of card ``name``, loaded (tests replace this hook)."""
    return load_model(name, kind=CLASSIFIER_KIND, **kwargs).model


class _ClassSampler:
    """Draw, for each label in a batch, a uniformly random index of an image of that class (vectorised)."""

    def __init__(self, labels: torch.Tensor, num_classes: int):
        self.order = torch.argsort(labels, stable=True)
        self.counts = torch.bincount(labels, minlength=num_classes)
        self.starts = torch.cumsum(self.counts, 0) - self.counts

    def __call__(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(len(y), generator=generator, device=generator.device).to(y.device)
        offset = torch.minimum((u * self.counts[y]).long(), self.counts[y] - 1)  # u * n can round up to n
        return self.order[self.starts[y] + offset]


@torch.no_grad()
def _predict(classifier, images: torch.Tensor, num_samples: int, generator: torch.Generator):
    """``(labels, certainty)`` of the classifier over ``images`` in chunks, on the images' device."""
    labels, certainty = [], []
    for x in images.split(EVAL_CHUNK):
        pred = classifier.predict(x, num_samples=num_samples, generator=generator)
        labels.append(pred.labels.to(images.device))
        certainty.append(pred.certainty.to(images.device))
    if not labels:
        return images.new_zeros(0, dtype=torch.long), images.new_zeros(0)
    return torch.cat(labels), torch.cat(certainty)


def confident_set(classifier, images: torch.Tensor, labels: torch.Tensor, threshold: float, num_samples: int,
                  generator: torch.Generator, progress: ProgressFn | None = None) -> torch.Tensor:
    """Indices of the images the classifier labels correctly with certainty ``>= threshold``.

    Parameters
    ----------
    classifier : object
        ``predict(x, num_samples=, generator=)`` returning ``labels`` ``(N,)``
        and ``certainty`` ``(N,)`` (the BNN's median predicted-class probability).
    images, labels : torch.Tensor
        ``(N, 1, 28, 28)`` and ``(N,)``.
    threshold : float
        ``tau*``.
    num_samples : int
        Posterior draws per image.
    generator : torch.Generator
    progress : callable, optional

    Returns
    -------
    torch.Tensor
        ``(M,)`` long indices into ``images``, ascending.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> clf = SimpleNamespace(predict=lambda x, num_samples, generator: SimpleNamespace(
    ...     labels=torch.zeros(len(x), dtype=torch.long), certainty=x.flatten(1).mean(1)))
    >>> x = torch.stack([torch.full((1, 28, 28), v) for v in (0.2, 0.9, 0.95)])
    >>> confident_set(clf, x, torch.tensor([0, 0, 1]), 0.5, 1, torch.Generator()).tolist()
    [1]
    """
    keep = []
    n = len(images)
    for start in range(0, n, EVAL_CHUNK):
        x, y = images[start: start + EVAL_CHUNK], labels[start: start + EVAL_CHUNK]
        predicted, certainty = _predict(classifier, x, num_samples, generator)
        keep.append((predicted == y) & (certainty >= threshold))
        report(progress, CONFIDENT_TASK, min(start + EVAL_CHUNK, n), n)
    if not keep:
        return labels.new_zeros(0)
    return torch.nonzero(torch.cat(keep)).squeeze(1)


@torch.no_grad()
def rejection_check(gwin: GWIN, classifier, images: torch.Tensor, labels: torch.Tensor, *,
                  threshold: float = EVAL_THRESHOLD, num_samples: int = 10, seed: int = EVAL_SEED) -> dict:
    """The classifier's accuracy on the images it rejects, before and after the GWIN transforms them.

    An image is rejected when the classifier's certainty is below
    ``threshold``; the rejected images are transformed once (``z ~ N(0, I)``)
    and labelled again (the GWIN paper's relabelling of rejected inputs).
    Accuracies are NaN when nothing is rejected.

    Parameters
    ----------
    gwin : GWIN
    classifier : object
        With ``predict(x, num_samples=, generator=)`` (see :func:`confident_set`).
    images, labels : torch.Tensor
        Held-out images ``(N, 1, 28, 28)`` and their labels ``(N,)``.
    threshold : float
        ``tau`` of the reject option.
    num_samples : int
        Posterior draws per prediction.
    seed : int
        Seeds the classifier's draws and the GWIN noise.

    Returns
    -------
    dict
        ``rejected_fraction``, ``num_rejected``, ``rejected_accuracy_before``,
        ``rejected_accuracy_after``, ``rejected_indices`` (a long tensor).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> clf = SimpleNamespace(predict=lambda x, num_samples, generator: SimpleNamespace(
    ...     labels=torch.zeros(len(x), dtype=torch.long), certainty=torch.full((len(x),), 0.5)))
    >>> out = rejection_check(GWIN(4, 8), clf, torch.rand(4, 1, 28, 28), torch.tensor([0, 0, 0, 1]))
    >>> out["rejected_fraction"], out["rejected_accuracy_before"], out["rejected_accuracy_after"]
    (1.0, 0.75, 0.75)
    """
    generator = torch.Generator().manual_seed(seed)
    before, certainty = _predict(classifier, images, num_samples, generator)
    rejected = torch.nonzero(certainty < threshold).squeeze(1)
    out = {"rejected_fraction": len(rejected) / max(1, len(images)), "num_rejected": len(rejected),
           "rejected_indices": rejected}
    if len(rejected) == 0:
        out.update(rejected_accuracy_before=math.nan, rejected_accuracy_after=math.nan)
        return out
    y = labels[rejected]
    after, _ = _predict(classifier, gwin.transform(images[rejected], generator), num_samples, generator)
    out["rejected_accuracy_before"] = float((before[rejected] == y).double().mean())
    out["rejected_accuracy_after"] = float((after == y).double().mean())
    return out


def train_gwin(card: ModelCard, *, data_dir=None, device="auto", progress: ProgressFn | None = None,
               cache: str | os.PathLike | None = None) -> TrainResult:
    """Train a GWIN card against its fixed Bayesian classifier (conditional WGAN-GP + transformation loss).

    Steps: load the data and the classifier (trained and cached first if
    needed); check the classifier's recipe hash against the pinned one (an
    unpinned card is pinned here); find the confident set (training images
    labelled correctly with certainty ``>= tau*``, ``S`` posterior draws);
    then ``generator_steps`` times: ``critic_steps`` critic updates, each on
    a confident batch ``(x_r, y)`` and a class-stratified batch of inputs of
    the same labels from all training images, and one generator update on a
    fresh batch of training images (module docstring for both losses). Adam
    for both networks.

    Parameters
    ----------
    card : ModelCard
        A ``gwin`` card.
    data_dir : path-like, optional
        MNIST data folder (also used if the classifier must be trained).
    device : str or torch.device
    progress : callable, optional
        Receives ``(task, done, total)`` for the confident set and for training.
    cache : path-like, optional
        Weights cache holding (or receiving) the classifier.

    Returns
    -------
    TrainResult
        ``metrics``: ``test_rejected_accuracy_after`` (the headline),
        ``test_rejected_accuracy_before``, ``test_rejected_fraction``,
        ``test_num_rejected`` (held-out check at ``tau = 0.9``, seed
        ``EVAL_SEED``), ``confident_set_size``, ``generator_steps``,
        ``num_train``, ``num_test``, ``seconds``; ``history``: critic loss,
        generator adversarial loss, transformation loss and gradient penalty
        per window of generator steps, and ``rejected_examples`` (a few
        rejected test images and the classifier's labels before and after)
        for the training report.

    Raises
    ------
    AuditFileError
        The loaded classifier's recipe hash differs from the pinned one.
    ModelOutputError
        The classifier has no confident training image (lower ``confidence_threshold``).

    Examples
    --------
    >>> result = train_gwin(load_card("mnist-gwin"), data_dir="/path/to/data")  # doctest: +SKIP
    >>> m = result.metrics  # doctest: +SKIP
    >>> m["test_rejected_accuracy_after"] > m["test_rejected_accuracy_before"]  # doctest: +SKIP
    True
    """
    config = GWINConfig.from_card(card)
    if not config.classifier_recipe_hash:
        card = pin(card)
        config = GWINConfig.from_card(card)
    data = DataConfig.from_card(card)
    device = resolve_device(device)
    watch = Stopwatch()
    train, test = load_training_data(data, data_dir, device)
    if train.labels is None or test.labels is None:
        raise AuditFileError(f"{card.source or card.name}: a GWIN needs labelled data; "
                             f"{data.dataset!r} has no labels")
    classifier = _load_classifier(config.classifier, cache=cache, data_dir=data_dir, device=device,
                                  progress=progress)
    loaded_hash = classifier.trained.card.recipe_hash
    if loaded_hash != config.classifier_recipe_hash:
        raise AuditFileError(
            f"{card.source or card.name}: [training] classifier_recipe_hash = {config.classifier_recipe_hash!r} "
            f"but classifier {config.classifier!r} has recipe hash {loaded_hash!r}; re-pin the card "
            "(ppl_audit.generative.gwin.pin) or load it with load_model, which pins it"
        )
    if len(classifier.class_names) != NUM_CLASSES:
        raise AuditFileError(f"{card.source or card.name}: classifier {config.classifier!r} has "
                             f"{len(classifier.class_names)} classes; a GWIN of MNIST needs {NUM_CLASSES}")

    generator = torch.Generator().manual_seed(config.seed)
    confident = confident_set(classifier, train.images, train.labels, config.confidence_threshold,
                              config.classifier_samples, generator, progress)
    if len(confident) == 0:
        raise ModelOutputError(
            f"{card.name}: the classifier labels none of the {len(train)} training images correctly with "
            f"certainty >= {config.confidence_threshold}; lower [training] confidence_threshold"
        )
    with seeded(config.seed):
        gwin = GWIN(config.noise_dim, config.channels, config.critic_channels).to(device)
    betas = (config.beta1, config.beta2)
    opt_critic = torch.optim.Adam(gwin.critic.parameters(), lr=config.learning_rate, betas=betas)
    opt_gen = torch.optim.Adam(gwin.generator.parameters(), lr=config.learning_rate, betas=betas)
    same_class = _ClassSampler(train.labels, NUM_CLASSES)
    n, b = len(train), config.batch_size
    outside = torch.ones(n, dtype=torch.bool, device=device)
    outside[confident] = False
    uncertain = torch.nonzero(outside).squeeze(1)  # wrongly labelled or below tau*: what a GWIN is used on
    num_uncertain = round(b * config.uncertain_input_fraction) if len(uncertain) else 0

    def draw(high: int) -> torch.Tensor:
        return torch.randint(high, (b,), generator=generator, device=generator.device).to(device)

    names = ("critic_loss", "generator_loss", "transformation_loss", "gradient_penalty")
    history = {k: [] for k in names}
    window = {k: [] for k in names}
    log_every = max(1, config.generator_steps // HISTORY_POINTS)
    gwin.train()
    for step in range(1, config.generator_steps + 1):
        for _ in range(config.critic_steps):
            pick = confident[draw(len(confident))]
            real, y = train.images[pick], train.labels[pick]
            x_in = random_shift(train.images[same_class(y, generator)], config.augment_shift_pixels, generator)
            with torch.no_grad():
                fake = gwin.generator(x_in, _noise(b, config.noise_dim, generator, device))
            penalty = conditional_gradient_penalty(gwin.critic, real, fake, y, generator)
            critic_loss = (gwin.critic(fake, y).mean() - gwin.critic(real, y).mean()
                           + config.gradient_penalty * penalty)
            opt_critic.zero_grad(set_to_none=True)
            critic_loss.backward()
            opt_critic.step()
            window["critic_loss"].append(float(critic_loss.detach()))
            window["gradient_penalty"].append(float(penalty.detach()))
        pick = draw(n)
        if num_uncertain:
            pick[:num_uncertain] = uncertain[draw(len(uncertain))[:num_uncertain]]
        x_in, y = random_shift(train.images[pick], config.augment_shift_pixels, generator), train.labels[pick]
        gwin.critic.requires_grad_(False)  # the generator step needs no critic weight gradients
        out = gwin.generator(x_in, _noise(b, config.noise_dim, generator, device))
        adversarial = -gwin.critic(out, y).mean()
        transformation = F.cross_entropy(classifier.sample_logits(out, generator=generator), y)
        gen_loss = adversarial + config.transformation_penalty * transformation
        opt_gen.zero_grad(set_to_none=True)
        gen_loss.backward()
        opt_gen.step()
        gwin.critic.requires_grad_(True)
        window["generator_loss"].append(float(adversarial.detach()))
        window["transformation_loss"].append(float(transformation.detach()))
        if step % log_every == 0 or step == config.generator_steps:
            for k in names:
                if window[k]:
                    history[k].append(sum(window[k]) / len(window[k]))
                    window[k] = []
        report(progress, TRAINING_TASK, step, config.generator_steps)

    gwin.eval()
    check = rejection_check(gwin, classifier, test.images, test.labels, num_samples=config.classifier_samples)
    metrics = {
        "test_rejected_accuracy_after": check["rejected_accuracy_after"],
        "test_rejected_accuracy_before": check["rejected_accuracy_before"],
        "test_rejected_fraction": check["rejected_fraction"],
        "test_num_rejected": check["num_rejected"],
        "confident_set_size": len(confident),
        "uncertain_set_size": len(uncertain),
        "generator_steps": config.generator_steps,
        "num_train": n,
        "num_test": len(test),
        "seconds": float(watch),
    }
    unit = "generator step" if log_every == 1 else f"{log_every} generator steps"
    panels = {
        "critic loss": {"E[D(G(x,z),y)] - E[D(x_r,y)] + lambda_GP GP": history["critic_loss"]},
        "generator adversarial loss": {"-E[D(G(x,z),y)]": history["generator_loss"]},
        "transformation loss (nats)": {"CE(C(G(x,z)), y)": history["transformation_loss"]},
        "gradient penalty": {"E[(||grad D|| - 1)^2]": history["gradient_penalty"]},
    }
    examples = _rejected_examples(gwin, classifier, test.images, test.labels, check["rejected_indices"],
                                  config.classifier_samples)
    return TrainResult(gwin.cpu(), metrics, {"unit": unit, "panels": panels, "rejected_examples": examples})


@torch.no_grad()
def _rejected_examples(gwin: GWIN, classifier, images, labels, rejected, num_samples: int) -> dict:
    """The first rejected test images: indices, labels, the classifier's labels before/after (seed SAMPLE_SEED)."""
    idx = rejected[:NUM_REPORT_EXAMPLES]
    if len(idx) == 0:
        return {"test_indices": [], "labels": [], "before": [], "after": [], "seed": SAMPLE_SEED}
    x = images[idx]
    generator = torch.Generator().manual_seed(SAMPLE_SEED)
    transformed = gwin.transform(x, generator)
    before, _ = _predict(classifier, x, num_samples, generator)
    after, _ = _predict(classifier, transformed, num_samples, generator)
    return {"test_indices": idx.tolist(), "labels": labels[idx].tolist(), "before": before.tolist(),
            "after": after.tolist(), "seed": SAMPLE_SEED}


# --------------------------------------------------------------------------- report and loading


def _report_sections(trained: TrainedModel, data_dir=None) -> list:
    """One section: rejected test images (row 1) and their transformations (row 2), if the data can be read."""
    from ppl_audit.data import DataNotFoundError, load_dataset
    from ppl_audit.report import Section
    from ppl_audit.report.figures import montage_figure

    title = "Rejected test images and their transformations"
    examples = (trained.info.get("history") or {}).get("rejected_examples") or {}
    indices = examples.get("test_indices") or []
    if not indices:
        return [Section("rejected_examples", title,
                        paragraphs=["The classifier rejected no test image at tau = "
                                    f"{EVAL_THRESHOLD} when this GWIN was trained, so there is nothing to show."])]
    data = DataConfig.from_card(trained.card)
    try:
        test = load_dataset(data.dataset, data.test_split, data_dir=data_dir, limit=data.num_test)
    except DataNotFoundError as exc:
        return [Section("rejected_examples", title,
                        paragraphs=[f"The {data.dataset} {data.test_split} images could not be read to draw "
                                    f"this figure (give --data-dir or set $PPL_AUDIT_DATA): {exc}"])]
    module = trained.module
    device = next(module.parameters()).device
    x = test.images[torch.tensor(indices)].to(device)
    transformed = module.transform(x, torch.Generator().manual_seed(int(examples.get("seed", SAMPLE_SEED))))
    columns = [f"{y}: {b}>{a}" for y, b, a in zip(examples["labels"], examples["before"], examples["after"])]
    figure = montage_figure(
        "rejected_examples", f"{trained.card.name}: rejected test images (top) and G(x, z) (bottom)",
        f"The first {len(indices)} test images the classifier rejects (certainty < {EVAL_THRESHOLD}) and one "
        f"transformation of each (z seed {examples.get('seed', SAMPLE_SEED)}). Column labels read "
        "'true label: classifier label before > after'.",
        torch.cat([x.cpu(), transformed.cpu()]), len(indices),
        row_labels=["x", "G(x, z)"], column_labels=columns, data=dict(examples),
    )
    return [Section("rejected_examples", title, figures=[figure])]


TRAINER = Trainer(
    kind=KIND,
    build=build_gwin,
    train=train_gwin,
    headline=("test_rejected_accuracy_after", "classifier accuracy on rejected test images after transformation"),
    report_sections=_report_sections,
    description="conditional WGAN-GP generator that re-maps inputs a Bayesian classifier rejects (GWIN)",
    pin=pin,
    needs_cache=True,
    timed_task=TRAINING_TASK,  # its first task is the classifier's confidence pass, not a training step
)

__all__ = [
    "GWIN",
    "TRAINER",
    "ConditionalGenerator",
    "GWINConfig",
    "LabelCritic",
    "build_gwin",
    "conditional_gradient_penalty",
    "confident_set",
    "pin",
    "rejection_check",
    "train_gwin",
]
