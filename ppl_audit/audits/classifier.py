"""One report per classifier: every audit family a file names, run on one classifier, under one verdict table.

The file lists its parts as other audit files (``[[parts]] file = "mnist-confidently-wrong.toml"``, relative
to the file itself), or inline (``[[parts]] kind = "sweep"`` with its keys under ``[parts.settings]``: what
``ppl-audit audit --classifier ...`` builds, :mod:`ppl_audit.audits.plan`). Each part runs with this file's
seed, and with this file's classifier wherever the part audits one (the OoD and rejection audits bring their
own models). The report opens with a verdict table,
one row per part: the family, its finding, its key figure and whether its samplers passed their checks, in
words. Each part's own report follows as a section, its figures renamed after the part so that none collide.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppl_audit.audits.spec import DEFAULT_SEED, spec_hash, validate_seed
from ppl_audit.errors import AuditFileError, InvalidInputError
from ppl_audit.progress import ProgressFn
from ppl_audit.provenance import library_versions
from ppl_audit.audits.verdict import audited, family_row
from ppl_audit.report import Highlight, Report, Section, Verdict
from ppl_audit.report.model import MAX_HIGHLIGHTS, walk

KIND = "classifier"
MAX_PARTS = 16


@dataclass(frozen=True)
class PartSpec:
    """One part: an audit file (relative to the classifier audit's file, or absolute), or an audit given inline
    by its ``kind`` and ``settings`` (the keys of that kind's ``[audit]`` table, and its arrays of tables)."""

    file: str = ""
    kind: str = ""
    settings: dict | None = None

    def __post_init__(self):
        if self.kind:
            if self.file or not isinstance(self.kind, str):
                raise InvalidInputError(f"a part names an audit file or a kind, not both (file {self.file!r}, "
                                        f"kind {self.kind!r})")
            if self.settings is not None and not isinstance(self.settings, dict):
                raise InvalidInputError(f"a part's settings must be a table, got {self.settings!r}")
            return
        if not isinstance(self.file, str) or not self.file.endswith(".toml"):
            raise InvalidInputError(f"a part's file must name an audit file (.toml), got {self.file!r}")
        if self.settings is not None:
            raise InvalidInputError(f"part {self.file}: settings go with an inline part (kind = ...), "
                                    "not with an audit file")

    def to_dict(self) -> dict[str, Any] | str:
        """The file's name, or the inline audit's kind and settings."""
        return self.file or {"kind": self.kind, "settings": dict(self.settings or {})}


@dataclass(frozen=True)
class ClassifierAuditSpec:
    """Settings of a classifier audit.

    Parameters
    ----------
    title : str
    classifier : str
        The classifier every part that audits one is run on (a model card, or a model of your own).
    parts : tuple of PartSpec
        The audit files to run, in order (``[[parts]]``), 1 to :data:`MAX_PARTS`.
    device : str, optional
        Run every part there (default: each part's own ``device``).
    folder : str
        Where relative part files are found: the audit file's folder, filled in when the file is read.
    """

    title: str = "Audit of the MNIST LeNet-5"
    classifier: str = "mnist-lenet5"
    parts: tuple[PartSpec, ...] = ()
    device: str | None = None
    folder: str = "."

    def __post_init__(self):
        for name in ("title", "classifier", "folder"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise InvalidInputError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if not 1 <= len(self.parts) <= MAX_PARTS:
            raise InvalidInputError(f"a classifier audit needs 1 to {MAX_PARTS} [[parts]], got {len(self.parts)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (what the provenance records and hashes); the folder is where the file was, not what
        it asks, so it is left out."""
        return {"title": self.title, "classifier": self.classifier, "parts": [p.to_dict() for p in self.parts],
                "device": self.device}


SPEC = ClassifierAuditSpec
SPEC_ARRAYS = {"parts": PartSpec}


def bind_to_file(spec: ClassifierAuditSpec, path: Path) -> ClassifierAuditSpec:
    """The spec read from ``path``: relative part files are found beside it."""
    return dataclasses.replace(spec, folder=str(Path(path).resolve().parent))


def load_parts(spec: ClassifierAuditSpec) -> list[tuple[Any, Any]]:
    """``(module, spec)`` of every part, its classifier set to the audit's; any unreadable part is named first.

    Raises
    ------
    AuditFileError
        A part file is missing or invalid, or is itself a classifier audit.
    """
    from ppl_audit.audits import load_audit_file

    loaded = []
    for i, part in enumerate(spec.parts):
        if part.kind:
            module, part_spec = _inline_part(part, i)
        else:
            path = Path(part.file) if Path(part.file).is_absolute() else Path(spec.folder) / part.file
            module, part_spec, _ = load_audit_file(path)
        if module.KIND == KIND:
            raise AuditFileError(f"part {part.file or part.kind}: a classifier audit cannot contain another")
        fields = {f.name for f in dataclasses.fields(part_spec)}
        if "classifier" in fields:
            part_spec = dataclasses.replace(part_spec, classifier=spec.classifier)
        if spec.device is not None and "device" in fields:
            part_spec = dataclasses.replace(part_spec, device=spec.device)
        loaded.append((module, part_spec))
    return loaded


def _inline_part(part: PartSpec, index: int):
    """``(module, spec)`` of an inline part, checked as its kind's audit file would be."""
    from ppl_audit.audits import AUDIT_KINDS
    from ppl_audit.audits.spec import spec_from_toml

    if part.kind not in AUDIT_KINDS:
        raise AuditFileError(f"part {index + 1}: kind = {part.kind!r} is unknown; known kinds: "
                             f"{', '.join(AUDIT_KINDS)}")
    module = AUDIT_KINDS[part.kind]
    arrays = getattr(module, "SPEC_ARRAYS", None) or {}
    settings = dict(part.settings or {})
    doc = {"audit": {"kind": part.kind, **{k: v for k, v in settings.items() if k not in arrays}},
           **{k: v for k, v in settings.items() if k in arrays}}
    spec, _ = spec_from_toml(module.SPEC, doc, f"part {index + 1} ({part.kind})", arrays=arrays)
    return module, spec


def _renamed(section: Section, prefix: str) -> Section:
    """The section with its name and its figures' names prefixed, subsections too, so that parts never collide."""
    return dataclasses.replace(
        section, name=f"{prefix}_{section.name}",
        figures=[dataclasses.replace(f, name=f"{prefix}_{f.name}") for f in section.figures],
        subsections=[_renamed(s, prefix) for s in section.subsections])


def _part_name(report: Report, taken: set[str]) -> str:
    """The part's kind as a name (``confidently_wrong``), numbered from 2 when the kind repeats."""
    base = re.sub(r"[^a-z0-9]+", "_", report.kind.lower())
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def present(spec: ClassifierAuditSpec, seed: int, reports: list[Report], seconds: float) -> Report:
    """The verdict (one row per part), then each part's report as a section."""
    taken: set[str] = set()
    names = [_part_name(r, taken) for r in reports]
    rows = [family_row(r, name) for name, r in zip(names, reports)]
    warnings = [sum(len(s.warnings) for _, s in walk(r.sections)) for r in reports]
    untrusted = [row.item for row in rows if row.trusted is False]
    headline = (f"{spec.classifier}: {len(reports)} audit families; "
                + (f"not trusted: {', '.join(untrusted)} (see their warnings)." if untrusted else
                   "every sampler passed its checks."))
    sections = [Section(name, r.title, paragraphs=list(r.summary), subsections=[_renamed(s, name) for s in r.sections])
                for name, r in zip(names, reports)]
    # each part's first image, renamed after the part like its sections
    firsts = [(name, r.verdict.highlights[0]) for name, r in zip(names, reports) if r.verdict and r.verdict.highlights]
    highlights = [Highlight(dataclasses.replace(h.figure, name=f"{name}_{h.figure.name}"),
                            f"{name}_{h.section}" if h.section else name) for name, h in firsts]
    verdict = Verdict(headline=headline, audited={**audited(reports[0]), "classifier": spec.classifier}, rows=rows,
                      highlights=highlights[:MAX_HIGHLIGHTS])
    spec_dict = spec.to_dict()
    return Report(kind=KIND, title=spec.title, summary=[headline], verdict=verdict,
                  metrics={"verdict": [{"family": r.kind, "audit": r.title, "finding": row.finding,
                                        "key figure": row.key_figure, "trust": row.trust, "warnings": n}
                                       for r, row, n in zip(reports, rows, warnings)],
                           "parts": {name: r.metrics for name, r in zip(names, reports)}},
                  sections=sections,
                  provenance={"seed": seed, "spec": spec_dict, "spec_sha256": spec_hash(spec_dict),
                              "parts": {name: r.provenance for name, r in zip(names, reports)},
                              "versions": library_versions("numpy", "matplotlib")},
                  timings={"total_seconds": seconds,
                           **{f"{name}_seconds": r.timings.get("total_seconds", 0.0) for name, r in
                              zip(names, reports)}})


def run(spec: ClassifierAuditSpec, *, seed: int = DEFAULT_SEED, progress: ProgressFn | None = None,
        cache: str | None = None, data_dir: str | None = None, **_unused) -> Report:
    """Run every part (all are read before any runs), then :func:`present` them as one report."""
    seed = validate_seed(seed)
    start = time.perf_counter()
    parts = load_parts(spec)
    reports = [module.run(part, seed=seed, progress=progress, cache=cache, data_dir=data_dir)
               for module, part in parts]
    return present(spec, seed, reports, time.perf_counter() - start)


__all__ = ["ClassifierAuditSpec", "KIND", "MAX_PARTS", "PartSpec", "SPEC", "SPEC_ARRAYS", "bind_to_file",
           "load_parts", "present", "run"]
