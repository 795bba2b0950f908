"""The report as one self-contained HTML page (``report.html``).

The page opens with the verdict (what was audited, one row per target or
family, the warnings in a line each, the images that show the finding), keeps a
table of contents in view at the side, and collapses the long detail: every
subsection, the headline metrics, the provenance and the timings. Figures are
inlined and enlarge on a click; a few lines of inline script open a collapsed
section when a link points into it. The page needs no other file and no network;
its links to ``report.json``, ``report.md``, each figure's data and each
section's CSV work when it is opened from its report folder.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping
from typing import Any

from ppl_audit.report.common import (
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
    walk,
    warning_entries,
)
from ppl_audit.report.model import Figure, Report, Section, Verdict

__all__ = ["report_to_html"]

# Columns whose false cell marks a failing row (summary tables show the statistics the verdict uses).
VERDICT_COLUMNS = ("converged", "trusted", "all_checks_passed")
RESERVED_IDS = {"verdict", "summary", "warnings", "metrics", "provenance", "timings", "contents", "lightbox"}

_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
  line-height:1.5;color:#1f2328;background:#fff;margin:0}
.layout{display:grid;grid-template-columns:16rem minmax(0,1fr);gap:2rem;max-width:1500px;
  margin:0 auto;padding:0 1.5rem}
main{min-width:0;padding:1rem 0 4rem}
nav.toc{position:sticky;top:0;align-self:start;max-height:100vh;overflow-y:auto;
  padding:1rem .5rem 1rem 0;font-size:.88em;border-right:1px solid #d0d7de}
nav.toc h2{border:0;margin:.2em 0 .4em;font-size:1.05em}
nav.toc ul{margin:.1em 0;padding-left:1em;list-style:none}
nav.toc li{margin:.15em 0}
nav.toc a{color:#0969da;text-decoration:none}
nav.toc a:hover{text-decoration:underline}
nav.toc .fail{color:#cf222e}
@media (max-width:900px){.layout{grid-template-columns:minmax(0,1fr)}
  nav.toc{position:static;max-height:none;border-right:0;border-bottom:1px solid #d0d7de}}
h1,h2,h3,h4,h5,h6{line-height:1.25;margin:1.4em 0 .5em}
h1{border-bottom:2px solid #d0d7de;padding-bottom:.2em;margin:.5em 0 .2em;font-size:1.7em}
h2{border-bottom:1px solid #d0d7de;padding-bottom:.2em}
.meta{color:#59636e}
code{background:#f3f5f7;padding:0 .25em;border-radius:3px}
.table-wrap{overflow-x:auto;max-width:100%;margin:.6em 0 1.2em}
table{border-collapse:collapse;font-size:.92em}
caption{caption-side:top;text-align:left;font-weight:600;padding:.2em 0}
th,td{border:1px solid #c9d1d9;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f5f7}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.fail td{background:#ffebe9}
.badge{display:inline-block;padding:0 .45em;border-radius:1em;font-size:.85em;font-weight:600;white-space:nowrap}
.badge.ok{background:#dafbe1;color:#116329}
.badge.fail{background:#ffebe9;color:#a40e26}
.badge.na{background:#eaeef2;color:#424a53}
.verdict{border:2px solid #d0d7de;border-radius:6px;padding:.1em 1.2em .8em;margin:.6em 0 1.5em}
.verdict h2{margin:.4em 0 .3em}
.verdict .headline{font-size:1.1em;font-weight:600;margin:.3em 0}
.verdict .audited{color:#424a53;margin:.3em 0 .6em}
.verdict .audited b{color:#1f2328;font-weight:600}
.verdict-body{display:flex;gap:1.2rem;align-items:flex-start}
.verdict-body>.table-wrap{flex:1 1 auto;margin-top:0}
.warning{border:2px solid #d29922;border-left-width:8px;background:#fff8e5;
  padding:.5em 1em;margin:1em 0;border-radius:4px}
.warning strong,.warning-list strong{color:#9a6700}
ul.warning-list{border-left:6px solid #d29922;background:#fff8e5;padding:.4em 1em .4em 2em;border-radius:4px}
.verdict td .badge{white-space:normal}
.highlights{flex:0 0 8.5rem;width:8.5rem;min-width:0;display:flex;flex-direction:column;gap:.3rem}
.highlights figure{margin:0;min-width:0;max-width:100%}
.highlights figcaption{font-size:.75em;line-height:1.25;margin-top:0}
.highlights .why{display:block;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
@media (max-width:1100px){.verdict-body{flex-direction:column}.highlights{flex-direction:row;flex-wrap:wrap}
  .highlights figure{flex:1 1 12rem}}
figure{margin:1.2em 0}
figure img{max-width:100%;height:auto;border:1px solid #d0d7de;cursor:zoom-in}
figcaption{font-style:italic;color:#59636e;font-size:.92em;margin-top:.3em}
figcaption a,.files a{font-style:normal}
details.section{border-top:1px solid #d0d7de;margin:.4em 0}
details.section>summary{cursor:pointer;list-style:revert}
details.section>summary>h3,details.section>summary>h4,details.section>summary>h5,
details.section>summary>h6,details>summary>h2{display:inline;margin:0}
details.section>summary{padding:.5em 0}
details.collapsed>summary{cursor:pointer;padding:.5em 0}
#lightbox{position:fixed;inset:0;background:rgba(0,0,0,.85);display:flex;align-items:center;
  justify-content:center;z-index:10;cursor:zoom-out}
#lightbox[hidden]{display:none}
#lightbox img{max-width:96vw;max-height:94vh;background:#fff;image-rendering:pixelated}
""".strip()

# Opens the collapsed sections a link points into, and enlarges a figure on a click (Escape closes it).
_SCRIPT = """
function openTo(id){var el=document.getElementById(id);
  for(var d=el;d;d=d.parentElement){if(d.tagName==='DETAILS'){d.open=true;}}}
window.addEventListener('hashchange',function(){openTo(decodeURIComponent(location.hash.slice(1)));});
document.addEventListener('click',function(e){
  var a=e.target.closest('a[href^="#"]');if(a){openTo(a.getAttribute('href').slice(1));}
  var box=document.getElementById('lightbox');var img=e.target.closest('figure img');
  if(img){box.querySelector('img').src=img.src;box.hidden=false;}
  else if(e.target.closest('#lightbox')){box.hidden=true;}});
document.addEventListener('keydown',function(e){
  if(e.key==='Escape'){document.getElementById('lightbox').hidden=true;}});
if(location.hash){openTo(decodeURIComponent(location.hash.slice(1)));}
""".strip()


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _anchors(report: Report) -> dict[int, str]:
    """Unique HTML ids for every section, keyed by ``id(section)``."""
    used = set(RESERVED_IDS)
    anchors: dict[int, str] = {}
    for path, section in walk(report.sections):
        slug = re.sub(r"[^a-z0-9_-]+", "-", "-".join(path).lower()).strip("-")
        base = "sec-" + (slug or "section")
        anchor, n = base, 2
        while anchor in used:
            anchor, n = f"{base}-{n}", n + 1
        used.add(anchor)
        anchors[id(section)] = anchor
    return anchors


def _anchor_by_name(report: Report, anchors: dict[int, str]) -> dict[str, str]:
    """The first section of each name, to link verdict rows and warnings to."""
    by_name: dict[str, str] = {}
    for _, section in walk(report.sections):
        by_name.setdefault(section.name, anchors[id(section)])
    return by_name


def _failing(columns: list[str], row: list[Any]) -> bool:
    return any(column in VERDICT_COLUMNS and row[i] is False for i, column in enumerate(columns))


def _html_table(columns: list[str], rows: list[list[Any]], caption: str | None = None) -> list[str]:
    """A table in its own scrolling box; rows whose verdict column is false are marked."""
    out = ['<div class="table-wrap">', "<table>"]
    if caption:
        out.append(f"<caption>{_e(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr></thead>")
    out.append("<tbody>")
    for row in rows:
        cells = "".join(
            f'<td class="num">{_e(format_value(cell))}</td>' if is_number(cell)
            else f"<td>{_e(format_value(cell))}</td>"
            for cell in row
        )
        out.append(f'<tr class="fail">{cells}</tr>' if _failing(columns, row) else f"<tr>{cells}</tr>")
    out += ["</tbody>", "</table>", "</div>"]
    return out


def _html_key_values(mapping: Mapping[str, Any], key_title: str = "metric") -> list[str]:
    return _html_table([key_title, "value"], [[k, v] for k, v in flatten(to_jsonable(mapping))])


def _badge(trusted: bool | None, text: str) -> str:
    kind = {True: "ok", False: "fail", None: "na"}[trusted]
    return f'<span class="badge {kind}">{_e(text)}</span>'


def _figure(figure: Figure) -> list[str]:
    data = base64.b64encode(bytes(figure.png)).decode("ascii")
    return [
        f'<figure id="fig-{_e(figure.name)}">',
        f'<img src="data:image/png;base64,{data}" alt="{_e(figure.title)}" title="Click to enlarge">',
        f"<figcaption><strong>{_e(figure.title)}.</strong> {_e(figure.caption)} "
        f'<a href="{_e(figure_file(figure))}">PNG</a> · <a href="{_e(figure_data_file(figure))}">data</a>'
        "</figcaption>",
        "</figure>",
    ]


def _highlight(figure: Figure, anchor: str | None) -> list[str]:
    """A verdict image: small, enlarging on a click; its caption names the item (linked) and says why on hover."""
    data = base64.b64encode(bytes(figure.png)).decode("ascii")
    name = f'<a href="#{anchor}">{_e(figure.title)}</a>' if anchor else _e(figure.title)
    return [f'<figure id="fig-{_e(figure.name)}" title="{_e(figure.caption)}">',
            f'<img src="data:image/png;base64,{data}" alt="{_e(figure.title)}: {_e(figure.caption)}">',
            f'<figcaption>{name}<span class="why">{_e(figure.caption)}</span></figcaption>', "</figure>"]


def _audited(audited: Mapping[str, Any]) -> list[str]:
    """One line: what was audited (unknown entries left out)."""
    labels = {"classifier": "Classifier", "source": "model", "accuracy": "test accuracy", "priors": "priors"}
    items = [(labels.get(k, k), v) for k, v in audited.items() if v not in (None, "", [])]
    if not items:
        return []
    parts = [f"{_e(label)} <b>{_e(', '.join(map(str, value)) if isinstance(value, list) else format_value(value))}</b>"
             for label, value in items]
    return [f'<p class="audited">{" · ".join(parts)}</p>']


def _verdict(report: Report, verdict: Verdict, by_name: dict[str, str]) -> list[str]:
    """The first screen: headline, what was audited, the rows, one line per warning, the highlights."""
    out = ['<section id="verdict" class="verdict">', "<h2>Verdict</h2>",
           f'<p class="headline">{_e(verdict.headline)}</p>', *_audited(verdict.audited)]
    out.append('<div class="verdict-body">')
    if verdict.rows:
        out += ['<div class="table-wrap">', "<table>",
                "<thead><tr><th>item</th><th>finding</th><th>key figure</th><th>trust</th></tr></thead>", "<tbody>"]
        for row in verdict.rows:
            item = (f'<a href="#{by_name[row.section]}">{_e(row.item)}</a>' if row.section in by_name
                    else _e(row.item))
            css = ' class="fail"' if row.trusted is False else ""
            out.append(f"<tr{css}><td>{item}</td><td>{_e(row.finding)}</td><td>{_e(row.key_figure)}</td>"
                       f"<td>{_badge(row.trusted, row.trust)}</td></tr>")
        out += ["</tbody>", "</table>", "</div>"]
    if verdict.highlights:  # beside the rows, so that both fit the first screen
        out.append('<div class="highlights">')
        for highlight in verdict.highlights:
            out += _highlight(highlight.figure, by_name.get(highlight.section))
        out.append("</div>")
    out.append("</div>")
    return out + _warning_lines(report, by_name) + ["</section>"]


def _warning_lines(report: Report, by_name: dict[str, str]) -> list[str]:
    """Each warning once, in a line that links to its section (where it is in full)."""
    entries = warning_entries(report)
    if not entries:
        return []
    out = [f'<p id="warnings"><strong>{len(entries)} warning{"s" if len(entries) > 1 else ""}</strong>, '
           "each in full in its section:</p>", '<ul class="warning-list">']
    for w in entries:
        target = by_name.get(w["section_name"])
        where = f'<a href="#{target}">{_e(w["section_title"])}</a>' if target else _e(w["section_title"])
        out.append(f"<li>{where}: {_e(w['line'])}</li>")
    return out + ["</ul>"]


def _toc(sections: list[Section], anchors: dict[int, str]) -> list[str]:
    out = ["<ul>"]
    for section in sections:
        css = ' class="fail"' if any(s.warnings for _, s in walk([section])) else ""
        out.append(f'<li><a href="#{anchors[id(section)]}"{css}>{_e(section.title)}</a>')
        if section.subsections:
            out += _toc(section.subsections, anchors)
        out.append("</li>")
    out.append("</ul>")
    return out


def _nav(report: Report, anchors: dict[int, str]) -> list[str]:
    out = ['<nav class="toc" id="contents">', "<h2>Contents</h2>", "<ul>"]
    if report.verdict is not None:
        out.append('<li><a href="#verdict">Verdict</a></li>')
    if report.summary:
        out.append('<li><a href="#summary">Summary</a></li>')
    if report.metrics:
        out.append('<li><a href="#metrics">Metrics</a></li>')
    out.append("</ul>")
    out += _toc(report.sections, anchors) if report.sections else []
    out += ["<ul>", '<li><a href="#provenance">Provenance</a></li>', '<li><a href="#timings">Timings</a></li>',
            "</ul>", "<h2>Files</h2>", "<ul>",
            *(f'<li><a href="{name}">{name}</a></li>' for name in (REPORT_JSON, REPORT_MD, TIMINGS_JSON)),
            "</ul>", "</nav>"]
    return out


def _section(section: Section, depth: int, anchors: dict[int, str]) -> list[str]:
    """A top-level section stays open; a subsection collapses to its title (and a count of its warnings)."""
    level = heading_level(depth)
    heading = f"<h{level}>{_e(section.title)}</h{level}>"
    if depth == 0:
        out = [f'<section id="{anchors[id(section)]}">', heading]
    else:
        count = len(section.warnings)
        note = f' {_badge(False, f"{count} warning" + ("s" if count > 1 else ""))}' if count else ""
        out = [f'<details class="section" id="{anchors[id(section)]}">', f"<summary>{heading}{note}</summary>"]
    out += [f'<div class="warning" role="note"><strong>Warning:</strong> {_e(w)}</div>' for w in section.warnings]
    out += [f"<p>{_e(p)}</p>" for p in section.paragraphs]
    # what a reader looks at first (figures, the data behind them), then the numbers for analysts
    for figure in section.figures:
        out += _figure(figure)
    if section.files:
        links = " · ".join(f'<a href="{_e(data_file(f))}" download>{_e(f.title)}</a>' for f in section.files)
        out.append(f'<p class="files">Data: {links}</p>')
    if section.metrics:
        out += _html_key_values(section.metrics)
    for table in section.tables:
        if table.rows:
            out += _html_table(list(table.columns), [list(r) for r in table.rows], table.title)
        else:
            out.append(f"<p><strong>{_e(table.title)}</strong>: <em>no rows</em></p>")
    for sub in section.subsections:
        out += _section(sub, depth + 1, anchors)
    out.append("</section>" if depth == 0 else "</details>")
    return out


def _collapsed(anchor: str, title: str, body: list[str]) -> list[str]:
    return [f'<details class="collapsed" id="{anchor}">', f"<summary><h2>{_e(title)}</h2></summary>", *body,
            "</details>"]


def report_to_html(report: Report) -> str:
    """Render a report as one self-contained HTML page (``report.html``).

    The page has the content of :func:`~ppl_audit.report.writers.report_to_markdown`:
    the verdict first, a table of contents that stays in view, subsections
    collapsed, figures inlined as ``data:image/png;base64`` images that enlarge
    on a click, wide tables in their own scrolling box, and links to the
    report's other files. All text is escaped with :func:`html.escape`.

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
    check_report(report)
    anchors = _anchors(report)
    by_name = _anchor_by_name(report, anchors)
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
        '<div class="layout">',
        *_nav(report, anchors),
        "<main>",
        f"<h1>{_e(report.title)}</h1>",
        f'<p class="meta">Audit kind: <code>{_e(report.kind)}</code> · schema version '
        f'{_e(report.schema_version)} · <a href="{REPORT_JSON}">report.json</a> · '
        f'<a href="{REPORT_MD}">report.md</a></p>',
    ]
    if report.verdict is not None:
        out += _verdict(report, report.verdict, by_name)
    else:
        out += _warning_lines(report, by_name)
    if report.summary:
        out += ['<section id="summary">', *(f"<p>{_e(p)}</p>" for p in report.summary), "</section>"]
    if report.metrics:
        out += _collapsed("metrics", "Metrics", _html_table(["metric", "value"], headline_rows(report.metrics)))
    for section in report.sections:
        out += _section(section, 0, anchors)
    out += _collapsed("provenance", "Provenance", _html_key_values(report.provenance, "key") if report.provenance
                      else ["<p><em>none recorded</em></p>"])
    out += _collapsed("timings", "Timings", _html_table(
        ["stage", "seconds"], [[stage, seconds_text(value)] for stage, value in report.timings.items()])
        if report.timings else ["<p><em>none recorded</em></p>"])
    out += ["</main>", "</div>", '<div id="lightbox" hidden><img alt="enlarged figure"></div>',
            f"<script>\n{_SCRIPT}\n</script>", "</body>", "</html>"]
    return "\n".join(out) + "\n"
