"""The registry of model kinds: each card ``[model] kind`` names a :class:`Trainer`.

Built-in kinds are listed once, in ``cards.BUILTIN_KINDS``, by where their trainer lives, and
imported on first use, so that this module needs no model module; :func:`register_trainer` alone
adds a user's kind.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from torch import nn

from ppl_audit import cards
from ppl_audit.cards import BUILTIN_KINDS, ModelCard, register_kind
from ppl_audit.errors import AuditFileError

if TYPE_CHECKING:
    from ppl_audit.training.loader import TrainedModel
    from ppl_audit.training.members import MemberTraining

#: where each built-in kind's :class:`Trainer` lives (``module:attribute``), imported on first use
BUILTIN_TRAINERS = {kind: where for kind, (_, where) in BUILTIN_KINDS.items()}


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
        The card kind (a safe name); registering the trainer lets cards name it.
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
    wrap : callable, optional
        ``wrap(trained) -> object``: what an audit uses, built from the loaded
        :class:`~ppl_audit.training.TrainedModel` (a classifier with its class
        names, a decoder prior...); it becomes ``trained.model``. ``None``:
        ``trained.model`` is the module itself.
    version : int, optional
        The trainer's version, part of every card's recipe hash: bump it when
        the training code changes what it builds. ``None``: the built-in
        kind's version, or 1 for a new kind.
    timed_task : str, optional
        The progress task whose steps the cost estimate times before training
        (:mod:`~ppl_audit.training.cost`). ``None``: the first task ``train``
        reports. Name it when a trainer first reports a pass that is not
        training (GWIN's confidence pass over the training images).
    total_steps : callable, optional
        ``total_steps(card, timed_total) -> int``: the whole training in steps
        of the timed task, given that task's own total, for a trainer that
        reports several tasks in turn (a GAN ensemble trains its members one
        after another). ``None``: the timed task is the whole training.
    members : MemberTraining, optional
        For a kind whose members are independent trainings: how one member trains alone and how the
        members join (:mod:`~ppl_audit.training.members`), so that an executor can train them side by side.
        ``None``: the card trains as a whole.
    """

    kind: str
    build: Callable[[ModelCard], nn.Module]
    train: Callable[..., TrainResult]
    headline: tuple[str, str]
    report_sections: Callable[["TrainedModel"], list] | None = None
    description: str = ""
    pin: Callable[[ModelCard], ModelCard] | None = None
    needs_cache: bool = False
    wrap: Callable[["TrainedModel"], Any] | None = None
    version: int | None = None
    timed_task: str | None = None
    total_steps: Callable[[ModelCard, int], int] | None = None
    members: "MemberTraining | None" = None

    def __post_init__(self):
        if not isinstance(self.kind, str) or not self.kind:
            raise ValueError(f"Trainer.kind must be a non-empty string, got {self.kind!r}")
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
    version = trainer.version if trainer.version is not None else cards.TRAINER_VERSIONS.get(trainer.kind, 1)
    register_kind(trainer.kind, version)
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


__all__ = [
    "BUILTIN_TRAINERS",
    "TrainResult",
    "Trainer",
    "get_trainer",
    "register_trainer",
    "registered_kinds",
]
