"""Where an audit's independent units of work run: in this process, or as Ray tasks (issue 26).

:func:`make_executor` builds one from its kind (``local`` or ``ray``) and a Ray address; the audits run
their units on :func:`current_executor`, which :func:`use_executor` sets for a block (``run_audit`` and
the command line do). See :mod:`ppl_audit.execute.units` for the contract.
"""

from __future__ import annotations

from ppl_audit.errors import InvalidInputError
from ppl_audit.execute.units import (Executor, LocalExecutor, Unit, UnitError, check_unit_names, current_executor,
                                     use_executor)
from ppl_audit.execute.worker import worker_model

EXECUTORS = ("local", "ray")


def make_executor(kind: str = "local", address: str | None = None) -> Executor:
    """The executor of ``kind``: ``local``, or ``ray`` at ``address`` (default ``auto``).

    Raises
    ------
    InvalidInputError
        An unknown kind, an address for the local executor, Ray missing, or a Ray address unreachable.

    Examples
    --------
    >>> make_executor("local").kind
    'local'
    >>> make_executor("threads")
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: executor 'threads' is unknown; known: local, ray
    """
    if kind not in EXECUTORS:
        raise InvalidInputError(f"executor {kind!r} is unknown; known: {', '.join(EXECUTORS)}")
    if kind == "local":
        if address is not None:
            raise InvalidInputError(f"a Ray address ({address}) needs the ray executor (--executor ray)")
        return LocalExecutor()
    from ppl_audit.execute.ray_executor import DEFAULT_ADDRESS, RayExecutor

    return RayExecutor(address or DEFAULT_ADDRESS)


__all__ = ["EXECUTORS", "Executor", "LocalExecutor", "Unit", "UnitError", "check_unit_names", "current_executor",
           "make_executor", "use_executor", "worker_model"]
