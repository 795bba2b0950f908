"""What runs on a remote worker: one unit, with the worker's rules, and the worker's loaded models.

A worker never trains a model: the driver loads (and, if needed, trains) every model before it fans out,
so a model missing from the worker's cache means the worker does not see the driver's cache, which is an
error naming the model and the path. Models loaded by name stay loaded in the worker process for the
units that follow (:func:`worker_model`), so sixteen level sets on one worker load their classifier once.
"""

from __future__ import annotations

import os
import socket
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable

from ppl_audit.errors import WeightsError

MAX_WORKER_MODELS = 8  # models a worker process keeps loaded between units (a classifier and a few priors)
_MODELS: OrderedDict[Hashable, Any] = OrderedDict()


def worker_model(key: Hashable, load: Callable[[], Any]) -> Any:
    """The model under ``key`` loaded earlier in this process, else ``load()`` (kept for later units).

    Examples
    --------
    >>> worker_model(("doc", 1), lambda: "loaded")
    'loaded'
    >>> worker_model(("doc", 1), lambda: "loaded again")
    'loaded'
    """
    if key in _MODELS:
        _MODELS.move_to_end(key)
        return _MODELS[key]
    model = load()
    _MODELS[key] = model
    while len(_MODELS) > MAX_WORKER_MODELS:
        _MODELS.popitem(last=False)
    return model


def _refuse_training(trainer, card, *, path, **_where) -> None:
    raise WeightsError(f"model {card.name!r} is not in the cache {path.parent} seen by this worker: workers read "
                       "the weights the driver built, so give every node the driver's cache (a shared path, as "
                       "--cache-dir or PPL_AUDIT_CACHE)")


@dataclass(frozen=True)
class Outcome:
    """A unit's result, or what it raised, with the worker it ran on (units time themselves where they report it)."""

    value: Any = None
    error: str | None = None
    host: str = ""
    pid: int = 0


def run_unit(fn: Callable[..., Any], kwargs: dict[str, Any], driver_version: str, threads: int | None = None) -> Outcome:
    """Run one unit here, refusing to train; an exception comes back as text (the driver names the unit).

    ``threads``: torch's thread count in the driver. The unit runs with the same count, because some
    kernels round differently with another, and a Ray run must give the local run's bytes.

    Examples
    --------
    >>> from statistics import fmean
    >>> import ppl_audit
    >>> run_unit(fmean, {"data": [1.0, 2.0]}, ppl_audit.__version__).value
    1.5
    >>> run_unit(fmean, {"data": []}, ppl_audit.__version__).error
    'StatisticsError: fmean requires at least one data point'
    """
    from ppl_audit import __version__
    from ppl_audit.training import before_training

    where = {"host": socket.gethostname(), "pid": os.getpid()}
    if __version__ != driver_version:
        return Outcome(error=f"this worker has ppl-audit {__version__}, the driver {driver_version}: install the "
                             "same version on every node", **where)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        with before_training(_refuse_training):
            value = fn(**kwargs)
    except Exception as exc:  # every failure goes back to the driver, which names the unit and stops
        return Outcome(error=f"{type(exc).__name__}: {exc}", **where)
    return Outcome(value=value, **where)


__all__ = ["MAX_WORKER_MODELS", "Outcome", "run_unit", "worker_model"]
