"""The built-in world's classifier: trained on first use, then cached.

:func:`load_house_rocket_classifier` returns the classifier described by the
model card ``models/house-rocket-cnn.toml``; the first call trains it
(16,000 renders, under a minute on 2 CPU cores) and stores the weights in the
cache, later calls load them. A corrupt cache entry is detected by checksum
and rebuilt, never unpickled.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ppl_audit._device import resolve_device
from ppl_audit.cache import cache_dir, check_sidecar_info, load_weights, save_weights
from ppl_audit.cards import ModelCard, load_card
from ppl_audit.classifiers.cnn import PatchCNN, TorchClassifier
from ppl_audit.errors import AuditFileError, WeightsError
from ppl_audit.priors.house_rocket import CLASS_NAMES, make_world
from ppl_audit.progress import ProgressFn, report
from ppl_audit.training import (
    Trainer,
    TrainResult,
    check_cache_destination,
    check_cache_entry_place,
    refuse_missed_expectations,
)
from ppl_audit.validators import check_count, check_fits_in_memory, check_real, check_seed

logger = logging.getLogger(__name__)

DEFAULT_CARD = "house-rocket-cnn"
# Documented bounds of the card's counts: 60x the shipped card's renders, 256x its widths, 1,000x its epochs.
RECIPE_BOUNDS = (("data", "num_train", 1_000_000), ("data", "num_test", 1_000_000), ("training", "epochs", 10_000),
                 ("training", "batch_size", 100_000), ("architecture", "channels", 4096),
                 ("architecture", "hidden", 16_384))
MAX_LEARNING_RATE = 10.0  # Adam steps of 10 already diverge; above it a card is a typo
RENDER_BYTES = 4 * 64 * 64  # one float32 64 x 64 render
_EVAL_CHUNK = 512  # images per evaluation pass


@dataclass(frozen=True)
class _Recipe:
    """The card's fields this trainer reads, validated."""

    world: str
    num_train: int
    num_test: int
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    channels: int
    hidden: int

    @classmethod
    def from_card(cls, card: ModelCard) -> "_Recipe":
        if card.architecture.get("type") != "patch-cnn":
            raise AuditFileError(f"{card.source}: [architecture] type must be 'patch-cnn'")
        where = card.source or card.name
        try:
            recipe = cls(
                world=card.data.get("world", "house-rocket"),
                num_train=card.data["num_train"],
                num_test=card.data["num_test"],
                epochs=card.training["epochs"],
                batch_size=card.training["batch_size"],
                learning_rate=card.training["learning_rate"],
                seed=card.training["seed"],
                channels=card.architecture.get("channels", 32),
                hidden=card.architecture.get("hidden", 64),
            )
        except KeyError as exc:
            raise AuditFileError(f"{where}: missing key {exc.args[0]!r}") from exc
        if not isinstance(recipe.world, str):
            raise AuditFileError(f"{where}: [data] world must be a string, got {recipe.world!r}")
        for table, name, bound in RECIPE_BOUNDS:
            check_count(getattr(recipe, name), f"{where}: [{table}] {name}", bound, error=AuditFileError)
        check_real(recipe.learning_rate, f"{where}: [training] learning_rate", 0, MAX_LEARNING_RATE, low_open=True,
                   error=AuditFileError)
        check_seed(recipe.seed, f"{where}: [training] seed", error=AuditFileError)
        # Every rendered image is held at once (64 x 64 float32) for training and testing.
        check_fits_in_memory(RENDER_BYTES * (recipe.num_train + recipe.num_test), f"{where}: rendering the images",
                             error=AuditFileError)
        return recipe


def _build_module(recipe: _Recipe) -> PatchCNN:
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
    recipe = _Recipe.from_card(card)
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


def load_house_rocket_classifier(
    card: ModelCard | str | None = None,
    *,
    cache: str | None = None,
    device="auto",
    progress: ProgressFn | None = None,
    retrain: bool = False,
) -> TorchClassifier:
    """The built-in world's classifier, trained and cached on first use.

    Parameters
    ----------
    card : ModelCard or str, optional
        The recipe (default: the shipped ``house-rocket-cnn`` card).
    cache : str, optional
        Cache folder (default ``$PPL_AUDIT_CACHE`` or ``~/.cache/ppl-audit``).
    device : str
        Where the returned classifier runs.
    progress : callable, optional
        Receives training progress.
    retrain : bool
        Ignore a cached entry and train again.

    Returns
    -------
    TorchClassifier
        Its ``info`` attribute holds the card's name, recipe hash and metrics.

    Raises
    ------
    InvalidInputError
        Training is needed and the cache folder cannot be written (checked before training).
    WeightsError
        Something other than a file lies where the weights belong, or training ended with non-finite weights.
    TrainingError
        The freshly trained classifier misses the card's ``[expected]`` bounds; nothing is cached.

    Examples
    --------
    >>> clf = load_house_rocket_classifier()  # doctest: +SKIP
    >>> clf.class_names  # doctest: +SKIP
    ('rocket', 'house')
    """
    card = load_card(card or DEFAULT_CARD) if not isinstance(card, ModelCard) else card
    recipe = _Recipe.from_card(card)
    path = card.cache_path(cache_dir(cache))
    check_cache_entry_place(path, card.name)
    module = _build_module(recipe)
    info = None
    if path.exists() and not retrain:
        try:
            state, info = load_weights(path)
            module.load_state_dict(state)
            check_sidecar_info(info, card.recipe_hash, path)  # an edited sidecar's numbers never reach a report
        except (WeightsError, RuntimeError) as exc:
            logger.warning("cached classifier is unusable (%s); rebuilding it", exc)
            info = None
    if info is None:
        check_cache_destination(path)  # a cache that is a file or read-only is refused before, not after, training
        module, metrics = train_house_rocket_classifier(card, progress=progress)
        info = {"card": card.name, "recipe_hash": card.recipe_hash, "recipe": card.recipe, "metrics": metrics}
        refuse_missed_expectations(card, metrics)  # a classifier below the card's floor is never cached
        save_weights(path, module.state_dict(), info)
    classifier = TorchClassifier(module.to(resolve_device(device)), CLASS_NAMES)
    classifier.info = info
    classifier.weights_path = path
    return classifier


# --------------------------------------------------------------------------- the card kind


def _build_from_card(card: ModelCard) -> PatchCNN:
    return _build_module(_Recipe.from_card(card))


def _train_from_card(card: ModelCard, *, data_dir=None, device="auto", progress=None) -> TrainResult:
    # CPU, as load_house_rocket_classifier trains it: both loaders share cache entries.
    module, metrics = train_house_rocket_classifier(card, device="cpu", progress=progress)
    history = {"unit": "epoch", "panels": {"cross-entropy (nats per image)": {"train": metrics["loss_per_epoch"]}}}
    return TrainResult(module, metrics, history)


TRAINER = Trainer(
    kind="house-rocket-classifier",
    build=_build_from_card,
    train=_train_from_card,
    headline=("test_accuracy", "test accuracy"),
    description="patchify CNN on the house/rocket renders (no data folder needed)",
)

__all__ = ["TRAINER", "load_house_rocket_classifier", "train_house_rocket_classifier"]
