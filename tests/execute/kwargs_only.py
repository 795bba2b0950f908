"""An executor for tests: runs units as a remote executor does, from their plain kwargs alone, here."""

from __future__ import annotations

from ppl_audit.execute import LocalExecutor


class KwargsOnlyExecutor(LocalExecutor):
    """Runs each unit from its kwargs alone (models loaded by name, as on a worker), in this process, and
    records the tasks it was handed: ``(task, [unit names])``."""

    kind, remote = "kwargs-only", True

    def __init__(self):
        self.tasks = []

    def map(self, units, *, task="units", progress=None):
        self.tasks.append((task, [unit.name for unit in units]))
        return [unit.fn(**unit.kwargs) for unit in units]
