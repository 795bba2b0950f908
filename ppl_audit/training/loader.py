"""``load_model``: card -> recipe hash -> verified cache entry, or train, check ``[expected]`` and save."""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from ppl_audit._device import resolve_device
from ppl_audit.cache import cache_dir, check_sidecar_info, load_weights, save_weights
from ppl_audit.cards import ModelCard, load_card
from ppl_audit.errors import AuditFileError, InvalidInputError, PplAuditError, TrainingError, WeightsError
from ppl_audit.paths import check_writable_destination
from ppl_audit.progress import ProgressFn
from ppl_audit.training.members import current_map_members, train_from_members
from ppl_audit.training.registry import Trainer, get_trainer
from ppl_audit.validators import check_fits_in_memory

logger = logging.getLogger(__name__)

EXPECTED_MIN_PREFIX = "min_"  # [expected] min_KEY = v: metrics[KEY] must be >= v
EXPECTED_MAX_PREFIX = "max_"  # [expected] max_KEY = v: metrics[KEY] must be <= v
SECONDS_SUFFIX = "seconds"  # metrics named *seconds are wall-clock: report timings, not report.json


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
    model : object
        What an audit uses (computed on first access): the trainer's
        :attr:`~ppl_audit.training.Trainer.wrap` of this model, such as a
        classifier or a decoder prior, with ``info``, ``weights_path`` and
        ``trained`` attached; ``module`` itself for kinds without a wrapper.
    """

    module: nn.Module
    card: ModelCard
    info: dict[str, Any]
    weights_path: Path

    @cached_property
    def model(self) -> Any:
        """The object an audit uses: ``trainer.wrap(self)``, or ``module`` for kinds without a wrapper."""
        wrap = self.trainer.wrap
        if wrap is None:
            return self.module
        wrapped = wrap(self)
        wrapped.info, wrapped.weights_path, wrapped.trained = self.info, self.weights_path, self
        return wrapped

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


def check_kind(card: ModelCard, kind: str | Sequence[str] | None) -> None:
    """Refuse a card whose kind is not ``kind`` (one kind or a sequence of accepted kinds; ``None``: any).

    Examples
    --------
    >>> check_kind(as_card("mnist-vae"), ("vae", "gan"))
    >>> check_kind(as_card("mnist-vae"), "lenet-classifier")
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: a 'lenet-classifier' model card is needed; 'mnist-vae' is of kind 'vae'
    """
    if kind is None:
        return
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    if card.kind not in kinds:
        wanted = " or ".join(repr(k) for k in kinds)
        raise InvalidInputError(f"a {wanted} model card is needed; {card.name!r} is of kind {card.kind!r}")


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


def _load_cached(card: ModelCard, module: nn.Module, path: Path):
    """``(module, info)`` from a verified cache entry, or None (with a warning) when it is unusable."""
    try:
        state, info = load_weights(path)
        module.load_state_dict(state)
        check_sidecar_info(info, card.recipe_hash, path)  # an edited sidecar's numbers never reach a report
    except (WeightsError, RuntimeError) as exc:
        logger.warning("cached weights of %s are unusable (%s); rebuilding them", card.name, exc)
        return None
    return module, info


#: ``hook(trainer, card, path=, cache=, data_dir=, device=)``, called just before a model is trained.
BeforeTrainingHook = Callable[..., None]
# A context variable, not a load_model argument: audits reach load_model many calls deep, and the
# command line, which alone may print, must hear of every training without threading a parameter
# through each audit. The library itself stays silent (no hook is set outside a `before_training` block).
_BEFORE_TRAINING: ContextVar[BeforeTrainingHook | None] = ContextVar("before_training", default=None)


@contextmanager
def before_training(hook: BeforeTrainingHook | None) -> Iterator[None]:
    """Call ``hook`` before every model :func:`load_model` trains inside the block (``None``: none).

    The hook may raise (a :class:`~ppl_audit.errors.PplAuditError` to refuse training) or print a notice.

    Examples
    --------
    >>> seen = []
    >>> with before_training(lambda trainer, card, **where: seen.append(card.name)):
    ...     pass
    >>> seen
    []
    """
    token = _BEFORE_TRAINING.set(hook)
    try:
        yield
    finally:
        _BEFORE_TRAINING.reset(token)


def _train_and_save(trainer: Trainer, card: ModelCard, path: Path, *, cache, data_dir, device, progress,
                    retrain: bool = False):
    """``(module, info)`` freshly trained, checked against ``[expected]`` and saved to ``path``."""
    check_cache_destination(path)  # before, not after, training
    resolve_device(device)
    hook = _BEFORE_TRAINING.get()
    if hook is not None:  # after the checks above: a notice never precedes an error they would raise
        hook(trainer, card, path=path, cache=cache, data_dir=data_dir, device=device)
    extra = {"cache": cache} if trainer.needs_cache else {}
    map_members = current_map_members()
    if map_members is not None and trainer.members is not None and trainer.members.count(card):  # side by side
        result = train_from_members(card, map_members, cache=cache, data_dir=data_dir, device=device,
                                    retrain=retrain)
    else:
        result = trainer.train(card, data_dir=data_dir, device=device, progress=progress, **extra)
    info = {"card": card.name, "recipe_hash": card.recipe_hash, "recipe": card.recipe, "metrics": result.metrics,
            "history": result.history}
    refuse_missed_expectations(card, result.metrics)  # before saving: a model below its floor is never cached
    save_weights(path, result.module.state_dict(), info)
    return result.module, info


def load_model(
    card_or_name: ModelCard | str | os.PathLike,
    *,
    cache: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    device="auto",
    progress: ProgressFn | None = None,
    retrain: bool = False,
    kind: str | Sequence[str] | None = None,
    train_if_missing: bool = True,
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
    kind : str or sequence of str, optional
        The card kind(s) the caller accepts (``"gwin"``, ``("vae", "gan")``...);
        another kind raises.
    train_if_missing : bool
        When False, refuse to train: the weights must already be cached (an
        audit that should only read what ``ppl-audit train`` built).

    Returns
    -------
    TrainedModel

    Raises
    ------
    InvalidInputError
        The card is not of ``kind``.
    WeightsError
        ``train_if_missing`` is False and the cache does not hold the weights.
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
    >>> trained.model.class_names[:3]  # doctest: +SKIP
    ('0', '1', '2')
    """
    card = as_card(card_or_name)
    check_kind(card, kind)
    trainer = get_trainer(card.kind)
    if trainer.pin is not None:
        card = trainer.pin(card)
    check_model_fits(trainer, card)
    module = trainer.build(card)  # validates the card before any file is touched
    path = card.cache_path(cache_dir(cache))
    check_cache_entry_place(path, card.name)
    loaded = _load_cached(card, module, path) if path.exists() and not retrain else None
    if loaded is None:
        if path.exists() and retrain:
            logger.info("retraining %s although %s exists", card.name, path)
        if not train_if_missing:
            raise WeightsError(f"the weights of {card.name!r} are not in the cache {path.parent} and "
                               "train_if_missing is False; run `ppl-audit train` on the card first")
        loaded = _train_and_save(trainer, card, path, cache=cache, data_dir=data_dir, device=device,
                                 progress=progress, retrain=retrain)
    module, info = loaded
    module = module.to(resolve_device(device)).eval()
    return TrainedModel(module=module, card=card, info=info, weights_path=path)


__all__ = [
    "BeforeTrainingHook",
    "EXPECTED_MAX_PREFIX",
    "EXPECTED_MIN_PREFIX",
    "SECONDS_SUFFIX",
    "TRAINING_BYTES_PER_PARAMETER",
    "TrainedModel",
    "as_card",
    "before_training",
    "check_cache_destination",
    "check_cache_entry_place",
    "check_expected",
    "check_kind",
    "check_model_fits",
    "load_model",
    "refuse_missed_expectations",
]
