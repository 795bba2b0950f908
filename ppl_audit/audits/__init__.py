"""Audits: one module per kind, each ``run(spec, *, seed) -> Report`` over its ``SPEC`` dataclass.

:func:`load_audit_file` reads a declarative TOML file and returns the kind,
the validated spec and the seed; :data:`AUDIT_KINDS` maps kinds to modules;
:func:`run_audit` runs a file or a spec and can write its report.
"""

from __future__ import annotations

import os

from ppl_audit.audits import calibration, classifier, confidently_wrong, gwin, levelset, novel_class, ood
from ppl_audit.audits import selective, sweep
from ppl_audit.audits.spec import DEFAULT_SEED, read_toml, spec_from_toml
from ppl_audit.errors import AuditFileError, InvalidInputError
from ppl_audit.report import Report, check_output_dir, write_report

AUDIT_KINDS = {module.KIND: module for module in (levelset, gwin, ood, selective, calibration, confidently_wrong,
                                                 novel_class, sweep, classifier)}


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
    if hasattr(module, "bind_to_file"):  # a kind whose settings name files relative to its own
        spec = module.bind_to_file(spec, path)
    return module, spec, seed


def run_audit(audit, *, seed: int | None = None, out: str | os.PathLike | None = None, force: bool = False,
              **options) -> Report:
    """Run an audit, from its file or its spec, and write its report when ``out`` is given.

    Parameters
    ----------
    audit : path-like or spec
        An audit file (``analyses/*.toml``) or a spec of one of the kinds (``LevelSetAuditSpec``,
        ``OodAuditSpec``, ``CalibrationAuditSpec``, ``ConfidentlyWrongAuditSpec``, ``ClassifierAuditSpec``, ...).
    seed : int, optional
        Seeds every draw (default: the file's ``seed``, else 0).
    out : path-like, optional
        Write the report folder there (checked before any work is done).
    force : bool
        Write into a folder that also holds foreign files (they are kept).
    **options
        Passed to the kind's ``run``: ``progress``, ``cache``, ``data_dir``, and
        the models it accepts ready-made (``classifier``, ``priors``, ``models``...).

    Returns
    -------
    Report

    Examples
    --------
    >>> from ppl_audit.audits.levelset import LevelSetAuditSpec
    >>> report = run_audit(LevelSetAuditSpec(), out="demo-report")  # doctest: +SKIP
    >>> report.title  # doctest: +SKIP
    'Level-set audit of the house/rocket classifier'
    """
    if isinstance(audit, (str, os.PathLike)):
        module, spec, file_seed = load_audit_file(audit)
    else:
        module = next((m for m in AUDIT_KINDS.values() if isinstance(audit, m.SPEC)), None)
        if module is None:
            raise InvalidInputError(f"run_audit needs an audit file or an audit spec, got {type(audit).__name__}")
        spec, file_seed = audit, DEFAULT_SEED
    destination = check_output_dir(out, force=force) if out is not None else None
    report = module.run(spec, seed=file_seed if seed is None else seed, **options)
    if destination is not None:
        write_report(report, destination, force=force)
    return report


__all__ = ["AUDIT_KINDS", "load_audit_file", "run_audit"]
