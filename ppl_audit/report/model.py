"""The Report data object: what an audit returns and what writers turn into files.

A report is data only. Every number a script may read lives in JSON-safe
containers (``dict``/``list``/``str``/``int``/``float``/``bool``/``None``), so that
``report.json`` is a stable interface; wall-clock timings live apart in
:attr:`Report.timings` because they change from run to run and the JSON of a
seeded run must be byte-identical on the same machine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

# Bump when a key of report.json changes meaning or disappears. 2: the verdict block, section files
# (data/NAME.csv) and the level-set summary's nested R-hat and convergence columns.
SCHEMA_VERSION = 2


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


@dataclass(frozen=True)
class DataFile:
    """A file of data behind a section (the samples of a level set, say), written as ``data/NAME.EXT``.

    Parameters
    ----------
    name : str
        File stem, unique within the report, like a figure's.
    title : str
        What the link says.
    text : str
        The file's contents (CSV: a header row, then one row per record).
    extension : str, default "csv"
    """

    name: str
    title: str
    text: str
    extension: str = "csv"


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
    files: list[DataFile] = field(default_factory=list)


@dataclass(frozen=True)
class VerdictRow:
    """One line of a verdict: a target, or an audit family.

    Parameters
    ----------
    item : str
        What was audited (``"house-rocket: ambiguous"``, ``"calibration"``).
    finding : str
        What was found, in words.
    key_figure : str
        The one number that says it, with its unit.
    trusted : bool or None
        Whether every check of the sampler behind it passed; ``None`` where nothing was sampled.
    trust : str
        The same in words, with the figure that decided it.
    section : str
        Name of the section that holds the details (the row links there); empty for none.
    """

    item: str
    finding: str
    key_figure: str
    trusted: bool | None
    trust: str
    section: str = ""


@dataclass(frozen=True)
class Highlight:
    """An image that shows a finding, and the section that explains it."""

    figure: Figure
    section: str = ""


@dataclass
class Verdict:
    """The report's first screen: what was audited, one row per target or family, and the images that show it.

    Parameters
    ----------
    headline : str
        One sentence: how many results can be trusted, and what was found.
    audited : dict
        ``classifier`` (name), ``source`` (model card or file), ``accuracy`` (on its test data, or
        ``None``) and ``priors`` (list of names).
    rows : list of VerdictRow
    highlights : list of Highlight
        At most :data:`MAX_HIGHLIGHTS`.
    """

    headline: str
    audited: dict[str, Any] = field(default_factory=dict)
    rows: list[VerdictRow] = field(default_factory=list)
    highlights: list[Highlight] = field(default_factory=list)


MAX_HIGHLIGHTS = 3  # the verdict's screen shows three images, no more


def walk(sections: list[Section], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Section]]:
    """Yield ``(path of names, section)`` for every section and subsection, depth first."""
    for section in sections:
        here = (*path, section.name)
        yield here, section
        yield from walk(section.subsections, here)


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
    verdict: Verdict | None = None

    def iter_figures(self):
        """Yield every figure: the verdict's highlights, then every section's, depth first."""
        if self.verdict is not None:
            yield from (h.figure for h in self.verdict.highlights)
        for _, section in walk(self.sections):
            yield from section.figures

    def iter_files(self):
        """Yield every section's data files, depth first."""
        for _, section in walk(self.sections):
            yield from section.files

    def iter_warnings(self):
        """Yield ``(section title, warning)`` for every warning, depth first."""
        for _, section in walk(self.sections):
            for warning in section.warnings:
                yield section.title, warning


__all__ = [
    "MAX_HIGHLIGHTS",
    "SCHEMA_VERSION",
    "DataFile",
    "Figure",
    "Highlight",
    "Report",
    "Section",
    "Table",
    "Verdict",
    "VerdictRow",
    "walk",
]
