"""Report folders the tool owns: a manifest of what it wrote, and replacing only that.

Every report folder holds :data:`MANIFEST`, written last: the tool's name and the sha256 of every file
it wrote. A later run replaces the folder only when everything in it is in the manifest and unchanged.
Anything else (a file the user added or edited, a link, a folder of theirs) is foreign: the run refuses
with one line naming it, and with ``force`` it writes its files beside the foreign ones, removing only
its own earlier files, and never a foreign one.

Temporary and backup folders are named ``.OUT.tmp-PID-...`` and ``.OUT.old-PID-...``; those of runs
that were killed are cleaned up (a backup is restored when its report was never replaced) by the next
run that writes to ``OUT``.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
import uuid

from ppl_audit.errors import InvalidInputError
from ppl_audit.paths import check_writable_destination, dead_writers_leftovers, sha256_file, temporary_prefix

MANIFEST = "ppl-audit-manifest.json"
TOOL = "ppl-audit"
MANIFEST_VERSION = 1
SHOWN_FOREIGN = 3  # foreign entries named in the refusal; the rest are counted


def write_manifest(folder: pathlib.Path) -> None:
    """List every file below ``folder`` with its sha256 in ``folder / MANIFEST`` (call it last).

    Folders are listed too, as ``"NAME/"`` with no checksum, so that an empty ``figures/`` is the tool's.
    """
    files = {rel: [] if rel.endswith("/") else sha256_file(path) for rel, path in _entries(folder)}
    files.pop(MANIFEST, None)
    text = json.dumps({"tool": TOOL, "manifest_version": MANIFEST_VERSION, "files": files}, indent=1, sort_keys=True)
    (folder / MANIFEST).write_text(text + "\n", encoding="utf-8")


def read_manifest(folder: pathlib.Path) -> dict[str, list[str]] | None:
    """``{relative path: accepted sha256s}`` of a folder's manifest; None if it has no valid one."""
    try:
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    files = doc.get("files") if isinstance(doc, dict) and doc.get("tool") == TOOL else None
    if not isinstance(files, dict):
        return None
    accepted = {}
    for rel, sums in files.items():
        sums = [sums] if isinstance(sums, str) else sums
        if not (isinstance(sums, list) and all(isinstance(s, str) for s in sums)):
            return None
        accepted[rel] = sums
    return accepted


def foreign_entries(folder: pathlib.Path) -> list[str] | None:
    """What below ``folder`` the tool did not write, or changed since; None when it has no manifest.

    Foreign: a file not in the manifest or whose sha256 differs, any link, and any folder that holds no
    listed file.
    """
    listed = read_manifest(folder)
    if listed is None:
        return None
    own_dirs = {p.as_posix() for rel in listed for p in pathlib.PurePosixPath(rel).parents}
    foreign = []
    for rel, path in _entries(folder):
        if path.is_symlink():
            foreign.append(rel.rstrip("/"))
        elif rel.endswith("/"):
            if rel[:-1] not in own_dirs and rel not in listed:
                foreign.append(rel)
        elif rel != MANIFEST and sha256_file(path) not in listed.get(rel, ()):
            foreign.append(rel)
    return foreign


def check_output_dir(out_dir: str | os.PathLike, *, overwrite: bool = True, force: bool = False) -> pathlib.Path:
    """Check that a report may be written to ``out_dir``, before any work is done.

    Callers run it before a long audit so that a refused destination fails in a second, not after the
    audit; :func:`ppl_audit.report.write_report` runs it again.

    Parameters
    ----------
    out_dir : path-like
    overwrite : bool, default True
        Replace an earlier report of the tool's.
    force : bool, default False
        Also write into a folder that holds foreign files, keeping them.

    Returns
    -------
    pathlib.Path
        The absolute destination.

    Raises
    ------
    InvalidInputError
        ``out_dir`` is a file, exists while ``overwrite`` is False, holds files the tool did not write
        (without ``force``), or holds a foreign file where the report writes one of its own.

    Examples
    --------
    >>> check_output_dir("/tmp/some-new-report-folder").name
    'some-new-report-folder'
    """
    out = pathlib.Path(os.path.abspath(os.fspath(out_dir)))
    if not out.name:
        raise InvalidInputError(f"cannot write a report to {out}: choose a folder below it")
    check_writable_destination(out, "cannot write a report to")  # first: it refuses names too long to look up
    if out.is_symlink() and not out.is_dir():
        raise InvalidInputError(f"cannot write a report to {out}: it exists and is not a folder")
    if not (out.exists() or out.is_symlink()):
        return out
    if not overwrite:
        raise InvalidInputError(f"report folder {out} already exists; remove it, choose another folder "
                                "or pass overwrite=True")
    if force or not any(out.iterdir()):
        return out
    foreign = foreign_entries(out)
    if foreign is None:
        raise InvalidInputError(f"refusing to overwrite {out}: ppl-audit did not write it (it has no {MANIFEST}); "
                                "choose another folder, or pass --force to add the report beside its files")
    if foreign:
        shown = ", ".join(foreign[:SHOWN_FOREIGN]) + (f" and {len(foreign) - SHOWN_FOREIGN} more"
                                                       if len(foreign) > SHOWN_FOREIGN else "")
        raise InvalidInputError(f"refusing to overwrite {out}: it holds files ppl-audit did not write or that "
                                f"changed since ({shown}); move them, choose another folder, or pass --force "
                                "to keep them beside the new report")
    return out


def new_temporary(out: pathlib.Path) -> pathlib.Path:
    """A fresh ``.OUT.tmp-PID-...`` folder beside ``out`` (after cleaning up killed runs' leftovers)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    return pathlib.Path(tempfile.mkdtemp(dir=out.parent, prefix=temporary_prefix(out.name)))


def clean_stale(out: pathlib.Path) -> list[pathlib.Path]:
    """Remove the temporary folders of killed runs writing to ``out``; restore or remove their backups.

    Only entries named with a process id that no longer runs are touched. Returns what was cleaned.
    """
    cleaned = []
    for entry, kind in dead_writers_leftovers(out.parent, out.name, ("tmp", "old")):
        if kind == "old" and not (out.exists() or out.is_symlink()):
            os.rename(entry, out)  # killed between the two renames: the old report was never replaced
        else:
            _remove(entry)
        cleaned.append(entry)
    return cleaned


def replace_folder(tmp: pathlib.Path, out: pathlib.Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing an earlier report of the tool's atomically."""
    if not (out.exists() or out.is_symlink()):
        os.rename(tmp, out)
        return
    backup = out.parent / f"{temporary_prefix(out.name, 'old')}{uuid.uuid4().hex[:12]}"
    os.rename(out, backup)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(backup, out)
        raise
    _remove(backup)


def merge_into(tmp: pathlib.Path, out: pathlib.Path) -> None:
    """Move the files of the finished folder ``tmp`` into ``out``, keeping ``out``'s foreign files.

    The tool's earlier files that the new report does not write again are removed. While the files move,
    ``out``'s manifest accepts both their old and new checksums, so a run killed half-way leaves a folder
    that the next run still recognises as the tool's.

    Raises
    ------
    InvalidInputError
        A foreign file or folder stands where the new report writes one of its own (nothing is moved).
    """
    new = read_manifest(tmp) or {}
    old = read_manifest(out) or {}
    foreign = set(foreign_entries(out) or []) if old else {rel for rel, _ in _entries(out)}
    clashes = sorted(rel for rel in new if (not rel.endswith("/") and (rel in foreign or f"{rel}/" in foreign))
                     or _blocked(out, rel))
    if clashes:
        raise InvalidInputError(f"cannot write the report into {out}: {', '.join(clashes[:SHOWN_FOREIGN])} "
                                "there is not ppl-audit's; move it or choose another folder")
    stale = [rel for rel in old if rel not in new and rel not in foreign and not rel.endswith("/")
             and (out / rel).is_file()]
    both = {rel: old.get(rel, []) + new.get(rel, []) for rel in set(old) | set(new)}
    _write_json(out / MANIFEST, {"tool": TOOL, "manifest_version": MANIFEST_VERSION, "files": both})
    for rel in new:
        if rel.endswith("/"):
            (out / rel).mkdir(parents=True, exist_ok=True)
        else:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, out / rel)
    for rel in stale:
        (out / rel).unlink()
    os.replace(tmp / MANIFEST, out / MANIFEST)
    _remove(tmp)


def _blocked(out: pathlib.Path, rel: str) -> bool:
    """True when something that is not a folder stands where ``rel`` (``"NAME/"`` for a folder) needs one."""
    path = pathlib.PurePosixPath(rel)
    folders = [p for p in [*path.parents, *([path] if rel.endswith("/") else [])] if str(p) != "."]
    return any((out / p).is_symlink() or ((out / p).exists() and not (out / p).is_dir()) for p in folders)


def _entries(folder: pathlib.Path):
    """``(relative path, path)`` of everything below ``folder``, folders as ``"NAME/"``; links not followed."""
    for root, dirs, files in os.walk(folder):
        for name in sorted(dirs) + sorted(files):
            path = pathlib.Path(root) / name
            yield path.relative_to(folder).as_posix() + ("/" if name in dirs else ""), path


def _write_json(path: pathlib.Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _remove(path: pathlib.Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


__all__ = [
    "MANIFEST",
    "MANIFEST_VERSION",
    "SHOWN_FOREIGN",
    "TOOL",
    "check_output_dir",
    "clean_stale",
    "foreign_entries",
    "merge_into",
    "new_temporary",
    "read_manifest",
    "replace_folder",
    "write_manifest",
]
