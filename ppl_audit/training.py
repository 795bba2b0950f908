"""Card -> train -> cache: one mechanism for every model the toolkit builds.

A model card's ``[model] kind`` names a :class:`Trainer` in a registry. The
trainer builds the untrained module from the card (validating it), trains it
(reading its data through :mod:`ppl_audit.data` when it needs any) and says
how to present it. :func:`load_model` does the rest for every kind::

    card -> recipe hash -> CACHE/NAME-HASH.safetensors (+ .json sidecar)
         -> verified load (safetensors, sha256; never unpickled)
         -> or train; refuse (TrainingError, nothing cached) when an [expected] bound is missed; save

A corrupt cache entry (checksum, header or state-dict mismatch) is logged as a
warning and rebuilt. :func:`training_report` turns a loaded model into a
:class:`~ppl_audit.report.Report` (training curves, metrics against the card's
``[expected]`` table, and the trainer's own sections, such as sample grids).

Built-in kinds (see ``cards.TRAINER_VERSIONS``): ``house-rocket-classifier``,
``lenet-classifier`` (:mod:`ppl_audit.classifiers.lenet`), ``vae``
(:mod:`ppl_audit.generative.vae`) and ``gan`` (:mod:`ppl_audit.generative.gan`).
Their modules are imported only when a card of that kind is used.

Examples
--------
>>> sorted(registered_kinds())
['bayesian-lenet-classifier', 'class-gan', 'class-vae', 'gan', 'gan-ensemble', 'gwin', 'house-rocket-classifier', 'lenet-classifier', 'sdim-classifier', 'vae', 'vae-ensemble']
>>> trained = load_model("mnist-vae", data_dir="/path/to/data")  # doctest: +SKIP
>>> trained.module.decoder(torch.zeros(1, 5)).shape  # doctest: +SKIP
torch.Size([1, 1, 28, 28])
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ppl_audit._device import resolve_device
from ppl_audit.cache import cache_dir, check_sidecar_info, load_weights, save_weights
from ppl_audit.cards import TRAINER_VERSIONS, ModelCard, load_card
from ppl_audit.errors import AuditFileError, InvalidInputError, PplAuditError, TrainingError, WeightsError
from ppl_audit.paths import check_writable_destination
from ppl_audit.progress import ProgressFn
from ppl_audit.provenance import library_versions
from ppl_audit.validators import check_fits_in_memory
from ppl_audit.validators import (  # noqa: F401 - re-exported: trainers import them from here
    is_fraction,
    is_non_negative_int,
    is_positive_float,
    is_positive_int,
)

logger = logging.getLogger(__name__)

#: where each built-in kind's :class:`Trainer` lives (``module:attribute``), imported on first use
BUILTIN_TRAINERS = {
    "house-rocket-classifier": "ppl_audit.training:_house_rocket_trainer",
    "lenet-classifier": "ppl_audit.classifiers.lenet:TRAINER",
    "vae": "ppl_audit.generative.vae:TRAINER",
    "gan": "ppl_audit.generative.gan:TRAINER",
    "bayesian-lenet-classifier": "ppl_audit.classifiers.bayesian_lenet:TRAINER",
    "gwin": "ppl_audit.generative.gwin:TRAINER",
    "vae-ensemble": "ppl_audit.generative.vae_ensemble:TRAINER",
    "gan-ensemble": "ppl_audit.generative.gan_ensemble:TRAINER",
    "class-vae": "ppl_audit.generative.class_generators:VAE_TRAINER",
    "class-gan": "ppl_audit.generative.class_generators:GAN_TRAINER",
    "sdim-classifier": "ppl_audit.classifiers.sdim:TRAINER",
}
EXPECTED_MIN_PREFIX = "min_"  # [expected] min_KEY = v: metrics[KEY] must be >= v
EXPECTED_MAX_PREFIX = "max_"  # [expected] max_KEY = v: metrics[KEY] must be <= v
SECONDS_SUFFIX = "seconds"  # metrics named *seconds are wall-clock: report timings, not report.json
EVAL_CHUNK = 1000  # images per evaluation pass: large enough to be fast, small enough for any memory
DEFAULT_TRAIN_SPLIT, DEFAULT_TEST_SPLIT = "train", "test"  # [data] train_split / test_split defaults


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class TrainResult:
    """What a trainer returns: the trained module, scalar metrics and curves.

    Parameters
    ----------
    module : torch.nn.Module
        The trained module (any device; it is saved from the CPU).
    metrics : dict
        JSON-safe numbers (``test_accuracy``, ``test_elbo_nats``, ``seconds``...).
    history : dict
        Training curves: ``{"unit": "epoch", "panels": {TITLE: {SERIES: [values]}}}``;
        each panel becomes one line plot of the training report.
    """

    module: nn.Module
    metrics: dict[str, Any]
    history: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Trainer:
    """How one ``[model] kind`` is built, trained and presented.

    Parameters
    ----------
    kind : str
        The card kind; must be a key of ``cards.TRAINER_VERSIONS`` (whose
        version number enters the recipe hash).
    build : callable
        ``build(card) -> nn.Module``: the untrained module the card describes;
        raises :class:`~ppl_audit.errors.AuditFileError` for a bad card. Cached
        weights are loaded into it with a strict state-dict match.
    train : callable
        ``train(card, *, data_dir, device, progress) -> TrainResult``; must be
        seeded by the card so that the same card gives the same weights on the
        same machine.
    headline : tuple of str
        ``(metric key, label)`` the command line prints first, e.g.
        ``("test_accuracy", "test accuracy")``.
    report_sections : callable, optional
        ``report_sections(trained, data_dir=None) -> list[Section]``: extra
        report content (sample grids for generators). Called with a loaded
        model and the data folder the caller was given (``None``: the
        environment's), which a section may read or do without.
    description : str
        One line for listings.
    pin : callable, optional
        ``pin(card) -> card``: for a model trained against another model (a
        GWIN against its classifier), a copy of the card that records the
        other model's recipe hash, so that the cache key changes when the
        other model's recipe does. :func:`load_model` applies it first.
    needs_cache : bool
        Pass ``cache=`` (the cache folder given to :func:`load_model`) to
        ``train``, for trainers that load another cached model.
    """

    kind: str
    build: Callable[[ModelCard], nn.Module]
    train: Callable[..., TrainResult]
    headline: tuple[str, str]
    report_sections: Callable[["TrainedModel"], list] | None = None
    description: str = ""
    pin: Callable[[ModelCard], ModelCard] | None = None
    needs_cache: bool = False

    def __post_init__(self):
        if self.kind not in TRAINER_VERSIONS:
            raise ValueError(
                f"Trainer.kind={self.kind!r} has no entry in ppl_audit.cards.TRAINER_VERSIONS; "
                f"add one (known: {', '.join(sorted(TRAINER_VERSIONS))})"
            )
        if len(self.headline) != 2:
            raise ValueError(f"Trainer.headline must be (metric key, label), got {self.headline!r}")


_REGISTRY: dict[str, Trainer] = {}


def register_trainer(trainer: Trainer, *, replace: bool = False) -> Trainer:
    """Add a trainer to the registry under ``trainer.kind``.

    Parameters
    ----------
    trainer : Trainer
    replace : bool
        Allow replacing a registered trainer of the same kind.

    Returns
    -------
    Trainer
        ``trainer`` itself.

    Raises
    ------
    ValueError
        The kind is already registered and ``replace`` is False.

    Examples
    --------
    >>> register_trainer(get_trainer("vae"), replace=True).kind
    'vae'
    """
    if trainer.kind in _REGISTRY and not replace and _REGISTRY[trainer.kind] is not trainer:
        raise ValueError(f"a trainer for kind {trainer.kind!r} is already registered; pass replace=True")
    _REGISTRY[trainer.kind] = trainer
    return trainer


def registered_kinds() -> tuple[str, ...]:
    """Every kind a card may name: the registered trainers and the built-in ones.

    Examples
    --------
    >>> "lenet-classifier" in registered_kinds()
    True
    """
    return tuple(sorted(set(_REGISTRY) | set(BUILTIN_TRAINERS)))


def get_trainer(kind: str) -> Trainer:
    """The trainer of a card kind, importing a built-in one on first use.

    Raises
    ------
    AuditFileError
        No trainer is registered for ``kind``.

    Examples
    --------
    >>> get_trainer("lenet-classifier").headline
    ('test_accuracy', 'test accuracy')
    """
    if kind not in _REGISTRY and kind in BUILTIN_TRAINERS:
        module_name, attribute = BUILTIN_TRAINERS[kind].split(":")
        register_trainer(getattr(importlib.import_module(module_name), attribute))
    if kind not in _REGISTRY:
        raise AuditFileError(f"no trainer for model kind {kind!r}; registered kinds: {', '.join(registered_kinds())}")
    return _REGISTRY[kind]


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class TrainedModel:
    """A model built from a card: trained now or loaded from the cache.

    Attributes
    ----------
    module : torch.nn.Module
        In eval mode, on the requested device.
    card : ModelCard
        The recipe.
    info : dict
        ``card`` (name), ``recipe_hash``, ``recipe``, ``metrics`` and ``history``
        as stored in the cache sidecar.
    weights_path : pathlib.Path
        The verified safetensors file.
    """

    module: nn.Module
    card: ModelCard
    info: dict[str, Any]
    weights_path: Path

    @property
    def metrics(self) -> dict[str, Any]:
        """``info["metrics"]``."""
        return self.info.get("metrics", {})

    @property
    def trainer(self) -> Trainer:
        """The registered trainer of the card's kind."""
        return get_trainer(self.card.kind)


def as_card(card_or_name: ModelCard | str | os.PathLike) -> ModelCard:
    """A :class:`ModelCard` as is, else load one by shipped name or path.

    Examples
    --------
    >>> as_card("mnist-lenet5").kind
    'lenet-classifier'
    """
    return card_or_name if isinstance(card_or_name, ModelCard) else load_card(card_or_name)


def check_expected(card: ModelCard, metrics: Mapping[str, Any]) -> list[str]:
    """Sentences for every ``[expected] min_KEY`` / ``max_KEY`` the metrics miss.

    Examples
    --------
    >>> card = as_card("mnist-lenet5")
    >>> print(check_expected(card, {"test_accuracy": 0.5})[0])
    test_accuracy 0.5 is below the card's min_test_accuracy 0.99
    """
    problems = []
    for key, bound in card.expected.items():
        for prefix, worse, word in ((EXPECTED_MIN_PREFIX, float.__lt__, "below"),
                                    (EXPECTED_MAX_PREFIX, float.__gt__, "above")):
            if key.startswith(prefix) and isinstance(metrics.get(key[len(prefix):]), (int, float)):
                value = float(metrics[key[len(prefix):]])
                if math.isnan(value) or worse(value, float(bound)):
                    problems.append(f"{key[len(prefix):]} {value:.6g} is {word} the card's {key} {bound}")
    return problems


def check_cache_entry_place(path: Path, name: str) -> None:
    """Refuse a weights path that is something other than a file: a folder there is not the tool's to delete.

    Checked before the cached entry is read, so that the user sees this one line, not a rebuild warning first.

    Examples
    --------
    >>> check_cache_entry_place(Path("/tmp"), "toy")
    Traceback (most recent call last):
    ...
    ppl_audit.errors.WeightsError: /tmp is not a file, but ppl-audit keeps toy's weights there; move it away
    """
    if path.exists() and not path.is_file():
        raise WeightsError(f"{path} is not a file, but ppl-audit keeps {name}'s weights there; move it away")


def check_cache_destination(path: Path) -> None:
    """Refuse, before training, a cache folder the weights could not be written into (a file, read-only...)."""
    check_writable_destination(path.parent, "weights cache", write_inside=True)


def refuse_missed_expectations(card: ModelCard, metrics: Mapping[str, Any]) -> None:
    """Raise :class:`~ppl_audit.errors.TrainingError` when fresh metrics miss the card's ``[expected]`` bounds.

    Called after training and before saving, so that a model below its floor is never cached.

    Examples
    --------
    >>> refuse_missed_expectations(as_card("mnist-lenet5"), {"test_accuracy": 0.5})
    Traceback (most recent call last):
    ...
    ppl_audit.errors.TrainingError: training of mnist-lenet5 missed the card's [expected] bounds: test_accuracy 0.5 is below the card's min_test_accuracy 0.99; nothing was cached
    """
    problems = check_expected(card, metrics)
    if problems:
        raise TrainingError(f"training of {card.name} missed the card's [expected] bounds: {'; '.join(problems)}; "
                            "nothing was cached")


# Training holds weights, gradients and Adam's two moments: four float32 copies of every parameter.
TRAINING_BYTES_PER_PARAMETER = 4 * 4


def check_model_fits(trainer: Trainer, card: ModelCard) -> int:
    """The parameters of ``card``'s module, counted on the meta device (no memory), refused when
    training them would not fit in the memory available now.

    Raises
    ------
    AuditFileError
        Naming the card, its parameter count and the estimated bytes.
    PplAuditError
        Whatever the card's own validation raises.
    """
    try:
        with torch.device("meta"):
            module = trainer.build(card)
    except PplAuditError:
        raise
    except Exception:  # noqa: BLE001 - a builder that cannot run on the meta device: the real build checks
        return 0
    count = sum(p.numel() for p in module.parameters())
    check_fits_in_memory(count * TRAINING_BYTES_PER_PARAMETER, f"training model card {card.name!r} "
                         f"({count:,} parameters)", error=AuditFileError,
                         advice="make the card's layers narrower or fewer")
    return count


def load_model(
    card_or_name: ModelCard | str | os.PathLike,
    *,
    cache: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    device="auto",
    progress: ProgressFn | None = None,
    retrain: bool = False,
    kind: str | None = None,
) -> TrainedModel:
    """Load a model card's weights from the cache, training and caching them first if needed.

    Parameters
    ----------
    card_or_name : ModelCard, str or path-like
        A card, a shipped card's name (``"mnist-vae"``) or a ``.toml`` path.
    cache : path-like, optional
        Cache folder (default ``$PPL_AUDIT_CACHE`` or ``~/.cache/ppl-audit``).
    data_dir : path-like, optional
        Data folder for training (default ``$PPL_AUDIT_DATA``); not read when
        the weights are cached.
    device : str or torch.device
        Where training runs and the returned module lives (``"auto"``: CUDA
        when present).
    progress : callable, optional
        Receives training progress ``(task, done, total)``.
    retrain : bool
        Train again even when the cache holds valid weights.
    kind : str, optional
        The card kind the caller needs (``"gwin"``...); another kind raises.

    Returns
    -------
    TrainedModel

    Raises
    ------
    InvalidInputError
        The card is not of ``kind``.
    AuditFileError
        The card is malformed or its kind has no trainer.
    ppl_audit.data.DataNotFoundError
        Training is needed and the data is missing (the message lists the
        paths tried and how to give a data folder).
    TrainingError
        The freshly trained model misses a bound of the card's ``[expected]``
        table; nothing is cached.
    WeightsError
        Training ended with non-finite weights; nothing is cached.

    Examples
    --------
    >>> trained = load_model("mnist-lenet5", data_dir="/path/to/data")  # doctest: +SKIP
    >>> trained.metrics["test_accuracy"] > 0.99  # doctest: +SKIP
    True
    """
    card = as_card(card_or_name)
    if kind is not None and card.kind != kind:
        raise InvalidInputError(f"a {kind!r} model card is needed; {card.name!r} is of kind {card.kind!r}")
    trainer = get_trainer(card.kind)
    if trainer.pin is not None:
        card = trainer.pin(card)
    check_model_fits(trainer, card)
    module = trainer.build(card)  # validates the card before any file is touched
    path = card.cache_path(cache_dir(cache))
    check_cache_entry_place(path, card.name)
    info = None
    if path.exists() and not retrain:
        try:
            state, info = load_weights(path)
            module.load_state_dict(state)
            check_sidecar_info(info, card.recipe_hash, path)  # an edited sidecar's numbers never reach a report
        except (WeightsError, RuntimeError) as exc:
            logger.warning("cached weights of %s are unusable (%s); rebuilding them", card.name, exc)
            module, info = trainer.build(card), None
    elif path.exists():
        logger.info("retraining %s although %s exists", card.name, path)
    if info is None:
        check_cache_destination(path)  # before, not after, training
        resolve_device(device)
        extra = {"cache": cache} if trainer.needs_cache else {}
        result = trainer.train(card, data_dir=data_dir, device=device, progress=progress, **extra)
        module = result.module
        info = {
            "card": card.name,
            "recipe_hash": card.recipe_hash,
            "recipe": card.recipe,
            "metrics": result.metrics,
            "history": result.history,
        }
        refuse_missed_expectations(card, result.metrics)  # before saving: a model below its floor is never cached
        save_weights(path, module.state_dict(), info)
    module = module.to(resolve_device(device)).eval()
    return TrainedModel(module=module, card=card, info=info, weights_path=path)


# --------------------------------------------------------------------------- helpers for trainers


def card_config(cls, card: ModelCard, tables: Sequence[str]):
    """Build the frozen config dataclass ``cls`` from the card's tables.

    Every key of the named tables must be a field of ``cls`` (a typo is an
    error, never a silent default); fields the card leaves out keep their
    defaults; lists become tuples. ``cls.__post_init__`` validates and raises
    ``ValueError`` naming the field; that becomes an
    :class:`~ppl_audit.errors.AuditFileError` naming the card.

    Examples
    --------
    >>> from ppl_audit.classifiers.lenet import LeNetConfig
    >>> card_config(LeNetConfig, as_card("mnist-lenet5"), ("architecture", "training")).conv_channels
    (6, 16)
    """
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    where = card.source or card.name
    for table in tables:
        values = getattr(card, table)
        unknown = sorted(set(values) - names)
        if unknown:
            raise AuditFileError(f"{where}: unknown key(s) {unknown} in [{table}]; allowed: {sorted(names)}")
        kwargs.update({k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        raise AuditFileError(f"{where}: {exc}") from exc


def check_field(ok: bool, name: str, value: Any, accepted: str) -> None:
    """Raise ``InvalidInputError`` (a ``ValueError``) naming a config field unless ``ok``.

    Examples
    --------
    >>> check_field(True, "epochs", 3, "a positive integer")
    """
    if not ok:
        raise InvalidInputError(f"{name} must be {accepted}, got {value!r}")


def check_training_fields(config, names: Sequence[str] = ("epochs", "batch_size")) -> None:
    """Validate the training fields every trainer config shares.

    ``names`` must be positive integers; ``learning_rate`` (when the config has
    one) a number > 0; ``seed`` an integer >= 0.

    Raises
    ------
    InvalidInputError
        Naming the first bad field, its value and what is accepted.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> check_training_fields(SimpleNamespace(epochs=0, batch_size=8, learning_rate=1e-3, seed=0))
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: epochs must be a positive integer, got 0
    """
    for name in names:
        check_field(is_positive_int(getattr(config, name)), name, getattr(config, name), "a positive integer")
    if hasattr(config, "learning_rate"):
        check_field(is_positive_float(config.learning_rate), "learning_rate", config.learning_rate, "a number > 0")
    seed = getattr(config, "seed", 0)
    check_field(is_non_negative_int(seed), "seed", seed, "an integer >= 0")


def check_adversarial_fields(config) -> None:
    """Check the Adam and WGAN-GP fields shared by the adversarial trainers' configs.

    ``beta1`` and ``beta2`` (Adam's decay rates) must lie in ``[0, 1)`` and
    ``gradient_penalty`` (the WGAN-GP lambda) must be ``>= 0``.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> check_adversarial_fields(SimpleNamespace(beta1=0.5, beta2=1.0, gradient_penalty=10.0))
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: beta2 must be a number in [0, 1), got 1.0
    """
    for name in ("beta1", "beta2"):
        value = getattr(config, name)
        check_field(is_fraction(value), name, value,
                    "a number in [0, 1)")
    value = config.gradient_penalty
    check_field(isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0, "gradient_penalty",
                value, "a number >= 0")


@dataclass(frozen=True)
class DataConfig:
    """The ``[data]`` keys shared by the image-dataset trainers.

    Parameters
    ----------
    dataset : str
        Registered dataset name (``ppl_audit.data``), e.g. ``"mnist"``.
    train_split, test_split : str
        Splits to train and evaluate on (tests train on the fixture's test split).
    num_train, num_test : int, optional
        Keep only the first N images of a split (all when absent).
    """

    dataset: str = "mnist"
    train_split: str = DEFAULT_TRAIN_SPLIT
    test_split: str = DEFAULT_TEST_SPLIT
    num_train: int | None = None
    num_test: int | None = None

    def __post_init__(self):
        for name in ("num_train", "num_test"):
            value = getattr(self, name)
            check_field(value is None or is_positive_int(value), name, value, "a positive integer (or absent: all)")


def load_training_data(data: DataConfig, data_dir=None, device="cpu"):
    """The train and test :class:`~ppl_audit.data.ImageDataset` of a ``[data]`` table, on ``device``.

    Raises
    ------
    ppl_audit.data.DataNotFoundError
        Missing data folder or files (the message names every path tried).

    Examples
    --------
    >>> train, test = load_training_data(DataConfig(train_split="test", num_train=10),
    ...                                  "tests/fixtures/data")  # doctest: +SKIP
    >>> len(train), len(test)  # doctest: +SKIP
    (10, 100)
    """
    from ppl_audit.data import load_dataset

    train = load_dataset(data.dataset, data.train_split, data_dir=data_dir, limit=data.num_train)
    test = load_dataset(data.dataset, data.test_split, data_dir=data_dir, limit=data.num_test)
    return train.to(device), test.to(device)


@contextmanager
def seeded(seed: int):
    """Seed torch's global generator inside the block and restore it after (for weight initialisation).

    Examples
    --------
    >>> with seeded(0):
    ...     a = torch.rand(1)
    >>> with seeded(0):
    ...     b = torch.rand(1)
    >>> bool(a == b)
    True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def minibatches(n: int, batch_size: int, generator: torch.Generator, device) -> Iterator[torch.Tensor]:
    """Shuffled index batches covering ``range(n)`` once (the last one may be short).

    Examples
    --------
    >>> [len(b) for b in minibatches(5, 2, torch.Generator().manual_seed(0), "cpu")]
    [2, 2, 1]
    """
    order = torch.randperm(n, generator=generator).to(device)
    yield from order.split(batch_size)


class Stopwatch:
    """Wall-clock seconds since creation (``float(watch)``).

    Examples
    --------
    >>> float(Stopwatch()) >= 0
    True
    """

    def __init__(self):
        self.start = time.perf_counter()

    def __float__(self) -> float:
        return time.perf_counter() - self.start


# --------------------------------------------------------------------------- the house/rocket kind


def _build_house_rocket(card: ModelCard) -> nn.Module:
    from ppl_audit.classifiers import house_rocket

    return house_rocket._build_module(house_rocket._Recipe.from_card(card))


def _train_house_rocket(card: ModelCard, *, data_dir=None, device="auto", progress=None) -> TrainResult:
    from ppl_audit.classifiers import house_rocket

    # CPU, as load_house_rocket_classifier trains it: both loaders share cache entries.
    module, metrics = house_rocket.train_house_rocket_classifier(card, device="cpu", progress=progress)
    history = {"unit": "epoch", "panels": {"cross-entropy (nats per image)": {"train": metrics["loss_per_epoch"]}}}
    return TrainResult(module, metrics, history)


_house_rocket_trainer = Trainer(
    kind="house-rocket-classifier",
    build=_build_house_rocket,
    train=_train_house_rocket,
    headline=("test_accuracy", "test accuracy"),
    description="patchify CNN on the house/rocket renders (no data folder needed)",
)


# --------------------------------------------------------------------------- the training report


def _history_panels(info: Mapping[str, Any]) -> tuple[str, dict[str, dict[str, list]]]:
    history = info.get("history") or {}
    panels = history.get("panels")
    if panels:
        return str(history.get("unit", "epoch")), panels
    # Entries written without curves (by load_house_rocket_classifier): draw list-valued metrics.
    lists = {k: v for k, v in info.get("metrics", {}).items() if isinstance(v, list) and v}
    return "epoch", {k: {k: v} for k, v in lists.items()}


def _expectation_rows(card: ModelCard, metrics: Mapping[str, Any]) -> list[list[Any]]:
    """``[metric, value, bound, met]`` for every ``[expected] min_KEY`` / ``max_KEY``."""
    rows = []
    for name, bound in card.expected.items():
        for prefix, op, ok in ((EXPECTED_MIN_PREFIX, ">=", float.__ge__), (EXPECTED_MAX_PREFIX, "<=", float.__le__)):
            if name.startswith(prefix):
                key = name[len(prefix):]
                value = metrics.get(key)
                met = isinstance(value, (int, float)) and ok(float(value), float(bound))
                rows.append([key, value, f"{op} {bound}", met])
    return rows


def curve_figures(info: Mapping[str, Any], *, prefix: str = "curve", caption_note: str = "") -> list:
    """One line plot per training-curve panel of a cache sidecar's ``info`` (figures ``PREFIX_1``, ...).

    Examples
    --------
    >>> figs = curve_figures({"history": {"unit": "epoch", "panels": {"loss": {"train": [2.0, 1.0]}}}})
    >>> [f.name for f in figs], figs[0].caption
    (['curve_1'], 'loss per epoch of training.')
    """
    from ppl_audit.report.figures import line_plot

    unit, panels = _history_panels(info)
    return [line_plot(f"{prefix}_{i + 1}", title, f"{title} per {unit} of training{caption_note}.",
                      {k: [float(v) for v in vs] for k, vs in series.items()}, xlabel=unit, ylabel=title)
            for i, (title, series) in enumerate(panels.items())]


def training_report(trained: TrainedModel, *, data_dir=None) -> "Report":  # noqa: F821 - imported lazily
    """A report of how a model was trained: curves, metrics against ``[expected]``, trainer sections.

    ``report.json`` holds no wall-clock times (they go to ``timings.json``),
    so the report of a cached model is the same bytes every time.

    Parameters
    ----------
    trained : TrainedModel
        From :func:`load_model`.
    data_dir : path-like, optional
        Data folder for trainer sections that show data (default ``$PPL_AUDIT_DATA``).

    Returns
    -------
    ppl_audit.report.Report
        ``kind="training"``; write it with :func:`ppl_audit.report.write_report`.

    Examples
    --------
    >>> report = training_report(load_model("mnist-gan"))  # doctest: +SKIP
    >>> [s.name for s in report.sections]  # doctest: +SKIP
    ['expectations', 'curves', 'samples', 'latent_traversal']
    """
    from ppl_audit.report import Report, Section, Table

    card, info = trained.card, trained.info
    metrics = dict(info.get("metrics", {}))
    problems = check_expected(card, metrics)
    rows = _expectation_rows(card, metrics)
    expectations = Section(
        "expectations", "Against the card's expectations",
        paragraphs=["Metrics were measured on the held-out split when the weights were trained; the card's "
                    "[expected] table gives the bounds." if rows else "The card's [expected] table sets no bounds."],
        tables=[Table("expectations", "Measured vs expected", ["metric", "value", "expected", "met"], rows)]
        if rows else [],
        warnings=problems,
    )
    figures = curve_figures(info)
    curves = Section("curves", "Training curves", figures=figures,
                     paragraphs=[] if figures else ["No training curves were recorded."])
    sections = [expectations, curves]
    trainer = trained.trainer
    if trainer.report_sections is not None:
        sections += list(trainer.report_sections(trained, data_dir=data_dir))
    headline_key = trainer.headline[0]
    return Report(
        kind="training",
        title=f"Training report: {card.name}",
        summary=[card.description or card.name,
                 f"Kind {card.kind!r}, recipe hash {card.recipe_hash}; headline: {trainer.headline[1]} "
                 f"{metrics.get(headline_key, float('nan')):.4f}."],
        metrics={k: v for k, v in metrics.items()
                 if not isinstance(v, (list, dict)) and not k.endswith(SECONDS_SUFFIX)},
        sections=sections,
        provenance={"card": card.name, "card_source": card.source, "kind": card.kind,
                    "recipe_hash": card.recipe_hash, "recipe": card.recipe, "expected": card.expected,
                    "weights_file": trained.weights_path.name, "versions": library_versions()},
        timings={k: float(v) for k, v in metrics.items()
                 if k.endswith(SECONDS_SUFFIX) and isinstance(v, (int, float))},
    )


__all__ = [
    "BUILTIN_TRAINERS",
    "DataConfig",
    "TrainResult",
    "TrainedModel",
    "Trainer",
    "as_card",
    "card_config",
    "check_expected",
    "check_training_fields",
    "curve_figures",
    "get_trainer",
    "load_model",
    "load_training_data",
    "refuse_missed_expectations",
    "register_trainer",
    "registered_kinds",
    "training_report",
]
