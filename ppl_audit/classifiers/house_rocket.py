"""The built-in world's classifier: trained on first use, then cached.

``load_model("house-rocket-cnn").model`` is the classifier described by the
model card ``models/house-rocket-cnn.toml`` (kind ``house-rocket-classifier``,
registered here); the first call trains it
(16,000 renders, under a minute on 2 CPU cores) and stores the weights in the
cache, later calls load them. A corrupt cache entry is detected by checksum
and rebuilt, never unpickled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ppl_audit._device import resolve_device
from ppl_audit.cards import ModelCard
from ppl_audit.classifiers.cnn import PatchCNN, TorchClassifier
from ppl_audit.priors.house_rocket import CLASS_NAMES, make_world
from ppl_audit.progress import ProgressFn, report
from ppl_audit.training import CardConfig, Trainer, TrainResult, check_field
from ppl_audit.validators import check_count, check_fits_in_memory, check_real, check_seed


# Documented bounds of the card's counts: 60x the shipped card's renders, 256x its widths, 1,000x its epochs.
RECIPE_BOUNDS = (("data", "num_train", 1_000_000), ("data", "num_test", 1_000_000), ("training", "epochs", 10_000),
                 ("training", "batch_size", 100_000), ("architecture", "channels", 4096),
                 ("architecture", "hidden", 16_384))
MAX_LEARNING_RATE = 10.0  # Adam steps of 10 already diverge; above it a card is a typo
RENDER_BYTES = 4 * 64 * 64  # one float32 64 x 64 render
_EVAL_CHUNK = 512  # images per evaluation pass


@dataclass(frozen=True)
class HouseRocketConfig(CardConfig):
    """The ``[architecture]``, ``[data]`` and ``[training]`` keys of a ``house-rocket-classifier`` card.

    The counts are bounded (``RECIPE_BOUNDS``) and the renders must fit in
    memory, all checked before anything is rendered.

    Examples
    --------
    >>> HouseRocketConfig(num_train=10, num_test=10, epochs=1, batch_size=8, learning_rate=20.0, seed=0)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: [training] learning_rate must be a number in (0, 10], got 20.0
    """

    num_train: int
    num_test: int
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    type: str = "patch-cnn"
    channels: int = 32
    hidden: int = 64
    world: str = "house-rocket"

    TABLES = ("architecture", "data", "training")
    TYPE = "patch-cnn"
    POSITIVE_INTEGERS = ()  # bounded below, with the table named, by RECIPE_BOUNDS

    def __post_init__(self):
        # The bounded checks name the table and the range, so they speak before the shared ones.
        check_field(isinstance(self.world, str), "[data] world", self.world, "a string")
        for table, name, bound in RECIPE_BOUNDS:
            check_count(getattr(self, name), f"[{table}] {name}", bound)
        check_real(self.learning_rate, "[training] learning_rate", 0, MAX_LEARNING_RATE, low_open=True)
        check_seed(self.seed, "[training] seed")
        super().__post_init__()
        # Every rendered image is held at once (64 x 64 float32) for training and testing.
        check_fits_in_memory(RENDER_BYTES * (self.num_train + self.num_test), "rendering the images")


def _build_module(recipe: HouseRocketConfig) -> PatchCNN:
    return PatchCNN(len(CLASS_NAMES), channels=recipe.channels, hidden=recipe.hidden)


@torch.no_grad()
def _accuracy(module, world, z, labels) -> float:
    correct = 0
    for zc, yc in zip(z.split(_EVAL_CHUNK), labels.split(_EVAL_CHUNK)):
        correct += int((module(world.decode(zc)).argmax(-1) == yc).sum())
    return correct / len(labels)


def train_house_rocket_classifier(
    card: ModelCard, *, device="cpu", progress: ProgressFn | None = None
) -> tuple[PatchCNN, dict[str, Any]]:
    """Train the card's CNN on fresh renders of the world.

    Images are rendered batch by batch from a fixed set of ``num_train``
    latents (so memory stays small); the test accuracy is measured on
    ``num_test`` renders drawn with another seed.

    Returns
    -------
    (module, metrics)
        ``metrics`` has ``test_accuracy``, ``train_accuracy``,
        ``loss_per_epoch`` and ``seconds``.
    """
    recipe = HouseRocketConfig.from_card(card)
    device = resolve_device(device)
    world = make_world(recipe.world, device=device)
    gen = torch.Generator(device=device).manual_seed(recipe.seed)
    z_train, y_train = world.sample_with_class(recipe.num_train, generator=gen)
    test_gen = torch.Generator(device=device).manual_seed(recipe.seed + 1)
    z_test, y_test = world.sample_with_class(recipe.num_test, generator=test_gen)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)  # weight initialisation only; global state restored after
        module = _build_module(recipe).to(device)
    optimiser = torch.optim.Adam(module.parameters(), lr=recipe.learning_rate)
    steps_per_epoch = -(-recipe.num_train // recipe.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=recipe.learning_rate, total_steps=recipe.epochs * steps_per_epoch
    )
    start = time.perf_counter()
    losses = []
    module.train()
    for epoch in range(recipe.epochs):
        order = torch.randperm(recipe.num_train, generator=gen, device=device)
        total = 0.0
        for step, idx in enumerate(order.split(recipe.batch_size)):
            with torch.no_grad():
                x = world.decode(z_train[idx])
            loss = F.cross_entropy(module(x), y_train[idx])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            total += float(loss.detach()) * len(idx)
            report(progress, "training classifier", epoch * steps_per_epoch + step + 1, recipe.epochs * steps_per_epoch)
        losses.append(total / recipe.num_train)
    module.eval()
    metrics = {
        "test_accuracy": _accuracy(module, world, z_test, y_test),
        "train_accuracy": _accuracy(module, world, z_train, y_train),
        "loss_per_epoch": losses,
        "seconds": time.perf_counter() - start,
    }
    return module.cpu(), metrics


# --------------------------------------------------------------------------- the card kind


def _build_from_card(card: ModelCard) -> PatchCNN:
    return _build_module(HouseRocketConfig.from_card(card))


def _train_from_card(card: ModelCard, *, data_dir=None, device="auto", progress=None) -> TrainResult:
    # Always on the CPU: the same card then gives the same cached weights whatever device audits run on.
    module, metrics = train_house_rocket_classifier(card, device="cpu", progress=progress)
    history = {"unit": "epoch", "panels": {"cross-entropy (nats per image)": {"train": metrics["loss_per_epoch"]}}}
    return TrainResult(module, metrics, history)


def _classifier(trained) -> TorchClassifier:
    return TorchClassifier(trained.module, CLASS_NAMES)


TRAINER = Trainer(
    kind="house-rocket-classifier",
    build=_build_from_card,
    train=_train_from_card,
    wrap=_classifier,
    headline=("test_accuracy", "test accuracy"),
    description="patchify CNN on the house/rocket renders (no data folder needed)",
)

__all__ = ["HouseRocketConfig", "TRAINER", "train_house_rocket_classifier"]
