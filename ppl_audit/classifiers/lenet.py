"""LeNet-5 for MNIST: the classifier of the level-set paper's MNIST experiments.

The network is LeCun et al. (1998)'s LeNet-5 layout (two 5x5 convolutions
with 6 and 16 maps, then 120-84-10 fully connected units) in its modern form:
ReLU and max-pooling instead of scaled tanh and trainable sub-sampling, and a
plain linear output instead of RBF units. It is trained by the card
``models/mnist-lenet5.toml`` (kind ``lenet-classifier``) through
:func:`ppl_audit.training.load_model`, whose ``.model`` is the network as a
:class:`~ppl_audit.classifiers.cnn.TorchClassifier` with class names
``"0"`` .. ``"9"``.

Examples
--------
>>> LeNet5()(torch.zeros(2, 1, 28, 28)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ppl_audit._device import resolve_device
from ppl_audit.cards import ModelCard
from ppl_audit.classifiers.cnn import TorchClassifier
from ppl_audit.classifiers.pooling import MaxPool2x2
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
from ppl_audit.validators import is_non_negative_int, is_positive_int

KIND = "lenet-classifier"  # the [model] kind of LeNet cards
DEFAULT_CARD = "mnist-lenet5"
MNIST_CLASS_NAMES = tuple(str(d) for d in range(10))  # label d is the digit d
MNIST_PIXEL_MEAN = 0.1307  # MNIST training-set pixel mean: inputs are standardised inside the network
MNIST_PIXEL_STD = 0.3081  # MNIST training-set pixel standard deviation
IMAGE_SIDE = 28  # LeNet-5 here takes MNIST's 28 x 28 grey images (padding 2 gives LeCun's 32 x 32 view)
TRAINING_TASK = "training LeNet-5"  # progress task name


class LeNet5(nn.Module):
    """LeNet-5 on ``(N, 1, 28, 28)`` images in ``[0, 1]``; returns logits ``(N, K)``.

    Parameters
    ----------
    num_classes : int
    conv_channels : (int, int)
        Maps of the two 5x5 convolutions (LeCun: 6, 16).
    hidden : (int, int)
        Units of the two hidden fully connected layers (LeCun: 120, 84).

    Examples
    --------
    >>> net = LeNet5(conv_channels=(4, 8), hidden=(16, 12))
    >>> net(torch.rand(3, 1, 28, 28)).shape
    torch.Size([3, 10])
    """

    def __init__(self, num_classes: int = 10, conv_channels=(6, 16), hidden=(120, 84)):
        super().__init__()
        c1, c2 = conv_channels
        h1, h2 = hidden
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, kernel_size=5, padding=2),  # 28 -> 28 (LeCun's 32 x 32 input)
            nn.ReLU(),
            MaxPool2x2(),  # -> 14
            nn.Conv2d(c1, c2, kernel_size=5),  # -> 10
            nn.ReLU(),
            MaxPool2x2(),  # -> 5
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * 5 * 5, h1),
            nn.ReLU(),
            nn.Linear(h1, h2),
            nn.ReLU(),
            nn.Linear(h2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, K)`` of images ``(N, 1, 28, 28)`` in ``[0, 1]``."""
        return self.classifier(self.features((x - MNIST_PIXEL_MEAN) / MNIST_PIXEL_STD))


def check_layer_sizes(config) -> None:
    """Check a LeNet config's ``conv_channels`` and ``hidden``: two positive integers each.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> check_layer_sizes(SimpleNamespace(conv_channels=(6,), hidden=(120, 84)))
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: conv_channels must be two positive integers, e.g. [6, 16], got (6,)
    """
    for name in ("conv_channels", "hidden"):
        value = getattr(config, name)
        check_field(isinstance(value, tuple) and len(value) == 2 and all(map(is_positive_int, value)),
                    name, value, "two positive integers, e.g. [6, 16]")


@dataclass(frozen=True)
class LeNetConfig(CardConfig):
    """The ``[architecture]`` and ``[training]`` keys of a LeNet card.

    Parameters
    ----------
    type : str
        Must be ``"lenet5"``.
    conv_channels, hidden : (int, int)
        See :class:`LeNet5`.
    epochs, batch_size : int
    learning_rate : float
        Peak learning rate of Adam under a one-cycle schedule.
    weight_decay : float
        Adam's L2 penalty (0: none).
    augment_shift_pixels : int
        Shift each training image by up to this many pixels in x and y (0: no
        augmentation); the empty border is black, like MNIST's.
    seed : int
        Seeds the weight initialisation, the shuffling and the shifts.

    Examples
    --------
    >>> LeNetConfig(epochs=0)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: epochs must be a positive integer, got 0
    """

    type: str = "lenet5"
    conv_channels: tuple[int, int] = (6, 16)
    hidden: tuple[int, int] = (120, 84)
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    augment_shift_pixels: int = 0
    seed: int = 0

    TYPE = 'lenet5'

    def __post_init__(self):
        super().__post_init__()
        check_layer_sizes(self)
        check_field(isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0, "weight_decay",
                    self.weight_decay, "a number >= 0")
        check_augment_shift(self)


def build_lenet(card: ModelCard) -> LeNet5:
    """The untrained network a LeNet card describes (validates the card).

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> type(build_lenet(load_card("mnist-lenet5"))).__name__
    'LeNet5'
    """
    config = LeNetConfig.from_card(card)
    DataConfig.from_card(card)  # validate [data] before any training starts
    return LeNet5(len(MNIST_CLASS_NAMES), config.conv_channels, config.hidden)


def check_augment_shift(config) -> None:
    """Check a config's ``augment_shift_pixels``: an integer shift in ``0..13`` (0: no augmentation).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> check_augment_shift(SimpleNamespace(augment_shift_pixels=True))
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: augment_shift_pixels must be an integer in 0..13, got True
    """
    value = config.augment_shift_pixels
    check_field(is_non_negative_int(value) and value < IMAGE_SIDE // 2,
                "augment_shift_pixels", value, f"an integer in 0..{IMAGE_SIDE // 2 - 1}")


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by its own random integer offset in ``[-max_shift, max_shift]``^2.

    Pixels shifted in are 0 (black). One gather for the whole batch.

    Examples
    --------
    >>> x = torch.zeros(1, 1, 28, 28); x[0, 0, 10, 10] = 1
    >>> float(random_shift(x, 2, torch.Generator().manual_seed(0)).sum())
    1.0
    """
    if max_shift == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device)[None, :] + offsets[0][:, None]  # (n, h)
    cols = torch.arange(w, device=x.device)[None, :] + offsets[1][:, None]  # (n, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    channels_last = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (n, h, w, c)
    return channels_last.permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def evaluate(module: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy in nats)`` of ``module`` on a labelled batch, chunked.

    Examples
    --------
    >>> acc, nll = evaluate(LeNet5(), torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
    >>> 0 <= acc <= 1 and nll > 0
    True
    """
    was_training = module.training
    module.eval()
    correct, nll = 0, 0.0
    for x, y in zip(images.split(EVAL_CHUNK), labels.split(EVAL_CHUNK)):
        logits = module(x)
        correct += int((logits.argmax(-1) == y).sum())
        nll += float(F.cross_entropy(logits, y, reduction="sum"))
    module.train(was_training)
    return correct / len(labels), nll / len(labels)


def train_lenet(card: ModelCard, *, data_dir=None, device="auto", progress: ProgressFn | None = None) -> TrainResult:
    """Train a LeNet card's network on its dataset (Adam, one-cycle schedule, cross-entropy).

    Parameters
    ----------
    card : ModelCard
        Kind ``lenet-classifier``.
    data_dir : path-like, optional
        Data folder (default ``$PPL_AUDIT_DATA``).
    device : str or torch.device
    progress : callable, optional

    Returns
    -------
    TrainResult
        ``metrics``: ``test_accuracy``, ``test_nll_nats``, ``train_accuracy``,
        ``num_train``, ``num_test``, ``seconds``; ``history``: per-epoch
        cross-entropy and accuracy, train and test.

    Examples
    --------
    >>> from ppl_audit.training import as_card
    >>> card = as_card("mnist-lenet5").with_overrides(data={"train_split": "test", "num_train": 20},
    ...                                                training={"epochs": 1})
    >>> train_lenet(card, data_dir="tests/fixtures/data", device="cpu").metrics["num_train"]  # doctest: +SKIP
    20
    """
    config = LeNetConfig.from_card(card)
    data = DataConfig.from_card(card)
    device = resolve_device(device)
    watch = Stopwatch()
    train, test = load_training_data(data, data_dir, device)
    with seeded(config.seed):
        module = LeNet5(len(MNIST_CLASS_NAMES), config.conv_channels, config.hidden).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.Adam(module.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.learning_rate, total_steps=total)
    history = {"train_loss": [], "train_accuracy": [], "test_loss": [], "test_accuracy": []}
    step = 0
    module.train()
    for _ in range(config.epochs):
        loss_sum, correct = 0.0, 0
        for idx in minibatches(len(train), config.batch_size, generator, device):
            x = random_shift(train.images[idx], config.augment_shift_pixels, generator)
            logits = module(x)
            loss = F.cross_entropy(logits, train.labels[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(-1) == train.labels[idx]).sum())
            step += 1
            report(progress, TRAINING_TASK, step, total)
        history["train_loss"].append(loss_sum / len(train))
        history["train_accuracy"].append(correct / len(train))
        test_accuracy, test_loss = evaluate(module, test.images, test.labels)
        history["test_loss"].append(test_loss)
        history["test_accuracy"].append(test_accuracy)
    module.eval()
    train_accuracy, _ = evaluate(module, train.images, train.labels)
    metrics = {
        "test_accuracy": history["test_accuracy"][-1],
        "test_nll_nats": history["test_loss"][-1],
        "train_accuracy": train_accuracy,
        "num_train": len(train),
        "num_test": len(test),
        "seconds": float(watch),
    }
    train_label = "train (running, augmented)" if config.augment_shift_pixels else "train (running)"
    curves = {
        "unit": "epoch",
        "panels": {
            "cross-entropy (nats per image)": {train_label: history["train_loss"], "test": history["test_loss"]},
            "accuracy": {train_label: history["train_accuracy"], "test": history["test_accuracy"]},
        },
    }
    return TrainResult(module.cpu(), metrics, curves)


def _classifier(trained) -> TorchClassifier:
    """The loaded LeNet-5 as a classifier of the ten digits (``trained.model``)."""
    return TorchClassifier(trained.module, MNIST_CLASS_NAMES)


TRAINER = Trainer(
    kind=KIND,
    build=build_lenet,
    train=train_lenet,
    wrap=_classifier,
    headline=("test_accuracy", "test accuracy"),
    description="LeNet-5 classifier of 28 x 28 digit images",
)


__all__ = [
    "DEFAULT_CARD",
    "KIND",
    "MNIST_CLASS_NAMES",
    "LeNet5",
    "LeNetConfig",
    "TRAINER",
    "build_lenet",
    "evaluate",
    "random_shift",
    "train_lenet",
]
