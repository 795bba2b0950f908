"""Units of work and the executor seam: where an audit's independent pieces run (issue 26).

An audit expresses its independent pieces (one level set, one grid point, one shard of a search) as
:class:`Unit` s and hands them to an :class:`Executor`, which returns their results in the units' order,
whatever order they finish in. :class:`LocalExecutor` (the default) runs them one after another in this
process; :class:`~ppl_audit.execute.ray_executor.RayExecutor` runs them as Ray tasks.

A unit travels as data. ``fn`` is a module-level function (it travels by name, never as pickled code of
its own) and ``kwargs`` are plain values: names of models, seeds, settings, tensors. ``local`` holds live
objects that only an in-process run may use (a loaded classifier, the progress callback): a remote run
leaves them out, and ``fn`` then loads its models by name. Each unit's randomness comes from a seed in its
``kwargs`` derived from the audit's seed and the unit's place in the spec, so results do not depend on
where, or in which order, units run.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

from ppl_audit.errors import InvalidInputError, PplAuditError
from ppl_audit.progress import ProgressFn


@dataclass(frozen=True)
class Unit:
    """One independent piece of an audit's work.

    Attributes
    ----------
    name : str
        Unique within one :meth:`Executor.map`; names the unit in progress and errors
        (``"house-rocket-circle/ambiguous-tight"``).
    fn : callable
        A module-level function, called as ``fn(**kwargs, **local)`` in process, ``fn(**kwargs)`` remotely.
    kwargs : mapping
        Plain, picklable values.
    local : mapping
        Live objects for an in-process run only.
    gpu : bool
        The unit computes on CUDA: a remote run requests one GPU for it.

    Examples
    --------
    >>> from statistics import fmean
    >>> unit = Unit("mean", fmean, {"data": [1.0, 2.0]})
    >>> unit.fn(**unit.kwargs)
    1.5
    """

    name: str
    fn: Callable[..., Any]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    local: Mapping[str, Any] = field(default_factory=dict)
    gpu: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise InvalidInputError(f"a unit needs a non-empty name, got {self.name!r}")
        if not _importable(self.fn):
            raise InvalidInputError(f"unit {self.name!r}: fn must be a module-level function (it travels by "
                                    f"name), got {self.fn!r}")


def _importable(fn) -> bool:
    """Whether ``fn`` is what its module exports under its qualified name: a worker can import it."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or "<" in qualname:
        return False
    try:
        found = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return False
    # the same name, not necessarily the same object: a module imported twice (pytest's importlib mode
    # collecting doctests) holds twins, and a worker imports it by name anyway
    return found is fn or (getattr(found, "__module__", None) == module
                           and getattr(found, "__qualname__", None) == qualname)


class UnitError(PplAuditError, RuntimeError):
    """A unit failed on a worker: the message names the unit, the exception and the worker."""


class Executor(ABC):
    """Runs units and returns their results in the units' order.

    ``remote`` says whether units run in other processes, where only their ``kwargs`` reach them.
    """

    kind: str = ""
    remote: bool = False

    @abstractmethod
    def map(self, units: Sequence[Unit], *, task: str = "units", progress: ProgressFn | None = None) -> list:
        """Run ``units``; return their results in order. ``progress(task, done, total)`` counts finished units."""

    def provenance(self) -> dict[str, Any]:
        """What ``report.json`` records under ``provenance.executor`` (never part of the spec or its hash)."""
        return {"kind": self.kind}

    def close(self) -> None:
        """Release what the executor started (a local Ray instance); a no-op by default."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalExecutor(Executor):
    """Runs units one after another in this process, with their live objects (the default).

    Examples
    --------
    >>> from statistics import fmean
    >>> LocalExecutor().map([Unit("a", fmean, {"data": [4.0]}), Unit("b", fmean, {"data": [1.0, 2.0]})])
    [4.0, 1.5]
    """

    kind = "local"

    def map(self, units: Sequence[Unit], *, task: str = "units", progress: ProgressFn | None = None) -> list:
        check_unit_names(units)
        results = []
        for unit in units:
            results.append(unit.fn(**unit.kwargs, **unit.local))
            # a unit reports its own progress in process (it gets the callback among its live objects)
        return results


def check_unit_names(units: Sequence[Unit]) -> None:
    """Refuse a repeated unit name: results and errors are told apart by name."""
    seen: set[str] = set()
    for unit in units:
        if unit.name in seen:
            raise InvalidInputError(f"two units are named {unit.name!r}; unit names must be unique")
        seen.add(unit.name)


_CURRENT: ContextVar[Executor | None] = ContextVar("ppl_audit_executor", default=None)
# A context variable, not an argument of every audit: the classifier audit reaches a level set's units
# through its parts, and an executor is the run's surroundings, like the training hook, not its spec.


def current_executor() -> Executor:
    """The executor of the enclosing :func:`use_executor` block, else a :class:`LocalExecutor`."""
    return _CURRENT.get() or LocalExecutor()


@contextmanager
def use_executor(executor: Executor | None) -> Iterator[Executor]:
    """Run the audits inside the block on ``executor`` (``None``: the local one); a remote executor also
    trains the members of cards whose members train apart (:mod:`~ppl_audit.execute.members`).

    Examples
    --------
    >>> with use_executor(LocalExecutor()) as executor:
    ...     current_executor() is executor
    True
    """
    from ppl_audit.execute.members import member_mapper
    from ppl_audit.training.members import members_on

    executor = executor or LocalExecutor()
    token = _CURRENT.set(executor)
    try:
        # a remote executor also trains the members of ensembles whose members train apart, side by side
        with members_on(member_mapper(executor) if executor.remote else None):
            yield executor
    finally:
        _CURRENT.reset(token)


__all__ = ["Executor", "LocalExecutor", "Unit", "UnitError", "check_unit_names", "current_executor",
           "use_executor"]
