"""Exceptions that carry a message meant for the user.

The command line turns every :class:`PplAuditError` into one line on stderr
and exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class PplAuditError(Exception):
    """Base class of every error whose message is written for the user."""


class InvalidInputError(PplAuditError, ValueError):
    """A user-supplied value (target, concentration, image batch, ...) is invalid."""


class ModelOutputError(PplAuditError, RuntimeError):
    """A model returned something unusable (NaN, rows that are not probabilities)."""


class AuditFileError(PplAuditError, ValueError):
    """A declarative audit or model-card file is malformed."""


class WeightsError(PplAuditError, RuntimeError):
    """A weights file is missing, corrupt or does not match its recipe."""


class TrainingError(WeightsError):
    """Training ended with a model that must not be cached: a metric outside the card's ``[expected]`` bounds."""


__all__ = [
    "AuditFileError",
    "InvalidInputError",
    "ModelOutputError",
    "PplAuditError",
    "TrainingError",
    "WeightsError",
]
