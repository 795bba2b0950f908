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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppl_audit.cards import loads_toml, read_toml_text
from ppl_audit.errors import AuditFileError, InvalidInputError
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


# [audit] keys that say where an audit runs, not what it computes: never part of the spec or its hash
RUN_KEYS = ("executor", "ray_address")


@dataclass(frozen=True)
class RunSettings:
    """Where an audit file asks to run: ``executor`` (``local`` or ``ray``) and ``ray_address``; None if unset."""

    executor: str | None = None
    ray_address: str | None = None


def run_settings(audit: dict[str, Any], source: str) -> RunSettings:
    """The :data:`RUN_KEYS` of an ``[audit]`` table, each a string where given.

    Examples
    --------
    >>> run_settings({"kind": "levelset", "executor": "ray"}, "a.toml")
    RunSettings(executor='ray', ray_address=None)
    """
    values = {key: audit.get(key) for key in RUN_KEYS}
    for key, value in values.items():
        if value is not None and not isinstance(value, str):
            raise AuditFileError(f"{source} [audit]: {key} must be a string, got {value!r}"[:300])
    return RunSettings(**values)


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


def spec_from_toml(cls, doc: dict[str, Any], source: str, *, arrays: dict[str, type] | None = None) -> tuple[Any, int]:
    """Build ``(spec, seed)`` from a parsed audit file: ``[audit]`` keys are the fields of dataclass ``cls``.

    Parameters
    ----------
    cls : type
        The audit kind's frozen spec dataclass; its ``__post_init__`` validates.
    doc : dict
        The parsed file.
    source : str
        The file's name, for messages.
    arrays : dict, optional
        Arrays of tables the kind takes (``{"targets": TargetSpec}`` for ``[[targets]]``): each becomes a
        tuple of that dataclass under the spec field of the same name.

    Raises
    ------
    AuditFileError
        Naming the file, the table and what is wrong.

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Toy:
    ...     size: int = 1
    >>> spec_from_toml(Toy, {"audit": {"kind": "toy", "size": 3, "seed": 7}}, "toy.toml")
    (Toy(size=3), 7)
    """
    arrays = arrays or {}
    check_keys(doc, {"audit", *arrays}, source)
    audit = dict(doc.get("audit", {}))
    audit.pop("kind", None)
    run_settings(audit, source)  # checked here, taken by the runner (ppl_audit.audits.run_audit, the CLI)
    for key in RUN_KEYS:
        audit.pop(key, None)
    try:
        seed = validate_seed(audit.pop("seed", DEFAULT_SEED))
    except AuditFileError as exc:
        raise AuditFileError(f"{source}: [audit] {exc}") from exc
    try:
        kwargs = dataclass_kwargs(cls, audit, f"{source} [audit]", skip=tuple(arrays))
        for name, item_cls in arrays.items():
            if name in doc:
                kwargs[name] = _array_of_tables(item_cls, doc[name], name, source)
        return cls(**kwargs), seed
    except (InvalidInputError, TypeError) as exc:
        if isinstance(exc, AuditFileError):
            raise
        raise AuditFileError(f"{source}: {exc}") from exc


def _array_of_tables(cls, items, name: str, source: str) -> tuple:
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise AuditFileError(f"{source}: {name} must be an array of tables ([[{name}]])")
    return tuple(cls(**dataclass_kwargs(cls, item, f"{source} [[{name}]] #{i + 1}")) for i, item in enumerate(items))


def spec_fields(spec) -> dict[str, Any]:
    """A flat spec dataclass as JSON-safe data: its fields, tuples as lists (what a ``to_dict`` returns).

    Examples
    --------
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Toy:
    ...     grid: tuple = (0.5,)
    >>> spec_fields(Toy())
    {'grid': [0.5]}
    """
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.__dict__.items()}


def spec_hash(spec_dict: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a spec: what the report's provenance cites."""
    return hashlib.sha256(json.dumps(spec_dict, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


__all__ = [
    "DEFAULT_SEED",
    "MAX_SEED",
    "RUN_KEYS",
    "RunSettings",
    "check_keys",
    "dataclass_kwargs",
    "spec_fields",
    "spec_from_toml",
    "read_toml",
    "run_settings",
    "spec_hash",
    "validate_seed",
]
