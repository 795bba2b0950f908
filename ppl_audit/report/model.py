"""The Report data object: what an audit returns and what writers turn into files.

A report is data only. Every number a script may read lives in JSON-safe
containers (``dict``/``list``/``str``/``int``/``float``/``bool``/``None``), so that
``report.json`` is a stable interface; wall-clock timings live apart in
:attr:`Report.timings` because they change from run to run and the JSON of a
seeded run must be byte-identical on the same machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 1  # bump when a key of report.json changes meaning or disappears


@dataclass(frozen=True)
class Figure:
    """One figure: its rendered PNG and the data it was drawn from.

    Parameters
    ----------
    name : str
        File stem, snake_case, unique within the report (``figures/NAME.png``).
    title : str
        Short human title.
    caption : str
        One or two sentences saying what to look at.
    png : bytes
        The rendered image.
    data : dict
        JSON-safe data behind the figure, so that a script can redraw it.
    """

    name: str
    title: str
    caption: str
    png: bytes
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Table:
    """A small table of JSON scalars; ``rows`` mirror ``columns``."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Section:
    """A titled part of a report (for example one world, or one target).

    ``paragraphs`` are plain text; ``warnings`` are sentences an auditor must
    read (a failed diagnostic, a target that was not reached).
    """

    name: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    subsections: list["Section"] = field(default_factory=list)


@dataclass
class Report:
    """Everything an audit produced.

    Parameters
    ----------
    kind : str
        Audit kind, for example ``"levelset"``.
    title : str
        Title of the report.
    summary : list of str
        Opening paragraphs.
    metrics : dict
        Headline metrics (JSON-safe, snake_case keys that name their unit).
    sections : list of Section
        The body.
    provenance : dict
        Versions, seed, spec and its hash: what reproduces the report.
    timings : dict
        Wall-clock seconds per stage; kept out of ``report.json``.
    """

    kind: str
    title: str
    summary: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def iter_figures(self):
        """Yield every figure of every section, depth first."""

        def walk(sections):
            for section in sections:
                yield from section.figures
                yield from walk(section.subsections)

        yield from walk(self.sections)

    def iter_warnings(self):
        """Yield ``(section title, warning)`` for every warning, depth first."""

        def walk(sections):
            for section in sections:
                for warning in section.warnings:
                    yield section.title, warning
                yield from walk(section.subsections)

        yield from walk(self.sections)


__all__ = [
    "SCHEMA_VERSION",
    "Figure",
    "Report",
    "Section",
    "Table",
]
