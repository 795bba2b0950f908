"""Errors of the data layer, written for the user like every :class:`PplAuditError`.

Both subclass :class:`~ppl_audit.errors.PplAuditError`, so the command line
prints them as one line, and a standard exception (``FileNotFoundError``,
``ValueError``) so that callers who do not know this package catch them too.
"""

from __future__ import annotations

from ppl_audit.errors import PplAuditError


class DataNotFoundError(PplAuditError, FileNotFoundError):
    """No data folder was given, or a file a dataset needs is not where it was looked for.

    The message names every path that was tried and how to point the toolkit
    at the data (``--data-dir`` or ``$PPL_AUDIT_DATA``): nothing is downloaded.
    """


class DataFileError(PplAuditError, ValueError):
    """A data file exists but is malformed: the message names the file and what is wrong."""


__all__ = [
    "DataFileError",
    "DataNotFoundError",
]
