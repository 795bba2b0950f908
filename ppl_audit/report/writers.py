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

``report.json`` keys
    ``schema_version``, ``kind``, ``title``, ``summary`` (list of paragraphs),
    ``metrics``, ``provenance``, ``sections`` and ``warnings``. Each section is
    ``{"name", "title", "paragraphs", "metrics", "tables", "figures",
    "warnings", "subsections"}``, subsections recursively; a table is
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

import base64
import dataclasses
import html
import json
import math
import os
import pathlib
import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ppl_audit.report.folder import (
    check_output_dir,
    merge_into,
    new_temporary,
    replace_folder,
    write_manifest,
)
from ppl_audit.report.model import Figure, Report, Section, Table

__all__ = [
    "format_value",
    "report_to_html",
    "report_to_json_bytes",
    "report_to_markdown",
    "to_jsonable",
    "write_report",
]

REPORT_JSON = "report.json"
TIMINGS_JSON = "timings.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
FIGURES_DIR = "figures"

NAN_STR, POS_INF_STR, NEG_INF_STR = "nan", "inf", "-inf"  # JSON has no non-finite numbers
SIGNIFICANT_DIGITS = 4  # enough to read a metric, short enough for a table cell
LIST_HEAD, LIST_TAIL = 3, 2  # items kept at each end when a long list is shortened
LIST_MAX_SHOWN = LIST_HEAD + LIST_TAIL + 1  # lists up to this length are shown whole
MAX_CELL_CHARS = 200  # a table cell longer than this is cut (the JSON keeps it all)
MAX_HEADING_LEVEL = 6  # Markdown and HTML stop at ######
FIGURE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")  # a file stem, no dots or slashes
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- JSON


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` into JSON-safe Python containers.

    Parameters
    ----------
    obj : object
        ``None``, ``bool``, ``int``, ``float``, ``str``, numpy scalars and
        arrays, torch tensors (detached and moved to the CPU), lists, tuples,
        mappings with ``str`` keys, :class:`pathlib.PurePath` (becomes ``str``)
        and dataclass instances (through :func:`dataclasses.asdict`), nested
        in any way.

    Returns
    -------
    object
        The same value made of ``dict``/``list``/``str``/``int``/``float``/
        ``bool``/``None`` only. Non-finite floats become the strings
        ``"nan"``, ``"inf"`` and ``"-inf"``.

    Raises
    ------
    TypeError
        For a value with no JSON form (bytes, sets, complex numbers, a mapping
        with a non-string key, arbitrary objects).

    Examples
    --------
    >>> import numpy as np
    >>> to_jsonable({"a": np.float32(0.5), "b": (1, np.int64(2)), "c": float("nan")})
    {'a': 0.5, 'b': [1, 2], 'c': 'nan'}
    """
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return _float(float(obj))
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    torch = sys.modules.get("torch")  # a tensor can only exist once torch is imported
    if torch is not None and isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"cannot write a mapping key of type {type(key).__name__} ({key!r}) "
                    "to JSON: keys must be str"
                )
            out[str(key)] = to_jsonable(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(item) for item in obj]
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    raise TypeError(
        f"cannot write a value of type {type(obj).__module__}.{type(obj).__qualname__} "
        f"to JSON: {_short_repr(obj)}"
    )


def _float(value: float) -> float | str:
    if math.isnan(value):
        return NAN_STR
    if math.isinf(value):
        return POS_INF_STR if value > 0 else NEG_INF_STR
    return value


def _short_repr(obj: Any, limit: int = 80) -> str:
    text = repr(obj)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dumps(obj: Any) -> bytes:
    """Serialise with the report's JSON conventions (see the module docstring)."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=True, allow_nan=False)
    return (text + "\n").encode("utf-8")


def _figure_file(figure: Figure) -> str:
    return f"{FIGURES_DIR}/{figure.name}.png"


def _figure_data_file(figure: Figure) -> str:
    return f"{FIGURES_DIR}/{figure.name}.json"


def _check_report(report: Report) -> None:
    """Raise ``ValueError`` for figure names that cannot be files or collide, and bad tables."""
    seen: dict[str, str] = {}
    for figure in report.iter_figures():
        if not isinstance(figure.name, str) or not FIGURE_NAME_RE.match(figure.name):
            raise ValueError(
                f"figure name {figure.name!r} cannot be a file stem: use letters, digits, "
                "'_' and '-' only (for example 'trace_plot')"
            )
        if not isinstance(figure.png, (bytes, bytearray, memoryview)):
            raise ValueError(
                f"figure {figure.name!r}: png must be bytes, got {type(figure.png).__name__}"
            )
        if not bytes(figure.png[: len(PNG_SIGNATURE)]) == PNG_SIGNATURE:
            raise ValueError(f"figure {figure.name!r}: png does not start with the PNG signature")
        key = figure.name.lower()  # case-insensitive file systems would merge these files
        if key in seen:
            raise ValueError(
                f"duplicate figure name {figure.name!r} (already used by {seen[key]!r}): "
                "figure names must be unique across the report"
            )
        seen[key] = figure.name
    for _, section in _walk(report.sections):
        for table in section.tables:
            for i, row in enumerate(table.rows):
                if len(row) != len(table.columns):
                    raise ValueError(
                        f"table {table.name!r} in section {section.name!r}: row {i} has "
                        f"{len(row)} cells but there are {len(table.columns)} columns"
                    )


def _walk(
    sections: list[Section], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], Section]]:
    """Yield ``(path of names, section)`` depth first."""
    for section in sections:
        here = (*path, section.name)
        yield here, section
        yield from _walk(section.subsections, here)


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
                "file": _figure_file(figure),
                "data_file": _figure_data_file(figure),
            }
            for figure in section.figures
        ],
        "warnings": list(section.warnings),
        "subsections": [_section_dict(sub) for sub in section.subsections],
    }


def _report_dict(report: Report) -> dict[str, Any]:
    warnings = [
        {"section": "/".join(path), "section_title": section.title, "message": message}
        for path, section in _walk(report.sections)
        for message in section.warnings
    ]
    return {
        "schema_version": report.schema_version,
        "kind": report.kind,
        "title": report.title,
        "summary": list(report.summary),
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
        If two figures share a name, a figure name is not a valid file stem,
        or a table row does not match its columns.
    TypeError
        If a value has no JSON form.

    Examples
    --------
    >>> from ppl_audit.report.model import Report
    >>> data = report_to_json_bytes(Report(kind="demo", title="Demo", metrics={"x": float("inf")}))
    >>> json.loads(data)["metrics"]
    {'x': 'inf'}
    """
    _check_report(report)
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


# ------------------------------------------------------------------ text helpers


def format_value(value: Any) -> str:
    """Format one value for a human-readable table cell.

    Parameters
    ----------
    value : object
        Anything :func:`to_jsonable` accepts.

    Returns
    -------
    str
        ``None`` as ``"n/a"``, booleans as ``"true"``/``"false"``, integers as
        they are, floats with 4 significant digits (non-finite ones as
        ``"nan"``, ``"inf"``, ``"-inf"``), long lists shortened to their ends
        with their length, and anything longer than 200 characters cut.

    Examples
    --------
    >>> format_value(0.123456), format_value(12), format_value(None)
    ('0.1235', '12', 'n/a')
    >>> format_value(list(range(10)))
    '[0, 1, 2, …, 8, 9] (n=10)'
    """
    text = _format(to_jsonable(value))
    if len(text) > MAX_CELL_CHARS:
        text = text[: MAX_CELL_CHARS - 1] + "…"
    return text


def _format(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{SIGNIFICANT_DIGITS}g}"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if len(value) <= LIST_MAX_SHOWN:
            return "[" + ", ".join(_format(item) for item in value) + "]"
        head = [_format(item) for item in value[:LIST_HEAD]]
        tail = [_format(item) for item in value[-LIST_TAIL:]]
        return "[" + ", ".join([*head, "…", *tail]) + f"] (n={len(value)})"
    if isinstance(value, dict):
        items = [f"{key}: {_format(item)}" for key, item in list(value.items())[:LIST_MAX_SHOWN]]
        if len(value) > LIST_MAX_SHOWN:
            items.append(f"… (n={len(value)})")
        return "{" + ", ".join(items) + "}"
    return str(value)  # unreachable after to_jsonable; kept for safety


HEADLINE_DEPTH = 3  # headline tables show keys this deep; the sections and report.json hold the rest


def _flatten(mapping: Mapping[str, Any], prefix: str = "", max_depth: int | None = None) -> list[tuple[str, Any]]:
    """Flatten nested dicts into ``(dotted.key, value)`` rows, in insertion order.

    With ``max_depth``, dicts nested deeper are left out (the caller says where they are).
    """
    rows: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            if max_depth is None or max_depth > 1:
                rows.extend(_flatten(value, dotted, None if max_depth is None else max_depth - 1))
        else:
            rows.append((dotted, value))
    return rows


def _headline_rows(metrics: Mapping[str, Any]) -> list[list[Any]]:
    rows = [[k, v] for k, v in _flatten(to_jsonable(metrics), max_depth=HEADLINE_DEPTH)]
    hidden = len(_flatten(to_jsonable(metrics))) - len(rows)
    if hidden:
        rows.append(["…", f"{hidden} more values in the sections below and in report.json"])
    return rows


def _is_number(value: Any) -> bool:
    value = to_jsonable(value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _heading_level(depth: int) -> int:
    return min(2 + depth, MAX_HEADING_LEVEL)


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
        "| " + " | ".join("---:" if rows and all(_is_number(r[i]) for r in rows) else "---"
                          for i in range(len(columns))) + " |",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_md_cell(format_value(cell)) for cell in row) + " |")
    return lines


def _md_key_values(mapping: Mapping[str, Any], key_title: str = "metric") -> list[str]:
    rows = [[key, value] for key, value in _flatten(to_jsonable(mapping))]
    return _md_table([key_title, "value"], rows)


def _md_section(section: Section, depth: int) -> list[str]:
    lines = ["#" * _heading_level(depth) + " " + _md_line(section.title), ""]
    for warning in section.warnings:
        lines += [f"> **Warning**: {_md_line(warning)}", ""]
    for paragraph in section.paragraphs:
        lines += [_md(paragraph), ""]
    if section.metrics:
        lines += _md_key_values(section.metrics) + [""]
    for table in section.tables:
        lines += [f"**{_md_line(table.title)}**", ""]
        lines += (_md_table(list(table.columns), [list(r) for r in table.rows]) if table.rows
                  else ["_(no rows)_"]) + [""]
    for figure in section.figures:
        alt = _md_line(figure.title).replace("[", "\\[").replace("]", "\\]")
        lines += [f"![{alt}]({_figure_file(figure)})", ""]
        if figure.caption:
            lines += [f"*{_md_line(figure.caption)}*", ""]
    for sub in section.subsections:
        lines += _md_section(sub, depth + 1)
    return lines


def report_to_markdown(report: Report) -> str:
    """Render a report as Markdown (the ``report.md`` of :func:`write_report`).

    The page holds the title, the summary, every warning near the top, the
    headline metrics (nested keys dotted), each section with its paragraphs,
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
    _check_report(report)
    lines = [f"# {_md_line(report.title)}", "",
             f"Audit kind: `{report.kind}` · schema version {report.schema_version}", ""]
    for paragraph in report.summary:
        lines += [_md(paragraph), ""]
    warnings = list(report.iter_warnings())
    if warnings:
        lines += ["## Warnings", ""]
        for title, message in warnings:
            lines += [f"> **Warning** ({_md_line(title)}): {_md_line(message)}", ""]
    if report.metrics:
        lines += ["## Metrics", ""] + _md_table(["metric", "value"], _headline_rows(report.metrics)) + [""]
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
                           [[stage, _seconds(value)] for stage, value in report.timings.items()])
    else:
        lines += ["_(none recorded)_"]
    return "\n".join(lines).rstrip("\n") + "\n"


def _seconds(value: Any) -> str:
    value = to_jsonable(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{float(value):.2f}"
    return format_value(value)


# ------------------------------------------------------------------------ HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
  line-height:1.5;color:#1f2328;background:#fff;max-width:1100px;margin:0 auto;
  padding:1.5rem 2rem 4rem}
h1,h2,h3,h4,h5,h6{line-height:1.25;margin:1.6em 0 .5em}
h1{border-bottom:2px solid #d0d7de;padding-bottom:.3em}
h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em}
.meta{color:#59636e}
code{background:#f3f5f7;padding:0 .25em;border-radius:3px}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.92em}
caption{caption-side:top;text-align:left;font-weight:600;padding:.2em 0}
th,td{border:1px solid #c9d1d9;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f5f7}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.warning,.warnings{border:2px solid #d29922;border-left-width:8px;background:#fff8e5;
  padding:.5em 1em;margin:1em 0;border-radius:4px}
.warnings h2{border:0;margin:.2em 0;color:#9a6700}
.warning strong,.warnings strong{color:#9a6700}
figure{margin:1.2em 0}
figure img{max-width:100%;height:auto;border:1px solid #d0d7de}
figcaption{font-style:italic;color:#59636e;font-size:.92em;margin-top:.3em}
nav.toc{background:#f6f8fa;border:1px solid #d0d7de;border-radius:4px;
  padding:.4em 1.2em;margin:1em 0}
nav.toc h2{border:0;margin:.3em 0;font-size:1.1em}
nav.toc ul{margin:.2em 0;padding-left:1.2em}
""".strip()


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _anchors(report: Report) -> dict[int, str]:
    """Unique HTML ids for every section, keyed by ``id(section)``."""
    used = {"warnings", "metrics", "provenance", "timings", "contents"}
    anchors: dict[int, str] = {}
    for path, section in _walk(report.sections):
        slug = re.sub(r"[^a-z0-9_-]+", "-", "-".join(path).lower()).strip("-")
        base = "sec-" + (slug or "section")
        anchor, n = base, 2
        while anchor in used:
            anchor, n = f"{base}-{n}", n + 1
        used.add(anchor)
        anchors[id(section)] = anchor
    return anchors


def _html_table(columns: list[str], rows: list[list[Any]], caption: str | None = None) -> list[str]:
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{_e(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cells = "".join(
            f'<td class="num">{_e(format_value(cell))}</td>' if _is_number(cell)
            else f"<td>{_e(format_value(cell))}</td>"
            for cell in row
        )
        out.append(f"<tr>{cells}</tr>")
    out += ["</tbody>", "</table>"]
    return out


def _html_key_values(mapping: Mapping[str, Any], key_title: str = "metric") -> list[str]:
    return _html_table([key_title, "value"], [[k, v] for k, v in _flatten(to_jsonable(mapping))])


def _html_toc(sections: list[Section], anchors: dict[int, str]) -> list[str]:
    out = ["<ul>"]
    for section in sections:
        out.append(f'<li><a href="#{anchors[id(section)]}">{_e(section.title)}</a>')
        if section.subsections:
            out += _html_toc(section.subsections, anchors)
        out.append("</li>")
    out.append("</ul>")
    return out


def _html_section(section: Section, depth: int, anchors: dict[int, str]) -> list[str]:
    level = _heading_level(depth)
    out = [f'<section id="{anchors[id(section)]}">', f"<h{level}>{_e(section.title)}</h{level}>"]
    for warning in section.warnings:
        out.append(
            f'<div class="warning" role="note"><strong>Warning:</strong> {_e(warning)}</div>'
        )
    out += [f"<p>{_e(p)}</p>" for p in section.paragraphs]
    if section.metrics:
        out += _html_key_values(section.metrics)
    for table in section.tables:
        if table.rows:
            out += _html_table(list(table.columns), [list(r) for r in table.rows], table.title)
        else:
            out.append(f"<p><strong>{_e(table.title)}</strong>: <em>no rows</em></p>")
    for figure in section.figures:
        data = base64.b64encode(bytes(figure.png)).decode("ascii")
        out += [
            f'<figure id="fig-{_e(figure.name)}">',
            f'<img src="data:image/png;base64,{data}" alt="{_e(figure.title)}">',
            f"<figcaption><strong>{_e(figure.title)}.</strong> {_e(figure.caption)}</figcaption>",
            "</figure>",
        ]
    for sub in section.subsections:
        out += _html_section(sub, depth + 1, anchors)
    out.append("</section>")
    return out


def report_to_html(report: Report) -> str:
    """Render a report as one self-contained HTML page (``report.html``).

    The page has the same content as :func:`report_to_markdown`, plus a table
    of contents; figures are inlined as ``data:image/png;base64`` images and
    the style sheet is inline, so the file needs nothing else (no network, no
    neighbouring files). All text is escaped with :func:`html.escape`.

    Parameters
    ----------
    report : Report
        The report to render.

    Returns
    -------
    str
        The HTML document.

    Examples
    --------
    >>> from ppl_audit.report.model import Report
    >>> "<h1>A &amp; B</h1>" in report_to_html(Report(kind="demo", title="A & B"))
    True
    """
    _check_report(report)
    anchors = _anchors(report)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(report.title)}</title>",
        f"<style>\n{_CSS}\n</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(report.title)}</h1>",
        f'<p class="meta">Audit kind: <code>{_e(report.kind)}</code> · '
        f"schema version {_e(report.schema_version)}</p>",
    ]
    out += [f"<p>{_e(p)}</p>" for p in report.summary]
    warnings = list(report.iter_warnings())
    if warnings:
        out += ['<div class="warnings" id="warnings" role="alert">', "<h2>Warnings</h2>", "<ul>"]
        out += [f"<li><strong>{_e(title)}:</strong> {_e(msg)}</li>" for title, msg in warnings]
        out += ["</ul>", "</div>"]
    out += ['<nav class="toc" id="contents">', "<h2>Contents</h2>", "<ul>"]
    if report.metrics:
        out.append('<li><a href="#metrics">Metrics</a></li>')
    out.append("<li>Sections")
    out += _html_toc(report.sections, anchors) if report.sections else []
    out.append("</li>")
    out += ['<li><a href="#provenance">Provenance</a></li>',
            '<li><a href="#timings">Timings</a></li>',
            "</ul>", "</nav>"]
    if report.metrics:
        out += ['<section id="metrics">', "<h2>Metrics</h2>", *_html_table(["metric", "value"], _headline_rows(report.metrics)),
                "</section>"]
    for section in report.sections:
        out += _html_section(section, 0, anchors)
    out += ['<section id="provenance">', "<h2>Provenance</h2>"]
    if report.provenance:
        out += _html_key_values(report.provenance, "key")
    else:
        out.append("<p><em>none recorded</em></p>")
    out += ["</section>", '<section id="timings">', "<h2>Timings</h2>"]
    if report.timings:
        out += _html_table(["stage", "seconds"],
                           [[stage, _seconds(value)] for stage, value in report.timings.items()])
    else:
        out.append("<p><em>none recorded</em></p>")
    out += ["</section>", "</body>", "</html>"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- folder


def _write_files(report: Report, folder: pathlib.Path) -> None:
    figures = folder / FIGURES_DIR
    figures.mkdir()
    # mkdtemp makes the folder 0o700; give it the mode a plain mkdir gets under the umask.
    os.chmod(folder, figures.stat().st_mode & 0o7777)
    (folder / REPORT_JSON).write_bytes(report_to_json_bytes(report))
    (folder / TIMINGS_JSON).write_bytes(_timings_json_bytes(report))
    for figure in report.iter_figures():
        (folder / _figure_file(figure)).write_bytes(bytes(figure.png))
        (folder / _figure_data_file(figure)).write_bytes(_figure_json_bytes(report, figure))
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
    _check_report(report)  # fail before touching the disk
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
