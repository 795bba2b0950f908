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
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

from ppl_audit.errors import AuditFileError

DEFAULT_SEED = 0
# Audits derive per-run seeds as seed * 1000 + offset; keeping seeds below
# 2^32 keeps those inside torch's 64-bit manual_seed.
MAX_SEED = 2**32 - 1


def validate_seed(seed) -> int:
    """Return ``seed`` if it is an integer in ``[0, MAX_SEED]``, else raise.

    Examples
    --------
    >>> validate_seed(7)
    7
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise AuditFileError(f"seed must be an integer in 0..{MAX_SEED}, got {seed!r}")
    return seed


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a TOML file, raising :class:`AuditFileError` that names the file."""
    path = Path(path)
    if not path.is_file():
        raise AuditFileError(f"audit file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AuditFileError(f"{path}: not valid TOML: {exc}") from exc


def check_keys(table: dict[str, Any], allowed, where: str) -> None:
    """Raise :class:`AuditFileError` for keys of ``table`` outside ``allowed``."""
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise AuditFileError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def dataclass_kwargs(cls, table: dict[str, Any], where: str, skip=()) -> dict[str, Any]:
    """The entries of ``table`` that are fields of dataclass ``cls`` (unknown keys raise)."""
    names = {f.name for f in fields(cls)} - set(skip)
    check_keys(table, names, where)
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in table.items()}


def spec_hash(spec_dict: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a spec: what the report's provenance cites."""
    return hashlib.sha256(json.dumps(spec_dict, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
