"""Members of a model card trained as units: each member of an ensemble whose members train apart
(:mod:`ppl_audit.training.members`) goes to the executor as one unit, written into the shared cache.

:func:`~ppl_audit.execute.use_executor` puts a remote executor's :func:`member_mapper` in place for its
block, so that a card trained inside an audit (or by ``ppl-audit train --executor ray``) trains its
members side by side; the driver then joins them, checks the card's ``[expected]`` bounds and saves the
card's entry, as a whole training would. A worker runs :func:`~ppl_audit.training.train_member`, which
writes the member's entry atomically and skips a member already cached.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ppl_audit.cache import cache_dir
from ppl_audit.cards import ModelCard
from ppl_audit.execute.units import Executor, Unit
from ppl_audit.progress import ProgressFn
from ppl_audit.training.members import MapMembersFn, member_training, train_member


def member_mapper(executor: Executor, progress: ProgressFn | None = None) -> MapMembersFn:
    """``map_members`` that trains a card's members as units of ``executor``, one unit a member."""

    def map_members(card: ModelCard, ks: Sequence[int], *, cache=None, data_dir=None, device="auto",
                    retrain: bool = False) -> None:
        count = member_training(card).count(card)
        device_name = str(device)
        where = {"cache": str(cache_dir(cache)), "data_dir": None if data_dir is None else str(data_dir),
                 "device": device_name}
        gpu = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
        units = [Unit(f"{card.name} member {k + 1} of {count}", train_member,
                      {"card": card, "k": k, "retrain": retrain, **where}, gpu=gpu) for k in ks]
        executor.map(units, task=f"training {card.name}'s members", progress=progress)

    return map_members


__all__ = ["member_mapper"]
