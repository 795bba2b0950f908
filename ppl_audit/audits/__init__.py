"""Audits: one module per kind, each ``run(spec, *, seed) -> Report`` over its ``SPEC`` dataclass.

:func:`load_audit_file` reads a declarative TOML file and returns the kind,
the validated spec and the seed; :data:`AUDIT_KINDS` maps kinds to modules.
"""

from __future__ import annotations

import os

from ppl_audit.audits import gwin, levelset, ood, selective
from ppl_audit.audits.spec import read_toml, spec_from_toml
from ppl_audit.errors import AuditFileError

AUDIT_KINDS = {levelset.KIND: levelset, gwin.KIND: gwin, ood.KIND: ood, selective.KIND: selective}


def load_audit_file(path: str | os.PathLike):
    """Parse an audit file into ``(module, spec, seed)``.

    Raises
    ------
    AuditFileError
        Naming the file and what is wrong with it.
    """
    doc = read_toml(path)
    audit = doc.get("audit")
    if not isinstance(audit, dict):
        raise AuditFileError(f"{path}: missing table [audit]")
    kind = audit.get("kind")
    if not isinstance(kind, str) or kind not in AUDIT_KINDS:
        raise AuditFileError(f"{path}: [audit] kind = {kind!r} is unknown; known kinds: {', '.join(AUDIT_KINDS)}")
    module = AUDIT_KINDS[kind]
    spec, seed = spec_from_toml(module.SPEC, doc, str(path), arrays=getattr(module, "SPEC_ARRAYS", None))
    return module, spec, seed


__all__ = ["AUDIT_KINDS", "load_audit_file"]
