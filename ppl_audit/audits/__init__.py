"""Audits: one module per kind, each ``run(spec, *, seed) -> Report`` over its ``SPEC`` dataclass.

:func:`load_audit_file` reads a declarative TOML file and returns the kind,
the validated spec and the seed; :data:`AUDIT_KINDS` maps kinds to modules;
:func:`run_audit` runs a file or a spec and can write its report.
"""

from __future__ import annotations

import os

from ppl_audit.audits import calibration, classifier, confidently_wrong, gwin, levelset, novel_class, ood
from ppl_audit.audits import selective, sweep
from ppl_audit.audits.spec import DEFAULT_SEED, RunSettings, read_toml, run_settings, spec_from_toml
from ppl_audit.errors import AuditFileError, InvalidInputError
from ppl_audit.execute import Executor, make_executor, use_executor
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


def audit_file_run_settings(path: str | os.PathLike) -> RunSettings:
    """Where the audit file at ``path`` asks to run (its ``[audit]`` ``executor`` and ``ray_address``)."""
    audit = read_toml(path).get("audit")
    return run_settings(audit if isinstance(audit, dict) else {}, str(path))


def executor_from(settings: RunSettings | None, executor: str | None = None,
                  ray_address: str | None = None) -> Executor:
    """The executor a run asks for: ``executor`` and ``ray_address`` (flags) over the file's ``settings``.

    The file's address applies only where the run goes to Ray: ``--executor local`` runs a file that
    names a cluster on this machine instead. An address given with the local executor is refused.
    """
    settings = settings or RunSettings()
    kind = executor or settings.executor or "local"
    address = ray_address or (settings.ray_address if kind == "ray" else None)
    return make_executor(kind, address)


def with_executor(report: Report, executor: Executor) -> Report:
    """``report`` with ``provenance.executor``: where it ran, kept apart from the spec and its hash."""
    report.provenance = {**report.provenance, "executor": executor.provenance()}
    return report


def run_audit(audit, *, seed: int | None = None, out: str | os.PathLike | None = None, force: bool = False,
              executor: str | Executor | None = None, ray_address: str | None = None, **options) -> Report:
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
    executor : {"local", "ray"} or Executor, optional
        Where the audit's independent units run (default: the file's ``executor``, else ``local``); an
        :class:`~ppl_audit.execute.Executor` is used as it is and left open.
    ray_address : str, optional
        The Ray cluster of the ``ray`` executor (default: the file's ``ray_address``, else ``auto``).
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
    settings = RunSettings()
    if isinstance(audit, (str, os.PathLike)):
        module, spec, file_seed = load_audit_file(audit)
        settings = audit_file_run_settings(audit)
    else:
        module = next((m for m in AUDIT_KINDS.values() if isinstance(audit, m.SPEC)), None)
        if module is None:
            raise InvalidInputError(f"run_audit needs an audit file or an audit spec, got {type(audit).__name__}")
        spec, file_seed = audit, DEFAULT_SEED
    destination = check_output_dir(out, force=force) if out is not None else None
    seed = file_seed if seed is None else seed
    owned = None if isinstance(executor, Executor) else executor_from(settings, executor, ray_address)
    try:
        with use_executor(owned or executor) as running:
            report = with_executor(module.run(spec, seed=seed, **options), running)
    finally:
        if owned is not None:
            owned.close()
    if destination is not None:
        write_report(report, destination, force=force)
    return report


__all__ = ["AUDIT_KINDS", "audit_file_run_settings", "executor_from", "load_audit_file", "run_audit",
           "with_executor"]
