"""Paths the tool writes to: names that become parts of them, and destinations checked before work.

Names (model-card names, target names) become parts of file paths.

A name is letters, digits, ``-``, ``_`` and ``.``, does not start with ``.`` and is at most
:data:`MAX_NAME_LENGTH` characters, so that no name can climb out of its folder (``..``, ``/``, an
absolute path), hide itself, or make a file name longer than the file system allows once prefixes and
hashes are added.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import re
import tempfile
from pathlib import Path

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


# Room a destination's own name needs beside it for the writer's temporary names (".NAME.tmp-PID-XXXXXXXX").
TEMPORARY_NAME_ROOM = 32


def check_writable_destination(path: str | os.PathLike, what: str, *, write_inside: bool = False) -> Path:
    """Refuse, in a second, a destination the tool could not create or write, before any work.

    The nearest existing folder at or above the folder written in (``path`` itself with
    ``write_inside``, as for the weights cache; else its parent, where a report folder is renamed into
    place) must be one in which a file can be created (a probe folder is made and removed), ``path``
    must not be a file, and no component may be too long for the file system.

    Returns
    -------
    pathlib.Path
        The absolute ``path``.

    Raises
    ------
    InvalidInputError
        Naming ``what``, the path and the reason.

    Examples
    --------
    >>> check_writable_destination("/tmp/new-report", "--out").name
    'new-report'
    """
    target = Path(os.path.abspath(os.fspath(path)))
    limit = _name_max(_existing_ancestor(target))
    for part in target.parts[1:]:
        if len(os.fsencode(part)) + TEMPORARY_NAME_ROOM > limit:
            raise InvalidInputError(f"{what} {target}: the name {part[:40]!r}... is too long for the file system "
                                    f"(at most {limit - TEMPORARY_NAME_ROOM} bytes)")
    if target.exists() and not target.is_dir():
        raise InvalidInputError(f"{what} {target}: it exists and is not a folder")
    ancestor = _existing_ancestor(target if write_inside else target.parent)
    if not ancestor.is_dir():
        raise InvalidInputError(f"{what} {target}: {ancestor} is a file, not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(dir=ancestor, prefix=".ppl-audit-probe-"))
    except OSError as exc:
        reason = "it is read-only" if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else exc.strerror
        raise InvalidInputError(f"{what} {target}: cannot write in {ancestor} ({reason})") from None
    return target


def _existing_ancestor(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    while path != path.parent:
        try:
            if path.exists():
                return path
        except OSError:  # a component too long to even look up
            pass
        path = path.parent
    return path


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def process_running(pid: int) -> bool:
    """Whether a process with this id runs on this machine (leftovers of a dead writer may be cleaned).

    Examples
    --------
    >>> process_running(os.getpid())
    True
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def temporary_prefix(name: str, kind: str = "tmp") -> str:
    """``.NAME.KIND-PID-``: the writer's pid lets a later writer tell a killed run's leftovers from a live one's."""
    return f".{name}.{kind}-{os.getpid()}-"


def dead_writers_leftovers(folder: Path, name: str, kinds=("tmp",)) -> list[tuple[Path, str]]:
    """``(entry, kind)`` for every ``.NAME.KIND-PID-*`` in ``folder`` whose writer no longer runs, sorted."""
    found = []
    for entry in sorted(folder.glob(f".{glob.escape(name)}.*-*-*")):
        kind, _, rest = entry.name[len(name) + 2:].partition("-")
        pid = rest.partition("-")[0]
        if kind in kinds and pid.isdigit() and not process_running(int(pid)):
            found.append((entry, kind))
    return found


__all__ = [
    "MAX_NAME_LENGTH",
    "SAFE_NAME",
    "SAFE_NAME_RULE",
    "TEMPORARY_NAME_ROOM",
    "check_safe_name",
    "check_writable_destination",
    "dead_writers_leftovers",
    "is_safe_name",
    "process_running",
    "sha256_file",
    "temporary_prefix",
]
