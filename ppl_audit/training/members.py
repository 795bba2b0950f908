"""Cards whose members train apart: each member one unit of work, cached on its own, joined after.

A kind whose members are independent trainings (a GAN ensemble: member ``k`` starts from seed ``seed + k``
and draws from its own stream) declares a :class:`MemberTraining` on its :class:`~ppl_audit.training.Trainer`.
Its ``train`` then runs the members one after another through the same two functions, so that a member
trained alone, anywhere, gives the bytes it gives inside the whole training. :func:`train_member` trains one
member into the weights cache (``NAME-HASH.member-K-of-N.safetensors``, written atomically like every
entry), and :func:`train_from_members` joins the cached members into the card's model; a member already
cached is not trained again, so an interrupted fan-out resumes where it stopped.

Where the members run is the caller's choice: :func:`members_on` sets a ``map_members`` for the block
(the executor seam sends each member to a worker); without one, :func:`~ppl_audit.training.load_model`
trains the card as a whole, in process.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from torch import nn

from ppl_audit.cache import cache_dir, check_sidecar_info, load_weights, save_weights
from ppl_audit.cards import ModelCard
from ppl_audit.errors import InvalidInputError, WeightsError
from ppl_audit.progress import ProgressFn
from ppl_audit.training.registry import TrainResult, get_trainer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemberTraining:
    """How a kind's members train apart.

    Parameters
    ----------
    count : callable
        ``count(card) -> int``: the card's members, 0 where this card trains them together (a kind whose
        cards choose, with ``[training] members_apart``).
    build : callable
        ``build(card, k) -> nn.Module``: member ``k`` untrained (cached weights load into it).
    train : callable
        ``train(card, k, *, data_dir, device, progress) -> TrainResult``: member ``k`` alone; its ``module``
        is what ``build`` makes, trained.
    join : callable
        ``join(card, results) -> TrainResult``: the card's module, metrics and curves from every member's
        result, in order (the trainer's ``train`` is ``join`` over ``train`` of each member).
    """

    count: Callable[[ModelCard], int]
    build: Callable[[ModelCard, int], nn.Module]
    train: Callable[..., TrainResult]
    join: Callable[[ModelCard, Sequence[TrainResult]], TrainResult]


def member_training(card: ModelCard) -> MemberTraining:
    """The card kind's :class:`MemberTraining`, else an error naming the kind."""
    members = get_trainer(card.kind).members
    if members is None:
        raise InvalidInputError(f"model kind {card.kind!r} trains its members together, not one by one")
    if not members.count(card):
        raise InvalidInputError(f"{card.name} trains its members together; [training] members_apart = true trains "
                                "them one by one (another recipe)")
    return members


def member_path(card: ModelCard, root: Path, k: int, count: int) -> Path:
    """``root / NAME-HASH.member-K-of-N.safetensors`` (``K`` from 1), beside the card's own entry.

    Examples
    --------
    >>> from ppl_audit.cards import load_card
    >>> member_path(load_card("mnist-gan-ensemble"), Path("/c"), 0, 5).name.endswith(".member-1-of-5.safetensors")
    True
    """
    return root / f"{card.cache_path(root).stem}.member-{k + 1}-of-{count}.safetensors"


def _cached_member(card: ModelCard, k: int, path: Path) -> TrainResult | None:
    """Member ``k`` from its verified cache entry, or None (a warning where one exists but is unusable)."""
    if not path.is_file():
        return None
    module = member_training(card).build(card, k)
    try:
        state, info = load_weights(path)
        module.load_state_dict(state)
        check_sidecar_info(info, card.recipe_hash, path)
        if info.get("member") != k:
            raise WeightsError(f"{path.name} records member {info.get('member')!r}, not {k}")
    except (WeightsError, RuntimeError) as exc:
        logger.warning("cached member %d of %s is unusable (%s); training it again", k + 1, card.name, exc)
        return None
    return TrainResult(module.eval(), info["metrics"], info.get("history", {}))


def train_member(card: ModelCard, k: int, *, cache=None, data_dir=None, device="auto",
                 progress: ProgressFn | None = None, retrain: bool = False) -> str:
    """Train member ``k`` of ``card`` into the cache, unless it is cached there already (or ``retrain``);
    return its path.

    Raises
    ------
    InvalidInputError
        The card's kind trains its members together, or ``k`` is not one of its members.
    """
    members = member_training(card)
    count = members.count(card)
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < count:
        raise InvalidInputError(f"member {k!r} of {card.name} must be in 0..{count - 1}")
    path = member_path(card, cache_dir(cache), k, count)
    if retrain or _cached_member(card, k, path) is None:
        result = members.train(card, k, data_dir=data_dir, device=device, progress=progress)
        info = {"card": card.name, "recipe_hash": card.recipe_hash, "member": k, "metrics": result.metrics,
                "history": result.history}
        save_weights(path, result.module.state_dict(), info)
    return str(path)


def train_from_members(card: ModelCard, map_members: "MapMembersFn", *, cache=None, data_dir=None,
                       device="auto", retrain: bool = False) -> TrainResult:
    """The card's :class:`TrainResult`, from its members trained by ``map_members`` into the cache.

    ``map_members(card, ks, cache=, data_dir=, device=)`` must leave member ``k`` of every ``k`` in ``ks``
    cached (by :func:`train_member`, wherever it runs); only the members not cached yet are handed to it,
    every member with ``retrain`` (passed on).
    """
    members = member_training(card)
    count = members.count(card)
    root = cache_dir(cache)
    missing = [k for k in range(count)
               if retrain or _cached_member(card, k, member_path(card, root, k, count)) is None]
    if missing:
        map_members(card, missing, cache=cache, data_dir=data_dir, device=device, retrain=retrain)
    results = []
    for k in range(count):
        result = _cached_member(card, k, member_path(card, root, k, count))
        if result is None:
            raise WeightsError(f"member {k + 1} of {card.name} is not in the cache {root} after its training: do the "
                               "workers write to the driver's cache (a shared path)?")
        results.append(result)
    return members.join(card, results)


#: ``map_members(card, ks, *, cache, data_dir, device, retrain)``: trains member ``k`` of ``card`` into
#: ``cache`` for every ``k`` in ``ks`` (:func:`train_member` each).
MapMembersFn = Callable[..., None]
_MAP_MEMBERS: ContextVar[MapMembersFn | None] = ContextVar("map_members", default=None)
# A context variable, like the training hook: models are loaded many calls deep inside audits, and where
# their members train is the run's surroundings (its executor), not any audit's argument.


@contextmanager
def members_on(map_members: MapMembersFn | None) -> Iterator[None]:
    """Train the members of every card whose kind trains them apart with ``map_members`` inside the block."""
    token = _MAP_MEMBERS.set(map_members)
    try:
        yield
    finally:
        _MAP_MEMBERS.reset(token)


def current_map_members() -> MapMembersFn | None:
    """The ``map_members`` of the enclosing :func:`members_on` block, if any."""
    return _MAP_MEMBERS.get()


__all__ = ["MapMembersFn", "MemberTraining", "current_map_members", "member_path", "member_training",
           "members_on", "train_from_members", "train_member"]
