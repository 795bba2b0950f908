"""Progress reporting without printing: the library calls, the caller shows.

Long loops accept ``progress: ProgressFn | None``; ``None`` is silent. The
command line passes a function that draws bars on stderr (``--quiet`` passes
``None``).
"""

from __future__ import annotations

from typing import Callable, Optional

#: ``progress(task, done, total)``: ``done`` of ``total`` units of ``task`` are finished.
ProgressFn = Callable[[str, int, int], None]


def report(progress: Optional[ProgressFn], task: str, done: int, total: int) -> None:
    """Call ``progress`` if there is one.

    Examples
    --------
    >>> report(None, "sampling", 1, 10)
    """
    if progress is not None:
        progress(task, done, total)


__all__ = [
    "ProgressFn",
    "report",
]
