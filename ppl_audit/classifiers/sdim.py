"""SDIM: Supervised Deep InfoMax, a generative classifier that rejects (Wang & Yiu, IJCAI 2020).

Wang & Yiu ("Classification with rejection: scaling generative classifiers
with supervised deep infomax", IJCAI 2020; arXiv "Reject illegal inputs:
scaling generative classifiers with supervised deep infomax") train an
encoder ``f`` whose ``d``-dimensional representation carries a class-
conditional Gaussian per class, and classify with rejection:

* **Encoder** (:class:`ResNetEncoder`): a small ResNet on 28 x 28 images
  (a 3x3 stem, one stage of basic residual blocks per resolution, 28 -> 14 ->
  7 by stride-2 blocks), then a linear map of the 7 x 7 feature map to
  ``f(x)`` in ``R^d`` (``d = 64``). ``f`` is batch-normalised without an
  affine part, which fixes its overall scale: otherwise the likelihood term
  could be lowered without end by shrinking ``f`` and every ``sigma_c``
  together (a deviation from the paper, which does not say how its encoder
  output is normalised).
* **Class conditionals**: ``p(f | c) = N(f; mu_c, diag(sigma_c^2))`` with
  learnable ``mu`` ``(C, d)`` and ``log_sigma`` ``(C, d)``
  (:func:`gaussian_log_likelihoods`).
* **Loss** (the paper's ``L = L_MI + L_NLL + L_LM`` with weights from the
  card): ``mi_weight * L_MI + nll_weight * L_NLL + margin_weight * L_LM``,
  each a mean over the images of the batch, where

  - ``L_MI = -I_JSD`` (:func:`jsd_mi_estimate`) is local Deep InfoMax (Hjelm
    et al. 2019) between the encoder's last 7 x 7 feature map and ``f(x)``:
    both go through small 1x1-convolution networks to ``mi_units`` channels,
    the critic is their dot product ``T(l_p(x_i), f(x_j))`` at every position
    ``p``, positive pairs are ``i = j`` (same image), negative pairs every
    ``i != j`` of the batch, and ``I_JSD = E_pos[-softplus(-T)] -
    E_neg[softplus(T)]``;
  - ``L_NLL = -mean_i l_{i y_i}`` and
  - ``L_LM = mean_i sum_{c != y_i} max(0, K + l_ic - l_{i y_i})^2``
    (:func:`margin_loss`) with ``K = margin`` (the card's 10),

  where ``l_ic = log p(f(x_i) | c)`` in nats, divided by ``d`` when the card
  sets ``per_dimension = true`` (nats per dimension, as the authors' released
  code does; ``mnist-sdim`` does, so its margin is 10 nats per dimension,
  ``10 d`` in total). The log-likelihoods used to predict and reject are
  always the total ones. (The authors' code averages the squared hinge over
  all ``C`` classes, the true one included, where it is the constant
  ``K^2``; the sum over ``c != y`` here differs by a factor ``C`` and a
  constant.)

* **Prediction**: ``argmax_c log p(f(x) | c)`` (equal class priors);
  :meth:`SDIMClassifier.probs` is the softmax of the class log-likelihoods,
  i.e. the posterior ``p(c | f(x))`` under a uniform class prior.
* **Rejection** (:func:`fit_thresholds`): per class ``c``, the threshold
  ``t_c`` is the q-th percentile (q = 1 and 2, stored in the module's
  buffers so that they are cached with the weights) of ``log p(f(x) | c)``
  over the *correctly classified*, unaugmented training images of class
  ``c``, taken as the order statistic ``sorted(values)[floor(q / 100 * n)]``
  (the authors' code). ``x`` is rejected when ``max_c log p(f(x) | c) <
  t_{argmax}``.

The card ``models/mnist-sdim.toml`` (kind ``sdim-classifier``) trains it;
``load_model(card).model`` is an :class:`SDIMClassifier`, :class:`~ppl_audit.detectors.sdim.SDIMDetector`
puts the rejection rule behind the Detector contract, and
:func:`selective_table` / :func:`ood_rejection_rate` compute the paper's
Tables 2 and 3.

Examples
--------
>>> net = SDIM(channels=(4, 8, 8), representation_dim=6, mi_units=4)
>>> net.log_likelihoods(torch.rand(3, 1, 28, 28)).shape
torch.Size([3, 10])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ppl_audit._device import resolve_device
from ppl_audit.cards import ModelCard
from ppl_audit.classifiers.base import DEFAULT_CHUNK_SIZE, Classifier, check_images
from ppl_audit.classifiers.lenet import (
    IMAGE_SIDE,
    MNIST_CLASS_NAMES,
    MNIST_PIXEL_MEAN,
    MNIST_PIXEL_STD,
    check_augment_shift,
    random_shift,
)
from ppl_audit.errors import InvalidInputError, ModelOutputError
from ppl_audit.progress import ProgressFn, report
from ppl_audit.training import (
    CardConfig,
    EVAL_CHUNK,
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

KIND = "sdim-classifier"  # the [model] kind of SDIM cards
DEFAULT_CARD = "mnist-sdim"
TRAINING_TASK = "training SDIM"  # progress task name
IMAGE_SHAPE = (1, IMAGE_SIDE, IMAGE_SIDE)  # MNIST's grey 28 x 28 images
PERCENTILES = (1, 2)  # the paper's rejection thresholds: 1st and 2nd percentiles (stored as buffers)
LOG_2PI = math.log(2 * math.pi)  # the Gaussian normaliser's constant
MU_INIT_STD = 1.0  # class means start N(0, 1): f is batch-normalised to unit scale, so classes start apart
NUM_STAGES = 3  # resolutions 28, 14, 7


# --------------------------------------------------------------------------- the maths


def gaussian_log_likelihoods(f: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """``log N(f_i; mu_c, diag(exp(log_sigma_c))^2)`` for every image and class: ``(N, d) -> (N, C)``.

    Parameters
    ----------
    f : torch.Tensor
        ``(N, d)`` representations.
    mu, log_sigma : torch.Tensor
        ``(C, d)`` class means and log standard deviations.

    Returns
    -------
    torch.Tensor
        ``(N, C)`` log densities in nats, summed over the ``d`` dimensions.

    Examples
    --------
    >>> ll = gaussian_log_likelihoods(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2))
    >>> round(float(ll), 4) == round(-math.log(2 * math.pi), 4)
    True
    """
    z = (f[:, None, :] - mu[None]) * torch.exp(-log_sigma)[None]  # (N, C, d)
    return -0.5 * (LOG_2PI + 2 * log_sigma[None] + z.pow(2)).sum(-1)


def margin_loss(log_likelihoods: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """The squared likelihood-margin loss ``mean_i sum_{c != y_i} max(0, K + ll_ic - ll_iy)^2``.

    Parameters
    ----------
    log_likelihoods : torch.Tensor
        ``(N, C)`` class-conditional log-likelihoods ``log p(f(x_i) | c)``.
    labels : torch.Tensor
        ``(N,)`` true classes ``y_i``.
    margin : float
        ``K`` in nats (the card's 10).

    Examples
    --------
    >>> ll = torch.tensor([[0.0, -4.0, -20.0]])  # class 1 is 4 nats behind, class 2 20 nats behind
    >>> float(margin_loss(ll, torch.tensor([0]), 10.0))  # (10 - 4)^2 + 0
    36.0
    """
    gap = log_likelihoods - log_likelihoods.gather(1, labels[:, None])  # ll_c - ll_y; 0 at c = y
    hinge = F.relu(margin + gap).pow(2)
    others = torch.ones_like(hinge, dtype=torch.bool).scatter(1, labels[:, None], False)
    return torch.where(others, hinge, torch.zeros_like(hinge)).sum(1).mean()


def jsd_mi_estimate(local: torch.Tensor, global_: torch.Tensor) -> torch.Tensor:
    """Local DIM's Jensen-Shannon mutual-information estimate (Hjelm et al. 2019, Eq. 4).

    The critic is ``T_ijp = <local_i[:, p], global_j>``; pairs ``i = j`` are
    positive (drawn from the joint), pairs ``i != j`` negative (from the
    product of marginals), every position ``p`` counted. Returns
    ``E_pos[-softplus(-T)] - E_neg[softplus(T)]`` (maximised in training).

    Parameters
    ----------
    local : torch.Tensor
        ``(N, U, P)``: the local feature map's ``P`` positions, embedded in ``U`` units.
    global_ : torch.Tensor
        ``(N, U)``: the embedded representation.

    Examples
    --------
    >>> est = jsd_mi_estimate(torch.zeros(3, 4, 5), torch.zeros(3, 4))  # T = 0: -2 log 2
    >>> round(float(est), 4) == round(-2 * math.log(2), 4)
    True
    """
    n = local.shape[0]
    if n < 2:
        raise InvalidInputError(f"the MI estimate needs at least 2 images per batch for negative pairs, got {n}")
    scores = torch.einsum("iup,ju->ijp", local, global_)  # (N, N, P)
    positive = torch.eye(n, dtype=torch.bool, device=scores.device)[:, :, None].expand_as(scores)
    e_pos = -F.softplus(-scores[positive]).mean()
    e_neg = F.softplus(scores[~positive]).mean()
    return e_pos - e_neg


def percentile_threshold(values: torch.Tensor, q: float) -> torch.Tensor:
    """The order statistic ``sorted(values)[floor(q / 100 * n)]`` (the authors' percentile).

    Exactly ``floor(q / 100 * n)`` of ``n`` distinct values lie strictly below it.

    Examples
    --------
    >>> float(percentile_threshold(torch.arange(200.0).flip(0), 1))  # 2 of 200 values below
    2.0
    """
    if values.numel() == 0:
        raise InvalidInputError("a percentile of no values is undefined")
    if not (isinstance(q, (int, float)) and 0 <= q < 100):
        raise InvalidInputError(f"percentile must be a number in [0, 100), got {q!r}")
    return values.flatten().sort().values[int(math.floor(q / 100 * values.numel()))]


# --------------------------------------------------------------------------- the network


class PointwiseDownsample(nn.Conv2d):
    """A bias-free 1x1 convolution with stride ``s``, computed as subsampling, then a stride-1 convolution.

    The same maths and parameters as ``nn.Conv2d(in_channels, out_channels, 1, stride=s, bias=False)``
    (its state-dict keys too), but it never reaches oneDNN's strided 1x1 backward-weights kernel, which
    writes past its buffer on channels-last inputs with fewer channels than its SIMD block: a segfault,
    a hang or wrong gradients (oneDNN issue 6035; ``experiments/onednn_strided_1x1``).

    Examples
    --------
    >>> conv = PointwiseDownsample(4, 8, stride=2)
    >>> x = torch.rand(2, 4, 7, 7)
    >>> bool(torch.allclose(conv(x), F.conv2d(x, conv.weight, stride=2)))
    True
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__(in_channels, out_channels, 1, bias=False)
        self.subsample = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``conv1x1(x[..., ::s, ::s])``: the strided convolution's output, shape for shape."""
        return super().forward(x[:, :, ::self.subsample, ::self.subsample])


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convolutions with batch norm, plus the (projected) input.

    Examples
    --------
    >>> BasicBlock(4, 8, stride=2)(torch.zeros(2, 4, 28, 28)).shape
    torch.Size([2, 8, 14, 14])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(PointwiseDownsample(in_channels, out_channels, stride),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output."""
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """A small ResNet: ``(N, 1, 28, 28) -> (local (N, C3, 7, 7), f (N, d))``.

    Parameters
    ----------
    channels : (int, int, int)
        Widths at 28 x 28 (stem and first stage), 14 x 14 and 7 x 7.
    blocks : (int, int, int)
        Basic blocks per stage (the first block of stages 2 and 3 has stride 2).
    representation_dim : int
        ``d``.

    Examples
    --------
    >>> local, f = ResNetEncoder((4, 8, 8), (1, 1, 1), 6)(torch.rand(2, 1, 28, 28))
    >>> tuple(local.shape), tuple(f.shape)
    ((2, 8, 7, 7), (2, 6))
    """

    def __init__(self, channels=(16, 32, 64), blocks=(1, 1, 1), representation_dim: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, channels[0], 3, padding=1, bias=False), nn.BatchNorm2d(channels[0]),
                                  nn.ReLU())
        stages, width = [], channels[0]
        for i, (out, count) in enumerate(zip(channels, blocks)):
            layers = []
            for j in range(count):
                layers.append(BasicBlock(width, out, stride=2 if (i > 0 and j == 0) else 1))
                width = out
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        side = IMAGE_SIDE // 2 ** (NUM_STAGES - 1)
        self.head = nn.Linear(channels[-1] * side * side, representation_dim)
        # No affine part: fixes f's scale so that the likelihood cannot grow by shrinking f (module docstring).
        self.norm = nn.BatchNorm1d(representation_dim, affine=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(local feature map, representation f)`` of images in ``[0, 1]``."""
        local = self.stages(self.stem((x - MNIST_PIXEL_MEAN) / MNIST_PIXEL_STD))
        return local, self.norm(self.head(local.flatten(1)))


class MINet(nn.Module):
    """Deep InfoMax's 1x1-convolution embedding: a 2-layer MLP per position plus a linear shortcut.

    Examples
    --------
    >>> MINet(8, 4)(torch.zeros(2, 8, 7, 7)).shape
    torch.Size([2, 4, 7, 7])
    """

    def __init__(self, in_channels: int, units: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(in_channels, units, 1), nn.ReLU(), nn.Conv2d(units, units, 1))
        self.shortcut = nn.Conv2d(in_channels, units, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in, H, W) -> (N, units, H, W)``."""
        return self.mlp(x) + self.shortcut(x)


class SDIM(nn.Module):
    """Encoder, MI networks, class-conditional Gaussians and rejection thresholds.

    Parameters
    ----------
    num_classes : int
    channels, blocks : (int, int, int)
        See :class:`ResNetEncoder`.
    representation_dim : int
        ``d`` (the paper's 64).
    mi_units : int
        Units of the critic's embeddings.

    Attributes
    ----------
    mu, log_sigma : nn.Parameter
        ``(C, d)`` class-conditional Gaussians.
    thresholds : torch.Tensor
        Buffer ``(len(PERCENTILES), C)``: ``thresholds[k, c]`` is class ``c``'s
        threshold at percentile ``percentiles[k]``; NaN until
        :func:`fit_thresholds` sets them.
    percentiles : torch.Tensor
        Buffer: the percentiles of the rows of ``thresholds``.

    Examples
    --------
    >>> net = SDIM(channels=(4, 8, 8), representation_dim=6, mi_units=4)
    >>> net(torch.rand(2, 1, 28, 28)).shape, net.thresholds.shape
    (torch.Size([2, 10]), torch.Size([2, 10]))
    """

    def __init__(self, num_classes: int = 10, channels=(16, 32, 64), blocks=(1, 1, 1), representation_dim: int = 64,
                 mi_units: int = 64):
        super().__init__()
        self.encoder = ResNetEncoder(channels, blocks, representation_dim)
        self.local_mi = MINet(channels[-1], mi_units)
        self.global_mi = MINet(representation_dim, mi_units)
        self.mu = nn.Parameter(torch.randn(num_classes, representation_dim) * MU_INIT_STD)
        self.log_sigma = nn.Parameter(torch.zeros(num_classes, representation_dim))
        self.register_buffer("thresholds", torch.full((len(PERCENTILES), num_classes), float("nan")))
        self.register_buffer("percentiles", torch.tensor(PERCENTILES, dtype=torch.float32))

    @property
    def num_classes(self) -> int:
        """``C``."""
        return self.mu.shape[0]

    def log_likelihoods(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(f(x) | c)``, ``(N, C)`` in nats, for images ``(N, 1, 28, 28)`` in ``[0, 1]``."""
        return gaussian_log_likelihoods(self.encoder(x)[1], self.mu, self.log_sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The class log-likelihoods (:meth:`log_likelihoods`)."""
        return self.log_likelihoods(x)

    def losses(self, x: torch.Tensor, labels: torch.Tensor, margin: float,
               per_dimension: bool = False) -> dict[str, torch.Tensor]:
        """The three loss terms of a labelled batch and its log-likelihoods.

        Parameters
        ----------
        x, labels : torch.Tensor
            Images ``(N, 1, 28, 28)`` and classes ``(N,)``.
        margin : float
            ``K``.
        per_dimension : bool
            ``nll`` and ``margin`` on log-likelihoods divided by ``d``.

        Returns
        -------
        dict
            ``mi`` (``-I_JSD``), ``nll``, ``margin`` (:func:`margin_loss`)
            and the total ``log_likelihoods`` ``(N, C)``.
        """
        local, f = self.encoder(x)
        local_embedded = self.local_mi(local).flatten(2)  # (N, U, P)
        global_embedded = self.global_mi(f[:, :, None, None]).flatten(1)  # (N, U)
        ll = gaussian_log_likelihoods(f, self.mu, self.log_sigma)
        scaled = ll / f.shape[1] if per_dimension else ll
        return {
            "mi": -jsd_mi_estimate(local_embedded, global_embedded),
            "nll": -scaled.gather(1, labels[:, None]).mean(),
            "margin": margin_loss(scaled, labels, margin),
            "log_likelihoods": ll,
        }


# --------------------------------------------------------------------------- the card


@dataclass(frozen=True)
class SDIMConfig(CardConfig):
    """The ``[architecture]`` and ``[training]`` keys of an SDIM card.

    Parameters
    ----------
    type : str
        Must be ``"resnet"``.
    channels, blocks : (int, int, int)
        See :class:`ResNetEncoder`.
    representation_dim : int
        ``d``.
    mi_units : int
        Units of the MI critic's embeddings.
    epochs, batch_size : int
    learning_rate : float
        Peak learning rate of Adam under a one-cycle schedule.
    weight_decay : float
        Adam's L2 penalty (0: none).
    augment_shift_pixels : int
        Random shifts of up to this many pixels (0: none).
    margin : float
        ``K`` of the likelihood-margin loss, in nats.
    mi_weight, nll_weight, margin_weight : float
        Weights of ``L_MI``, ``L_NLL`` and ``L_LM`` (each >= 0).
    per_dimension : bool
        Compute ``L_NLL`` and ``L_LM`` on log-likelihoods divided by ``d``.
    seed : int

    Examples
    --------
    >>> SDIMConfig(margin=0)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: margin must be a number > 0, got 0
    """

    type: str = "resnet"
    channels: tuple[int, int, int] = (16, 32, 64)
    blocks: tuple[int, int, int] = (1, 1, 1)
    representation_dim: int = 64
    mi_units: int = 64
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    augment_shift_pixels: int = 2
    margin: float = 10.0
    mi_weight: float = 1.0
    nll_weight: float = 1.0
    margin_weight: float = 1.0
    per_dimension: bool = False
    seed: int = 0

    TYPE = 'resnet'

    def __post_init__(self):
        super().__post_init__()
        for name in ("channels", "blocks"):
            value = getattr(self, name)
            check_field(isinstance(value, tuple) and len(value) == NUM_STAGES and all(map(is_positive_int, value)),
                        name, value, f"{NUM_STAGES} positive integers, e.g. [16, 32, 64]")
        for name in ("representation_dim", "mi_units"):
            check_field(is_positive_int(getattr(self, name)), name, getattr(self, name), "a positive integer")
        check_field(self.batch_size >= 2, "batch_size", self.batch_size, "at least 2 (the MI term needs negatives)")
        check_field(is_positive_float(self.margin), "margin", self.margin, "a number > 0")
        check_field(isinstance(self.per_dimension, bool), "per_dimension", self.per_dimension, "true or false")
        for name in ("weight_decay", "mi_weight", "nll_weight", "margin_weight"):
            value = getattr(self, name)
            check_field(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                        and value >= 0, name, value, "a number >= 0")
        check_augment_shift(self)


def _network(config: SDIMConfig) -> SDIM:
    return SDIM(len(MNIST_CLASS_NAMES), config.channels, config.blocks, config.representation_dim, config.mi_units)


def build_sdim(card: ModelCard) -> SDIM:
    """The untrained network an SDIM card describes (validates the card).

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> build_sdim(load_card("mnist-sdim")).mu.shape
    torch.Size([10, 64])
    """
    config = SDIMConfig.from_card(card)
    DataConfig.from_card(card)  # validate [data] before any training starts
    return _network(config)


# --------------------------------------------------------------------------- evaluation and thresholds


@torch.no_grad()
def batched_log_likelihoods(module: SDIM, images: torch.Tensor, chunk: int = EVAL_CHUNK) -> torch.Tensor:
    """``module.log_likelihoods`` in eval mode over chunks of ``chunk`` images (mode restored after).

    Examples
    --------
    >>> batched_log_likelihoods(SDIM(channels=(2, 2, 2), representation_dim=3, mi_units=2),
    ...                         torch.zeros(5, 1, 28, 28), chunk=2).shape
    torch.Size([5, 10])
    """
    was_training = module.training
    module.eval()
    try:
        parts = [module.log_likelihoods(x) for x in images.split(chunk)]
    finally:
        module.train(was_training)
    return torch.cat(parts) if parts else images.new_zeros((0, module.num_classes))


def thresholds_from_log_likelihoods(log_likelihoods: torch.Tensor, labels: torch.Tensor,
                                    percentiles: Sequence[float] = PERCENTILES) -> tuple[torch.Tensor, list[int]]:
    """Per-class thresholds from training log-likelihoods ``(N, C)`` and labels ``(N,)``.

    ``t[k, c]`` is :func:`percentile_threshold` at ``percentiles[k]`` of
    ``log p(f(x) | c)`` over the images of class ``c`` that are classified
    correctly (``argmax = c``). A class with no correctly classified image
    falls back to all its images (listed in the second return value).

    Returns
    -------
    (torch.Tensor, list of int)
        Thresholds ``(len(percentiles), C)``; the classes that fell back.

    Raises
    ------
    InvalidInputError
        Empty or mismatched inputs, or a class without any image.

    Examples
    --------
    >>> ll = torch.tensor([[0.0, -5.0], [-1.0, -6.0], [-9.0, -2.0], [-8.0, -3.0]])
    >>> t, fell_back = thresholds_from_log_likelihoods(ll, torch.tensor([0, 0, 1, 1]), [1, 50])
    >>> t.tolist(), fell_back
    ([[-1.0, -3.0], [0.0, -2.0]], [])
    """
    _check_labelled(log_likelihoods, labels, log_likelihoods.shape[-1] if log_likelihoods.ndim == 2 else 0,
                    "log_likelihoods")
    num_classes = log_likelihoods.shape[1]
    correct = log_likelihoods.argmax(1) == labels
    out = log_likelihoods.new_empty((len(percentiles), num_classes))
    fell_back = []
    for c in range(num_classes):
        of_class = labels == c
        if not of_class.any():
            raise InvalidInputError(f"class {c} has no training image, so it has no rejection threshold")
        chosen = of_class & correct
        if not chosen.any():
            chosen = of_class
            fell_back.append(c)
        for k, q in enumerate(percentiles):
            out[k, c] = percentile_threshold(log_likelihoods[chosen, c], q)
    return out, fell_back


def fit_thresholds(module: SDIM, images: torch.Tensor, labels: torch.Tensor) -> list[int]:
    """Set ``module.thresholds`` from (unaugmented) training images; return the classes that fell back.

    See :func:`thresholds_from_log_likelihoods`; the percentiles are
    :data:`PERCENTILES`.

    Examples
    --------
    >>> net = SDIM(channels=(2, 2, 2), representation_dim=3, mi_units=2)
    >>> _ = fit_thresholds(net, torch.rand(20, 1, 28, 28), torch.arange(20) % 10)
    >>> bool(torch.isfinite(net.thresholds).all())
    True
    """
    ll = batched_log_likelihoods(module, images)
    thresholds, fell_back = thresholds_from_log_likelihoods(ll, labels.to(ll.device), PERCENTILES)
    module.thresholds.copy_(thresholds.to(module.thresholds.device))
    return fell_back


def _check_labelled(x: torch.Tensor, labels: torch.Tensor, num_classes: int, name: str = "images") -> None:
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
        raise InvalidInputError(f"labels must be a 1-d tensor, got {getattr(labels, 'shape', type(labels).__name__)}")
    if x.shape[0] == 0:
        raise InvalidInputError(f"{name} are empty: at least one is needed")
    if x.shape[0] != labels.shape[0]:
        raise InvalidInputError(f"{name} and labels differ in length: {x.shape[0]} against {labels.shape[0]}")
    if labels.dtype.is_floating_point or labels.min() < 0 or labels.max() >= num_classes:
        raise InvalidInputError(f"labels must be integers in 0..{num_classes - 1}")


def _selective_numbers(ll: torch.Tensor, labels: torch.Tensor, thresholds: torch.Tensor) -> dict:
    best, pred = ll.max(1)
    kept = best >= thresholds[pred]
    correct = pred == labels
    num_kept = int(kept.sum())
    return {
        "num_images": len(labels),
        "num_kept": num_kept,
        "accuracy_all": float(correct.float().mean()),
        "accuracy_kept": float(correct[kept].float().mean()) if num_kept else None,
        "rejection_rate": 1 - num_kept / len(labels),
    }


# --------------------------------------------------------------------------- training


def train_sdim(card: ModelCard, *, data_dir=None, device="auto", progress: ProgressFn | None = None) -> TrainResult:
    """Train an SDIM card's network (Adam, one-cycle schedule), then fit its rejection thresholds.

    Parameters
    ----------
    card : ModelCard
        Kind ``sdim-classifier``.
    data_dir : path-like, optional
        Data folder (default ``$PPL_AUDIT_DATA``).
    device : str or torch.device
    progress : callable, optional

    Returns
    -------
    TrainResult
        ``metrics``: ``test_accuracy``, ``train_accuracy``, per stored
        percentile ``q`` the test set's ``test_kept_accuracy_pQ`` and
        ``test_rejection_rate_pQ`` (the paper's Table 2), ``num_train``,
        ``num_test``, ``threshold_fallback_classes``, ``seconds``;
        ``history``: per-epoch loss terms and accuracies.

    Raises
    ------
    ModelOutputError
        The loss became NaN or infinite (the message names the epoch and step).

    Examples
    --------
    >>> from ppl_audit.training import as_card
    >>> card = as_card("mnist-sdim").with_overrides(data={"train_split": "test", "num_train": 20},
    ...                                              training={"epochs": 1})
    >>> train_sdim(card, data_dir="tests/fixtures/data", device="cpu").metrics["num_train"]  # doctest: +SKIP
    20
    """
    config = SDIMConfig.from_card(card)
    data = DataConfig.from_card(card)
    device = resolve_device(device)
    watch = Stopwatch()
    train, test = load_training_data(data, data_dir, device)
    with seeded(config.seed):
        module = _network(config).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.Adam(module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.learning_rate, total_steps=total)
    terms = ("mi", "nll", "margin")
    history = {**{f"train_{t}": [] for t in terms}, "train_accuracy": [], "test_accuracy": []}
    step = 0
    module.train()
    for epoch in range(config.epochs):
        sums, correct, seen = dict.fromkeys(terms, 0.0), 0, 0
        for idx in minibatches(len(train), config.batch_size, generator, device):
            if len(idx) < 2:  # a lone last image has no negative pair (and breaks batch norm)
                continue
            x = random_shift(train.images[idx], config.augment_shift_pixels, generator)
            y = train.labels[idx]
            out = module.losses(x, y, config.margin, config.per_dimension)
            loss = config.mi_weight * out["mi"] + config.nll_weight * out["nll"] + config.margin_weight * out["margin"]
            if not torch.isfinite(loss):
                raise ModelOutputError(
                    f"SDIM training diverged: loss {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                    f"(mi {out['mi'].item():.4g}, nll {out['nll'].item():.4g}, margin {out['margin'].item():.4g}); "
                    "lower [training] learning_rate or the loss weights")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            for t in terms:
                sums[t] += float(out[t].detach()) * len(idx)
            correct += int((out["log_likelihoods"].detach().argmax(-1) == y).sum())
            seen += len(idx)
            step += 1
            report(progress, TRAINING_TASK, step, total)
        for t in terms:
            history[f"train_{t}"].append(sums[t] / max(seen, 1))
        history["train_accuracy"].append(correct / max(seen, 1))
        test_ll = batched_log_likelihoods(module, test.images)
        history["test_accuracy"].append(float((test_ll.argmax(1) == test.labels).float().mean()))
    module.eval()
    train_ll = batched_log_likelihoods(module, train.images)
    thresholds, fell_back = thresholds_from_log_likelihoods(train_ll, train.labels, PERCENTILES)
    module.thresholds.copy_(thresholds)
    test_ll = batched_log_likelihoods(module, test.images)
    metrics = {
        "test_accuracy": float((test_ll.argmax(1) == test.labels).float().mean()),
        "train_accuracy": float((train_ll.argmax(1) == train.labels).float().mean()),
    }
    for k, q in enumerate(PERCENTILES):
        row = _selective_numbers(test_ll, test.labels, module.thresholds[k])
        metrics[f"test_kept_accuracy_p{q}"] = row["accuracy_kept"] if row["accuracy_kept"] is not None else 0.0
        metrics[f"test_rejection_rate_p{q}"] = row["rejection_rate"]
    metrics.update({"num_train": len(train), "num_test": len(test), "threshold_fallback_classes": fell_back,
                    "seconds": float(watch)})
    train_label = "train (running, augmented)" if config.augment_shift_pixels else "train (running)"
    loss_title = "loss terms (nats per image" + ("; NLL and margin per dimension)" if config.per_dimension else ")")
    curves = {
        "unit": "epoch",
        "panels": {
            loss_title: {f"{train_label}: -I_JSD": history["train_mi"],
                         f"{train_label}: NLL": history["train_nll"],
                         f"{train_label}: likelihood margin": history["train_margin"]},
            "accuracy": {train_label: history["train_accuracy"], "test": history["test_accuracy"]},
        },
    }
    return TrainResult(module.cpu(), metrics, curves)


def _classifier(trained) -> SDIMClassifier:
    """The loaded SDIM as a classifier of the ten digits with its rejection rule."""
    return SDIMClassifier(trained.module, MNIST_CLASS_NAMES)


TRAINER = Trainer(
    kind=KIND,
    build=build_sdim,
    train=train_sdim,
    wrap=_classifier,
    headline=("test_accuracy", "test accuracy"),
    description="SDIM generative classifier with rejection (ResNet encoder, class-conditional Gaussians)",
)


# --------------------------------------------------------------------------- the classifier and detector


def check_percentile(percentile) -> int:
    """Return the row of ``percentile`` among the stored :data:`PERCENTILES`, else raise.

    Examples
    --------
    >>> check_percentile(2)
    1
    >>> check_percentile(3)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: percentile must be one of the stored thresholds' (1, 2), got 3
    """
    if isinstance(percentile, bool) or percentile not in PERCENTILES:
        raise InvalidInputError(f"percentile must be one of the stored thresholds' {PERCENTILES}, got {percentile!r}")
    return PERCENTILES.index(percentile)


@dataclass(frozen=True)
class SelectivePrediction:
    """What :meth:`SDIMClassifier.predict` returns.

    Attributes
    ----------
    labels : torch.Tensor
        ``(N,)``: ``argmax_c log p(f(x) | c)``.
    kept : torch.Tensor
        ``(N,)`` boolean: ``max log-likelihood >= threshold of the predicted class``.
    max_log_likelihood : torch.Tensor
        ``(N,)`` in nats.
    threshold : torch.Tensor
        ``(N,)``: the predicted class's threshold.
    """

    labels: torch.Tensor
    kept: torch.Tensor
    max_log_likelihood: torch.Tensor
    threshold: torch.Tensor

    def __iter__(self):
        """Unpacks as ``(labels, kept, max_log_likelihood)``."""
        return iter((self.labels, self.kept, self.max_log_likelihood))


class SDIMClassifier(Classifier):
    """A trained :class:`SDIM` behind the Classifier contract, with the reject option.

    ``probs(x)`` is the softmax of the class log-likelihoods: the posterior
    ``p(c | f(x))`` under a uniform class prior.

    Parameters
    ----------
    module : SDIM
    class_names : sequence of str
        Default ``"0"`` .. ``"9"``.
    chunk_size : int
        Images per forward pass.

    Examples
    --------
    >>> net = SDIM(channels=(2, 2, 2), representation_dim=3, mi_units=2)
    >>> _ = fit_thresholds(net, torch.rand(20, 1, 28, 28), torch.arange(20) % 10)
    >>> clf = SDIMClassifier(net)
    >>> clf.probs(torch.rand(4, 1, 28, 28)).sum(1).allclose(torch.ones(4))
    True
    >>> labels, kept, best = clf.predict(torch.rand(4, 1, 28, 28), percentile=1)
    >>> labels.shape, kept.dtype
    (torch.Size([4]), torch.bool)
    """

    differentiable = True

    def __init__(self, module: SDIM, class_names: Sequence[str] = MNIST_CLASS_NAMES, *,
                 chunk_size: int = DEFAULT_CHUNK_SIZE):
        if len(class_names) != module.num_classes:
            raise InvalidInputError(f"{len(class_names)} class names for a {module.num_classes}-class SDIM")
        if not is_positive_int(chunk_size):
            raise InvalidInputError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        self.module = module.eval()
        self.class_names = tuple(class_names)
        self.chunk_size = int(chunk_size)

    def log_likelihoods(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(f(x) | c)``, ``(N, C)`` in nats, on ``x``'s device (chunked)."""
        check_images(x, IMAGE_SHAPE)
        first = next(self.module.parameters())
        if first.device != x.device:
            self.module.to(x.device)
        self.module.eval()
        parts = [self.module.log_likelihoods(chunk) for chunk in x.split(self.chunk_size)]
        return torch.cat(parts) if parts else x.new_zeros((0, self.num_classes))

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """``softmax_c log p(f(x) | c)``, ``(N, C)``."""
        return torch.softmax(self.log_likelihoods(x), dim=-1)

    def thresholds(self, percentile: int = 1) -> torch.Tensor:
        """Per-class thresholds ``(C,)`` at a stored percentile (1 or 2).

        Raises
        ------
        InvalidInputError
            ``percentile`` is not stored, or the thresholds were never fitted.
        """
        row = check_percentile(percentile)
        t = self.module.thresholds[row]
        if not torch.isfinite(t).all():
            raise InvalidInputError("this SDIM's rejection thresholds were never fitted; train it with train_sdim "
                                    "or call fit_thresholds(module, train_images, train_labels)")
        return t

    def predict(self, x: torch.Tensor, percentile: int = 1) -> SelectivePrediction:
        """Labels, the kept mask and the best log-likelihood: unpacks as ``(labels, kept, max_ll)``.

        An image is kept when ``max_c log p(f(x) | c) >= t_{argmax}``.
        """
        t = self.thresholds(percentile)
        with torch.no_grad():
            best, labels = self.log_likelihoods(x).max(1)
        threshold = t.to(x.device)[labels]
        return SelectivePrediction(labels, best >= threshold, best, threshold)


# --------------------------------------------------------------------------- the paper's tables


def selective_table(classifier: SDIMClassifier, images: torch.Tensor, labels: torch.Tensor,
                    percentiles: Sequence[int] = PERCENTILES) -> list[dict]:
    """The paper's Table 2: accuracy on all and on the kept images, and the rejection rate.

    Parameters
    ----------
    classifier : SDIMClassifier
    images : torch.Tensor
        ``(N, 1, 28, 28)`` in ``[0, 1]``.
    labels : torch.Tensor
        ``(N,)`` true classes.
    percentiles : sequence of int
        Stored percentiles (1, 2).

    Returns
    -------
    list of dict
        One row per percentile: ``percentile``, ``num_images``, ``num_kept``,
        ``accuracy_all``, ``accuracy_kept`` (None when nothing is kept) and
        ``rejection_rate`` (fractions, not percent).

    Raises
    ------
    InvalidInputError
        Empty images, images and labels of different lengths, labels out of
        range, bad images, or a percentile that is not stored.

    Examples
    --------
    >>> net = SDIM(channels=(2, 2, 2), representation_dim=3, mi_units=2)
    >>> _ = fit_thresholds(net, torch.rand(20, 1, 28, 28), torch.arange(20) % 10)
    >>> rows = selective_table(SDIMClassifier(net), torch.rand(6, 1, 28, 28), torch.arange(6))
    >>> [r["percentile"] for r in rows], 0 <= rows[0]["rejection_rate"] <= 1
    ([1, 2], True)
    """
    check_images(images, IMAGE_SHAPE)
    _check_labelled(images, labels, classifier.num_classes)
    rows_t = [classifier.thresholds(q) for q in percentiles]  # validates every percentile first
    with torch.no_grad():
        ll = classifier.log_likelihoods(images)
    labels = labels.to(ll.device)
    return [{"percentile": q, **_selective_numbers(ll, labels, t.to(ll.device))} for q, t in zip(percentiles, rows_t)]


def ood_rejection_rate(classifier: SDIMClassifier, images: torch.Tensor, percentile: int = 1) -> float:
    """The paper's Table 3: the fraction of out-of-distribution images rejected.

    Raises
    ------
    InvalidInputError
        Empty or bad images, or a percentile that is not stored.

    Examples
    --------
    >>> net = SDIM(channels=(2, 2, 2), representation_dim=3, mi_units=2)
    >>> _ = fit_thresholds(net, torch.rand(20, 1, 28, 28), torch.arange(20) % 10)
    >>> 0.0 <= ood_rejection_rate(SDIMClassifier(net), torch.rand(5, 1, 28, 28)) <= 1.0
    True
    """
    check_images(images, IMAGE_SHAPE)
    if images.shape[0] == 0:
        raise InvalidInputError("images are empty: at least one is needed")
    return float((~classifier.predict(images, percentile).kept).float().mean())


# --------------------------------------------------------------------------- loading


__all__ = [
    "DEFAULT_CARD",
    "KIND",
    "PERCENTILES",
    "SDIM",
    "SDIMClassifier",
    "SDIMConfig",
    "SelectivePrediction",
    "TRAINER",
    "build_sdim",
    "fit_thresholds",
    "gaussian_log_likelihoods",
    "jsd_mi_estimate",
    "margin_loss",
    "ood_rejection_rate",
    "percentile_threshold",
    "selective_table",
    "thresholds_from_log_likelihoods",
    "train_sdim",
]
