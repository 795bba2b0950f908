"""Units as Ray tasks: the ``ray`` executor (``--executor ray``, ``pip install -e .[ray]``).

Each unit becomes one ``ray.remote`` task that runs :func:`~ppl_audit.execute.worker.run_unit` on a
worker: it gets the unit's function (by name) and plain ``kwargs``, loads its models by name from the
cache path the driver gives, and sends back an :class:`~ppl_audit.execute.worker.Outcome`. Ray retries a
task whose worker died (:data:`MAX_RETRIES`); a unit that raised stops the map with a
:class:`~ppl_audit.execute.units.UnitError` that names the unit, the exception and the worker, and the
remaining tasks are cancelled, as they are on Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from ppl_audit.errors import InvalidInputError
from ppl_audit.execute.units import Executor, Unit, UnitError, check_unit_names
from ppl_audit.execute.worker import run_unit
from ppl_audit.progress import ProgressFn, report

RAY_EXTRA = "pip install -e .[ray]"
DEFAULT_ADDRESS = "auto"  # an existing cluster (RAY_ADDRESS, or one started on this machine), else a local one
REACH_TIMEOUT_S = 5.0  # a TCP reach test of host:port first: a refused or unroutable address fails in seconds
MAX_RETRIES = 3  # Ray's own default for a task whose worker died, stated: the fault test kills one worker
WAIT_SLICE_S = 1.0  # ray.wait in slices, so Ctrl-C is heard within a second


def import_ray():
    """The ``ray`` module, else a one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise InvalidInputError(f"--executor ray needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


def _check_reachable(address: str, where: str = "") -> None:
    """Refuse at once an address whose port refuses or does not answer (Ray itself retries for ~20 s, and
    for minutes on an address whose cluster has gone); ``where`` says where the address came from."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise InvalidInputError(f"Ray address {address!r}{where} is not HOST:PORT (or auto)")
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise InvalidInputError(f"cannot reach the Ray cluster at {address}{where}: {exc.strerror or exc}; is "
                                "`ray start --head` running there?") from None


def _auto_address() -> str | None:
    """The cluster ``auto`` means, checked for reach: ``RAY_ADDRESS``, else a running instance on this
    machine, else the one Ray last recorded (``ray start``); ``None``: none, so start a local one.

    Ray records the last head it started in a file that outlives the cluster; connecting to that address
    retries for minutes, so a recorded address that no longer answers counts as no cluster."""
    if os.environ.get("RAY_ADDRESS"):
        _check_reachable(os.environ["RAY_ADDRESS"], " (RAY_ADDRESS)")  # asked for by name: refuse, not replace
        return os.environ["RAY_ADDRESS"]
    try:
        from ray._private.services import get_ray_address_from_environment
    except ImportError:  # another Ray layout: leave the search to ray.init
        return "auto"
    try:
        found = get_ray_address_from_environment("auto", None)
    except ConnectionError:  # no cluster found
        return None
    try:
        _check_reachable(found)
    except InvalidInputError:
        return None
    return found


@contextmanager
def _native_stderr_quiet() -> Iterator[None]:
    """Hold Ray's native log lines (written straight to file descriptor 2) while it connects; the CLI says
    one line of its own when the connection fails."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def connect(address: str = DEFAULT_ADDRESS) -> bool:
    """Connect this process to Ray at ``address``; return whether it started a local instance to close later.

    ``auto``: an existing cluster, else a local instance on this machine's cores; ``local``: always a
    local instance; ``HOST:PORT``: that cluster's head node, checked for reach first.

    Raises
    ------
    InvalidInputError
        Ray is not installed, the address is malformed, unreachable or not a Ray cluster.
    """
    ray = import_ray()
    if ray.is_initialized():  # a caller (a notebook, a test) connected already: use that cluster
        return False
    if address not in ("auto", "local"):
        _check_reachable(address)
    options = dict(log_to_driver=False, logging_level=logging.ERROR, include_dashboard=False)
    with _native_stderr_quiet():
        if address == "local":
            ray.init(address="local", **options)
            return True
        target = _auto_address() if address == "auto" else address
        if target is None:  # auto, and no cluster answers: a local one
            ray.init(address="local", **options)
            return True
        try:
            ray.init(address=target, **options)
            return False
        except ConnectionError as exc:
            if address != "auto":
                raise InvalidInputError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
        ray.init(address="local", **options)  # auto, and the cluster found would not take us: a local one
        return True


class RayExecutor(Executor):
    """Runs each unit as a Ray task, on a cluster at ``address`` (see :func:`connect`).

    Parameters
    ----------
    address : str
        ``auto`` (default), ``local`` or ``HOST:PORT`` of a head node.
    cpus_per_task : int, optional
        CPUs Ray reserves per unit; default: torch's thread count in this process (a unit runs with the
        driver's threads, so that it computes the local run's bytes), at most a node's CPUs.

    Examples
    --------
    >>> from statistics import fmean
    >>> with RayExecutor("local") as executor:  # doctest: +SKIP
    ...     executor.map([Unit("a", fmean, {"data": [4.0]})])
    [4.0]
    """

    kind = "ray"
    remote = True

    def __init__(self, address: str = DEFAULT_ADDRESS, *, cpus_per_task: int | None = None):
        self.address = address
        self._ray = import_ray()
        self._owns = connect(address)
        self._task = self._ray.remote(run_unit)
        self.cpus_per_task = cpus_per_task

    def _cpus(self, threads: int) -> int:
        """CPUs to reserve for a unit of ``threads`` threads: no more than the largest node has (else it waits
        forever for a node that does not exist)."""
        if self.cpus_per_task is not None:
            return self.cpus_per_task
        largest = max((int(n.get("Resources", {}).get("CPU", 1)) for n in self._alive_nodes()), default=1)
        return max(1, min(threads, largest))

    def _alive_nodes(self) -> list[dict]:
        return [n for n in self._ray.nodes() if n.get("Alive")]

    def provenance(self) -> dict[str, Any]:
        return {"kind": self.kind, "address": self.address, "nodes": len(self._alive_nodes()),
                "cpus": int(self._ray.cluster_resources().get("CPU", 0))}

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False

    def map(self, units: Sequence[Unit], *, task: str = "units", progress: ProgressFn | None = None) -> list:
        import torch

        from ppl_audit import __version__

        check_unit_names(units)
        threads = torch.get_num_threads()
        cpus = self._cpus(threads)
        refs = {}
        for i, unit in enumerate(units):
            options = dict(num_cpus=cpus, num_gpus=1 if unit.gpu else 0, max_retries=MAX_RETRIES, name=unit.name)
            refs[self._task.options(**options).remote(unit.fn, dict(unit.kwargs), __version__, threads)] = i
        results: list = [None] * len(units)
        pending = list(refs)
        try:
            report(progress, task, 0, len(units))
            while pending:
                ready, pending = self._ray.wait(pending, num_returns=1, timeout=WAIT_SLICE_S)
                for ref in ready:
                    results[refs[ref]] = self._value(units[refs[ref]], ref)
                report(progress, task, len(units) - len(pending), len(units))
        except BaseException:  # a failed unit, Ctrl-C or anything else: stop what is still running
            for ref in pending:
                self._ray.cancel(ref, force=True)
            raise
        return results

    def _value(self, unit: Unit, ref):
        """The unit's result, else a :class:`UnitError` naming the unit, the exception and the worker."""
        exceptions = self._ray.exceptions
        try:
            outcome = self._ray.get(ref)
        except exceptions.RayTaskError as exc:  # raised outside run_unit: the worker could not even start it
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            hint = ""
            if isinstance(cause, ModuleNotFoundError) and "ppl_audit" in str(cause):
                hint = "; install ppl-audit (the driver's version) on every node"
            raise UnitError(f"unit {unit.name!r} could not run on a Ray worker: {type(cause).__name__}: "
                            f"{str(cause).splitlines()[0] if str(cause) else ''}{hint}") from None
        except exceptions.RayError as exc:  # its worker died more than MAX_RETRIES times, or the node is gone
            raise UnitError(f"unit {unit.name!r} failed on Ray after {MAX_RETRIES} retries: "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        if outcome.error is not None:
            raise UnitError(f"unit {unit.name!r} failed on worker {outcome.host} (pid {outcome.pid}): "
                            f"{outcome.error}")
        return outcome.value


__all__ = ["DEFAULT_ADDRESS", "MAX_RETRIES", "RAY_EXTRA", "RayExecutor", "connect", "import_ray"]
