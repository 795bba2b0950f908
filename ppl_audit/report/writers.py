"""Turn a :class:`~ppl_audit.report.model.Report` into a folder of files.

:func:`write_report` writes one self-contained folder::

    OUT_DIR/
      report.json       the interface scripts read (deterministic, see below)
      timings.json      {"schema_version": N, "seconds": {stage: seconds}}
      report.md         Markdown twin of the report (figures linked)
      report.html       one self-contained page (figures inlined, no external files)
      ppl-audit-manifest.json  the sha256 of every file above: what a later run may replace
      figures/
        NAME.png        the rendered figure
        NAME.json       {"name", "title", "caption", "data", "schema_version"}
      data/
        NAME.csv        a section's data (a level set's samples: latents, class probabilities)

``report.json`` keys
    ``schema_version``, ``kind``, ``title``, ``summary`` (list of paragraphs),
    ``verdict``, ``metrics``, ``provenance``, ``sections`` and ``warnings``.
    ``verdict`` is ``null`` or ``{"headline", "audited", "rows",
    "highlights", "warnings"}``: ``audited`` holds ``classifier``, ``source``,
    ``accuracy`` and ``priors``; a row is ``{"item", "finding", "key_figure",
    "trusted", "trust", "section"}`` (``trusted`` is ``null`` where nothing
    was sampled); a highlight is ``{"name", "title", "caption", "file",
    "section"}``; a warning is ``{"section", "line"}``, the first sentence of
    a section's warning. Each section is ``{"name", "title", "paragraphs",
    "metrics", "tables", "figures", "files", "warnings", "subsections"}``,
    subsections recursively; a file is ``{"name", "title", "file":
    "data/NAME.csv"}``; a table is
    ``{"name", "title", "columns", "rows"}``; a figure is ``{"name", "title",
    "caption", "file": "figures/NAME.png", "data_file": "figures/NAME.json"}``.
    ``warnings`` is the flat list of every section's warnings, depth first, as
    ``{"section": "outer/inner", "section_title": ..., "message": ...}`` where
    ``section`` is the path of section *names* (stable for scripts) and
    ``section_title`` the human title.

JSON conventions (``report.json``, ``timings.json``, ``figures/NAME.json``)
    * Written with ``json.dumps(indent=2, sort_keys=True, allow_nan=False)``,
      a trailing newline, UTF-8 (non-ASCII characters are ``\\u`` escaped).
    * numpy and torch scalars and arrays become Python numbers and (nested)
      lists, tuples become lists, paths become strings, dataclasses become
      dicts (:func:`to_jsonable`).
    * **Non-finite floats are written as the strings** ``"nan"``, ``"inf"``
      and ``"-inf"``: JSON has no such numbers, and a script must be able to
      see that a value was not finite rather than read a silent ``null``.
    * Wall-clock timings are kept out of ``report.json`` (they live in
      ``timings.json``), so a seeded run writes a byte-identical
      ``report.json`` on the same machine.

Writing is atomic: everything is built in a temporary folder next to
``OUT_DIR`` and renamed into place, so a reader never sees half a report and a
failure leaves any previous report untouched. A folder is replaced only when
it holds nothing but what ppl-audit wrote there (:mod:`ppl_audit.report.folder`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
from collections.abc import Mapping
from typing import Any

from ppl_audit.report.common import (
    DATA_DIR,
    FIGURES_DIR,
    REPORT_HTML,
    REPORT_JSON,
    REPORT_MD,
    TIMINGS_JSON,
    check_report,
    data_file,
    figure_data_file,
    figure_file,
    flatten,
    format_value,
    heading_level,
    headline_rows,
    is_number,
    seconds_text,
    to_jsonable,
    warning_entries,
)
from ppl_audit.report.folder import (
    check_output_dir,
    merge_into,
    new_temporary,
    replace_folder,
    write_manifest,
)
from ppl_audit.report.html import report_to_html
from ppl_audit.report.model import Figure, Report, Section, Table

__all__ = [
    "format_value",
    "report_to_html",
    "report_to_json_bytes",
    "report_to_markdown",
    "to_jsonable",
    "write_report",
]


# --------------------------------------------------------------------------- JSON


def _dumps(obj: Any) -> bytes:
    """Serialise with the report's JSON conventions (see the module docstring)."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False)
    return (text + "\n").encode("utf-8")


def _table_dict(table: Table) -> dict[str, Any]:
    return {
        "name": table.name,
        "title": table.title,
        "columns": list(table.columns),
        "rows": [list(row) for row in table.rows],
    }


def _section_dict(section: Section) -> dict[str, Any]:
    return {
        "name": section.name,
        "title": section.title,
        "paragraphs": list(section.paragraphs),
        "metrics": section.metrics,
        "tables": [_table_dict(table) for table in section.tables],
        "figures": [
            {
                "name": figure.name,
                "title": figure.title,
                "caption": figure.caption,
                "file": figure_file(figure),
                "data_file": figure_data_file(figure),
            }
            for figure in section.figures
        ],
        "files": [{"name": f.name, "title": f.title, "file": data_file(f)} for f in section.files],
        "warnings": list(section.warnings),
        "subsections": [_section_dict(sub) for sub in section.subsections],
    }


def _verdict_dict(report: Report) -> dict[str, Any] | None:
    verdict = report.verdict
    if verdict is None:
        return None
    return {
        "headline": verdict.headline,
        "audited": verdict.audited,
        "rows": [dataclasses.asdict(row) for row in verdict.rows],
        "highlights": [{"name": h.figure.name, "title": h.figure.title, "caption": h.figure.caption,
                        "file": figure_file(h.figure), "section": h.section} for h in verdict.highlights],
        "warnings": [{"section": w["section"], "line": w["line"]} for w in warning_entries(report)],
    }


def _report_dict(report: Report) -> dict[str, Any]:
    warnings = [{k: w[k] for k in ("section", "section_title", "message")} for w in warning_entries(report)]
    return {
        "schema_version": report.schema_version,
        "kind": report.kind,
        "title": report.title,
        "summary": list(report.summary),
        "verdict": _verdict_dict(report),
        "metrics": report.metrics,
        "provenance": report.provenance,
        "sections": [_section_dict(section) for section in report.sections],
        "warnings": warnings,
    }


def report_to_json_bytes(report: Report) -> bytes:
    """Serialise a report to the bytes of ``report.json``.

    The output holds no timings and is a pure function of the report's data,
    so a seeded audit gives byte-identical files. Non-finite floats are
    written as ``"nan"``, ``"inf"`` or ``"-inf"`` (see :func:`to_jsonable`).

    Parameters
    ----------
    report : Report
        The report to serialise.

    Returns
    -------
    bytes
        UTF-8 JSON with sorted keys, two-space indent and a trailing newline.

    Raises
    ------
    ValueError
        If two figures (or data files) share a name, a name is not a valid
        file stem, or a table row does not match its columns.
    TypeError
        If a value has no JSON form.

    Examples
    --------
    >>> from ppl_audit.report.model import Report
    >>> data = report_to_json_bytes(Report(kind="demo", title="Demo", metrics={"x": float("inf")}))
    >>> json.loads(data)["metrics"]
    {'x': 'inf'}
    """
    check_report(report)
    return _dumps(_report_dict(report))


def _timings_json_bytes(report: Report) -> bytes:
    return _dumps({"schema_version": report.schema_version, "seconds": report.timings})


def _figure_json_bytes(report: Report, figure: Figure) -> bytes:
    return _dumps(
        {
            "schema_version": report.schema_version,
            "name": figure.name,
            "title": figure.title,
            "caption": figure.caption,
            "data": figure.data,
        }
    )


# -------------------------------------------------------------------- Markdown


def _md(text: Any) -> str:
    """Plain text for Markdown: a ``<`` is backslash-escaped so it can never open raw HTML."""
    return str(text).replace("<", "\\<")


def _md_line(text: Any) -> str:
    """One-line Markdown text (headings, quotes, captions): newlines become spaces."""
    return " ".join(_md(text).splitlines())


def _md_cell(text: Any) -> str:
    return _md_line(text).replace("|", "\\|")


def _md_table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    lines = [
        "| " + " | ".join(_md_cell(column) for column in columns) + " |",
        "| " + " | ".join("---:" if rows and all(is_number(r[i]) for r in rows) else "---"
                          for i in range(len(columns))) + " |",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_md_cell(format_value(cell)) for cell in row) + " |")
    return lines


def _md_key_values(mapping: Mapping[str, Any], key_title: str = "metric") -> list[str]:
    rows = [[key, value] for key, value in flatten(to_jsonable(mapping))]
    return _md_table([key_title, "value"], rows)


def _md_link_text(text: Any) -> str:
    return _md_line(text).replace("[", "\\[").replace("]", "\\]")


def _md_figure(figure: Figure) -> list[str]:
    lines = [f"![{_md_link_text(figure.title)}]({figure_file(figure)})", ""]
    caption = f"*{_md_line(figure.caption)}* " if figure.caption else ""
    return lines + [f"{caption}([data]({figure_data_file(figure)}))", ""]


def _md_verdict(report: Report) -> list[str]:
    """The verdict: headline, what was audited, one row per target or family, warnings in a line each, images."""
    verdict = report.verdict
    lines = ["## Verdict", "", f"**{_md_line(verdict.headline)}**", ""]
    lines += [f"- {_md_line(key)}: {_md_line(format_value(value))}" for key, value in _audited_items(verdict.audited)]
    lines.append("")
    if verdict.rows:
        lines += _md_table(["item", "finding", "key figure", "trust"],
                           [[r.item, r.finding, r.key_figure, r.trust] for r in verdict.rows]) + [""]
    warnings = warning_entries(report)
    if warnings:
        lines += [f"**Warnings** ({len(warnings)}, each in full in its section):", ""]
        lines += [f"- {_md_line(w['section_title'])}: {_md_line(w['line'])}" for w in warnings] + [""]
    for highlight in verdict.highlights:
        lines += _md_figure(highlight.figure)
    return lines


def _audited_items(audited: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``(label, value)`` of the verdict's ``audited`` block, in reading order, unknowns left out."""
    labels = {"classifier": "classifier", "source": "model", "accuracy": "test accuracy", "priors": "priors"}
    return [(labels.get(key, key), value) for key, value in audited.items() if value not in (None, "", [])]


def _md_section(section: Section, depth: int) -> list[str]:
    lines = ["#" * heading_level(depth) + " " + _md_line(section.title), ""]
    for warning in section.warnings:
        lines += [f"> **Warning**: {_md_line(warning)}", ""]
    for paragraph in section.paragraphs:
        lines += [_md(paragraph), ""]
    for figure in section.figures:  # figures first, as in the HTML page; the numbers follow
        lines += _md_figure(figure)
    if section.files:
        lines += ["Data: " + " · ".join(f"[{_md_link_text(f.title)}]({data_file(f)})" for f in section.files), ""]
    if section.metrics:
        lines += _md_key_values(section.metrics) + [""]
    for table in section.tables:
        lines += [f"**{_md_line(table.title)}**", ""]
        lines += (_md_table(list(table.columns), [list(r) for r in table.rows]) if table.rows
                  else ["_(no rows)_"]) + [""]
    for sub in section.subsections:
        lines += _md_section(sub, depth + 1)
    return lines


def report_to_markdown(report: Report) -> str:
    """Render a report as Markdown (the ``report.md`` of :func:`write_report`).

    The page holds the title, links to the report's other files, the verdict
    (or, without one, every warning's first sentence) near the top, the
    summary, the headline metrics (nested keys dotted), each section with its paragraphs,
    metrics, tables and figures (linked as ``figures/NAME.png``), and the
    provenance and timings at the end. Text is written as it is, except that
    ``<`` is backslash-escaped so that it never becomes raw HTML.

    Parameters
    ----------
    report : Report
        The report to render.

    Returns
    -------
    str
        Markdown text ending with a newline.

    Examples
    --------
    >>> from ppl_audit.report.model import Report
    >>> print(report_to_markdown(Report(kind="demo", title="Demo")).splitlines()[0])
    # Demo
    """
    check_report(report)
    lines = [f"# {_md_line(report.title)}", "",
             f"Audit kind: `{report.kind}` · schema version {report.schema_version}", ""]
    lines += ["Files: [report.json](report.json) · [report.md](report.md) · [report.html](report.html) · "
              "[timings.json](timings.json)", ""]
    if report.verdict is not None:
        lines += _md_verdict(report)
    for paragraph in report.summary:
        lines += [_md(paragraph), ""]
    warnings = warning_entries(report)
    if warnings and report.verdict is None:
        lines += ["## Warnings", ""]
        lines += [f"- {_md_line(w['section_title'])}: {_md_line(w['line'])}" for w in warnings] + [""]
    if report.metrics:
        lines += ["## Metrics", ""] + _md_table(["metric", "value"], headline_rows(report.metrics)) + [""]
    for section in report.sections:
        lines += _md_section(section, 0)
    lines += ["## Provenance", ""]
    if report.provenance:
        lines += _md_key_values(report.provenance, "key") + [""]
    else:
        lines += ["_(none recorded)_", ""]
    lines += ["## Timings", ""]
    if report.timings:
        lines += _md_table(["stage", "seconds"],
                           [[stage, seconds_text(value)] for stage, value in report.timings.items()])
    else:
        lines += ["_(none recorded)_"]
    return "\n".join(lines).rstrip("\n") + "\n"


# ---------------------------------------------------------------------- folder


def _write_files(report: Report, folder: pathlib.Path) -> None:
    figures = folder / FIGURES_DIR
    figures.mkdir()
    # mkdtemp makes the folder 0o700; give it the mode a plain mkdir gets under the umask.
    os.chmod(folder, figures.stat().st_mode & 0o7777)
    (folder / REPORT_JSON).write_bytes(report_to_json_bytes(report))
    (folder / TIMINGS_JSON).write_bytes(_timings_json_bytes(report))
    for figure in report.iter_figures():
        (folder / figure_file(figure)).write_bytes(bytes(figure.png))
        (folder / figure_data_file(figure)).write_bytes(_figure_json_bytes(report, figure))
    if any(True for _ in report.iter_files()):
        (folder / DATA_DIR).mkdir()
    for file in report.iter_files():
        (folder / data_file(file)).write_text(file.text, encoding="utf-8", newline="\n")
    (folder / REPORT_MD).write_text(report_to_markdown(report), encoding="utf-8", newline="\n")
    (folder / REPORT_HTML).write_text(report_to_html(report), encoding="utf-8", newline="\n")


def write_report(
    report: Report, out_dir: str | os.PathLike, *, overwrite: bool = True, force: bool = False
) -> pathlib.Path:
    """Write a report folder atomically: JSON, timings, figures, Markdown, HTML and the manifest.

    The layout and JSON conventions are described in the module docstring.
    Everything is written into a temporary folder next to ``out_dir``, with
    the manifest of what was written (:mod:`ppl_audit.report.folder`), and
    renamed into place; an earlier report is first renamed to a backup and
    deleted only once the new one is in place. If anything fails, the
    temporary folder is removed and any previous report is left as it was.

    Parameters
    ----------
    report : Report
        The report to write.
    out_dir : str or os.PathLike
        Destination folder; its parent is created if needed.
    overwrite : bool, default True
        Replace an earlier report. Only an empty folder, or one holding
        nothing but what ppl-audit wrote there (by its manifest, unchanged),
        is replaced.
    force : bool, default False
        Write into a folder that also holds foreign files: they are kept, and
        only the tool's own earlier files are removed.

    Returns
    -------
    pathlib.Path
        The absolute path of the written folder.

    Raises
    ------
    InvalidInputError
        If ``out_dir`` is a file, exists while ``overwrite`` is False, or
        holds files ppl-audit did not write (without ``force``).
    ValueError
        If two figures share a name (or a name is not a file stem), or a table
        row does not match its columns.
    TypeError
        If a value has no JSON form.

    Examples
    --------
    >>> import shutil, tempfile
    >>> from ppl_audit.report.model import Report
    >>> parent = pathlib.Path(tempfile.mkdtemp())
    >>> report = Report(kind="demo", title="Demo", metrics={"accuracy": 0.98})
    >>> out = write_report(report, parent / "demo")
    >>> sorted(p.name for p in out.iterdir())
    ['figures', 'ppl-audit-manifest.json', 'report.html', 'report.json', 'report.md', 'timings.json']
    >>> shutil.rmtree(parent)
    """
    out = check_output_dir(out_dir, overwrite=overwrite, force=force)
    check_report(report)  # fail before touching the disk
    tmp = new_temporary(out)
    try:
        _write_files(report, tmp)
        write_manifest(tmp)
        if force and out.is_dir() and any(out.iterdir()):
            merge_into(tmp, out)
        else:
            replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
