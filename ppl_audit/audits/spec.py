"""Reading declarative audit files (TOML) into validated specs.

An audit file has an ``[audit]`` table with ``kind`` (which audit runs it),
``seed`` and the kind's own settings; lists of tables (``[[targets]]``) follow
where the kind has them. Unknown keys are errors, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

from ppl_audit.cards import loads_toml, read_toml_text
from ppl_audit.errors import AuditFileError
from ppl_audit.validators import check_seed, is_int

DEFAULT_SEED = 0
# Audits derive per-run seeds as seed * 1000 + offset; keeping seeds below
# 2^32 keeps those inside torch's 64-bit manual_seed.
MAX_SEED = 2**32 - 1


def validate_seed(seed) -> int:
    """Return ``seed`` if it is an integer in ``[0, MAX_SEED]``, else raise (the API's rule, :func:`check_seed`).

    Examples
    --------
    >>> validate_seed(7)
    7
    """
    return check_seed(seed, maximum=MAX_SEED, error=AuditFileError)


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a TOML file, raising :class:`AuditFileError` that names the file."""
    path = Path(path)
    if not path.is_file():
        raise AuditFileError(f"audit file {path} does not exist")
    return loads_toml(read_toml_text(path), str(path))


def check_keys(table: dict[str, Any], allowed, where: str) -> None:
    """Raise :class:`AuditFileError` for keys of ``table`` outside ``allowed``."""
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise AuditFileError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def dataclass_kwargs(cls, table: dict[str, Any], where: str, skip=()) -> dict[str, Any]:
    """The entries of ``table`` that are fields of dataclass ``cls``; unknown keys and values whose TOML type
    the field's annotation does not allow (``data_dir = 5`` for ``str | None``) raise :class:`AuditFileError`."""
    types = {f.name: f.type for f in fields(cls) if f.name not in skip}
    check_keys(table, types, where)
    for key, value in table.items():
        expected = _toml_types(types[key])
        if expected is not None and not _has_toml_type(value, expected):
            raise AuditFileError(f"{where}: {key} must be {' or '.join(expected)}, got {value!r}"[:300])
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in table.items()}


# The TOML value a simple field annotation admits (a number where a float is wanted may be an integer).
_TOML_TYPE_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}


def _toml_types(annotation) -> list[str] | None:
    """``["a string"]`` for ``"str | None"`` (a TOML file cannot hold None); ``None`` for other annotations."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    parts = [part.strip() for part in text.split("|") if part.strip() != "None"]
    if not parts or not all(part in _TOML_TYPE_NAMES for part in parts):
        return None
    return [_TOML_TYPE_NAMES[part] for part in parts]


def _has_toml_type(value, expected: list[str]) -> bool:
    checks = {"a string": lambda v: isinstance(v, str), "an integer": is_int,
              "a number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "true or false": lambda v: isinstance(v, bool)}
    return any(checks[name](value) for name in expected)


def spec_hash(spec_dict: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a spec: what the report's provenance cites."""
    return hashlib.sha256(json.dumps(spec_dict, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


__all__ = [
    "DEFAULT_SEED",
    "MAX_SEED",
    "check_keys",
    "dataclass_kwargs",
    "read_toml",
    "spec_hash",
    "validate_seed",
]
