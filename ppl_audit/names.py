"""Names that become parts of file paths: model-card names, target names, report folder names.

A name is letters, digits, ``-``, ``_`` and ``.``, does not start with ``.`` and is at most
:data:`MAX_NAME_LENGTH` characters, so that no name can climb out of its folder (``..``, ``/``, an
absolute path), hide itself, or make a file name longer than the file system allows once prefixes and
hashes are added.
"""

from __future__ import annotations

import re

from ppl_audit.errors import InvalidInputError

MAX_NAME_LENGTH = 100  # leaves room for a 16-digit hash, ".safetensors" and a temporary prefix in 255 bytes
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
SAFE_NAME_RULE = f"letters, digits, '-', '_' or '.', not starting with '.', at most {MAX_NAME_LENGTH} characters"


def is_safe_name(value: object) -> bool:
    """True when ``value`` may be used as one component of a file path.

    Examples
    --------
    >>> is_safe_name("mnist-vae-ensemble-beta01"), is_safe_name("../../elsewhere/hr"), is_safe_name(".hidden")
    (True, False, False)
    """
    return isinstance(value, str) and len(value) <= MAX_NAME_LENGTH and SAFE_NAME.fullmatch(value) is not None


def check_safe_name(value: object, what: str, error: type[Exception] = InvalidInputError) -> str:
    """Return ``value`` if it is a safe name, else raise ``error`` naming ``what`` and the rule.

    Examples
    --------
    >>> check_safe_name("house-rocket-cnn", "model name")
    'house-rocket-cnn'
    >>> check_safe_name("/etc/passwd", "model name")
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: model name '/etc/passwd' must be letters, digits, '-', '_' or '.', not starting with '.', at most 100 characters
    """
    if not is_safe_name(value):
        shown = value if not isinstance(value, str) or len(value) <= 2 * MAX_NAME_LENGTH else value[:60] + "..."
        raise error(f"{what} {shown!r} must be {SAFE_NAME_RULE}")
    return value
