"""Tests of the report writers: folder layout, JSON conventions, Markdown, HTML, atomicity."""

from __future__ import annotations

import base64
import doctest
import io
import json
import math
import os
import pathlib
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from ppl_audit.errors import InvalidInputError  # noqa: E402
from ppl_audit.report import common, folder, writers  # noqa: E402
from ppl_audit.report.model import SCHEMA_VERSION, Figure, Report, Section, Table  # noqa: E402
from ppl_audit.report.writers import (  # noqa: E402
    format_value,
    report_to_html,
    report_to_json_bytes,
    report_to_markdown,
    to_jsonable,
    write_report,
)


@pytest.fixture(scope="module")
def png() -> bytes:
    fig, ax = plt.subplots(figsize=(1, 1), dpi=20)
    ax.plot([0, 1], [0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def make_report(png: bytes, *, timings: dict | None = None, second_name: str = "trace") -> Report:
    inner = Section(
        name="chains",
        title="Chains",
        paragraphs=["Four chains ran."],
        metrics={"rhat_max": np.float64(1.01), "ess_bulk_min": torch.tensor(412.5)},
        figures=[Figure(name=second_name, title="Trace", caption="Mixing of z.", png=png,
                        data={"z": np.arange(4.0), "chain": torch.tensor([0, 1])})],
        warnings=["R-hat above 1.01 for z[2]"],
    )
    outer = Section(
        name="world_a",
        title="World <script>alert(1)</script>",
        paragraphs=["The first world & its targets."],
        metrics={"mean_confidence": np.float32(0.5), "delta": float("nan"),
                 "per_class": {"cat": 0.25, "dog": 0.75}},
        tables=[Table(name="targets", title="Targets", columns=["target", "reached", "value"],
                      rows=[[[0.5, 0.5], True, 0.123456], [(1.0, 0.0), False, None]])],
        figures=[Figure(name="levelset", title="Level set", caption="Samples | on the set.",
                        png=png, data={"points": np.zeros((2, 2), dtype=np.float32)})],
        subsections=[inner],
    )
    return Report(
        kind="levelset",
        title="Demo audit",
        summary=["Two paragraphs.", "Of summary."],
        metrics={"accuracy": np.float64(0.9876543), "n": np.int64(12),
                 "bounds": (np.float64(-math.inf), math.inf), "path": pathlib.PurePosixPath("a/b")},
        sections=[outer],
        provenance={"seed": 0, "versions": {"torch": "2.13.0", "pyro": "1.9.2"}},
        timings=timings if timings is not None else {"sampling": 1.23456, "render": np.float64(0.5)},
    )


def test_folder_layout_and_json(tmp_path, png):
    out = write_report(make_report(png), tmp_path / "out")
    assert out == (tmp_path / "out").resolve() or out == tmp_path / "out"
    for name in ["report.json", "timings.json", "report.md", "report.html",
                 "figures/levelset.png", "figures/levelset.json",
                 "figures/trace.png", "figures/trace.json"]:
        assert (out / name).is_file(), name
    assert (out / "figures/trace.png").read_bytes() == png

    text = (out / "report.json").read_text(encoding="utf-8")
    assert text.endswith("}\n")
    data = json.loads(text)
    assert data["schema_version"] == SCHEMA_VERSION == 2
    assert data["verdict"] is None  # this report has none; the audits' reports do
    assert set(data) == {"schema_version", "kind", "title", "summary", "verdict", "metrics",
                         "provenance", "sections", "warnings"}
    assert "seconds" not in text and "timings" not in text and "sampling" not in text
    assert data["metrics"]["accuracy"] == pytest.approx(0.9876543)
    assert data["metrics"]["n"] == 12
    assert data["metrics"]["bounds"] == ["-inf", "inf"]
    assert data["metrics"]["path"] == "a/b"
    world = data["sections"][0]
    assert world["metrics"]["delta"] == "nan"
    assert world["metrics"]["mean_confidence"] == 0.5
    assert world["tables"][0] == {"name": "targets", "title": "Targets",
                                  "columns": ["target", "reached", "value"],
                                  "rows": [[[0.5, 0.5], True, 0.123456], [[1.0, 0.0], False, None]]}
    assert world["figures"][0]["file"] == "figures/levelset.png"
    assert world["figures"][0]["data_file"] == "figures/levelset.json"
    chains = world["subsections"][0]
    assert chains["metrics"] == {"rhat_max": 1.01, "ess_bulk_min": 412.5}
    assert chains["figures"][0]["name"] == "trace"
    assert data["warnings"] == [{"section": "world_a/chains", "section_title": "Chains",
                                 "message": "R-hat above 1.01 for z[2]"}]

    timings = json.loads((out / "timings.json").read_text())
    assert timings == {"schema_version": SCHEMA_VERSION, "seconds": {"sampling": 1.23456, "render": 0.5}}
    figure = json.loads((out / "figures/trace.json").read_text())
    assert figure["title"] == "Trace" and figure["caption"] == "Mixing of z."
    assert figure["data"] == {"z": [0.0, 1.0, 2.0, 3.0], "chain": [0, 1]}


def test_report_json_is_deterministic_and_ignores_timings(tmp_path, png):
    a = write_report(make_report(png), tmp_path / "a")
    b = write_report(make_report(png, timings={"sampling": 99.0}), tmp_path / "b")
    assert (a / "report.json").read_bytes() == (b / "report.json").read_bytes()
    assert report_to_json_bytes(make_report(png)) == (a / "report.json").read_bytes()


def test_html_is_self_contained_and_escaped(tmp_path, png):
    out = write_report(make_report(png), tmp_path / "out")
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page == report_to_html(make_report(png))
    assert f"data:image/png;base64,{base64.b64encode(png).decode('ascii')}" in page
    assert page.count("data:image/png;base64,") == 2
    assert "<figcaption>" in page
    lowered = page.lower()
    for external in ['src="http', "src='http", 'href="http', "href='http", "@import", "url(", "<link"]:
        assert external not in lowered
    # the page's one script is its own (open collapsed sections, enlarge figures); titles stay escaped
    assert page.count("<script") == 1 and "<script src" not in page
    assert "World &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "first world &amp; its targets" in page
    assert 'href="#sec-world_a"' in page and 'id="sec-world_a"' in page
    assert 'href="#sec-world_a-chains"' in page and 'id="sec-world_a-chains"' in page
    assert "R-hat above 1.01 for z[2]" in page and 'class="warning-list"' in page
    assert "<style>" in page


def test_markdown_content(tmp_path, png):
    out = write_report(make_report(png), tmp_path / "out")
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md == report_to_markdown(make_report(png))
    assert md.startswith("# Demo audit\n")
    assert "![Level set](figures/levelset.png)" in md
    assert "![Trace](figures/trace.png)" in md
    assert "*Mixing of z.*" in md
    assert "- Chains: R-hat above 1.01 for z[2]" in md  # a line at the top
    assert md.count("> **Warning**: R-hat above 1.01 for z[2]") == 1  # in full once, at its section
    assert md.index("## Warnings") < md.index("## World")
    assert "### Chains" in md
    assert "| accuracy | 0.9877 |" in md
    assert "| per_class.cat | 0.25 |" in md
    assert "| delta | nan |" in md
    assert "| [0.5, 0.5] | true | 0.1235 |" in md
    assert "| [1, 0] | false | n/a |" in md
    assert "*Samples | on the set.*" in md
    assert "| versions.torch | 2.13.0 |" in md
    assert "| sampling | 1.23 |" in md and "| render | 0.50 |" in md
    assert "## World \\<script>alert(1)\\</script>" in md  # backslash-escaped: never raw HTML
    assert re.search(r"(?<!\\)<", md) is None


def test_heading_levels_are_capped(png):
    section = Section(name="l0", title="L0")
    node = section
    for depth in range(1, 7):
        child = Section(name=f"l{depth}", title=f"L{depth}")
        node.subsections.append(child)
        node = child
    md = report_to_markdown(Report(kind="demo", title="Deep", sections=[section]))
    assert "## L0\n" in md and "###### L4\n" in md and "###### L6\n" in md
    assert "#######" not in md


def test_duplicate_figure_names_raise(tmp_path, png):
    report = make_report(png, second_name="levelset")
    with pytest.raises(ValueError, match="levelset"):
        write_report(report, tmp_path / "out")
    with pytest.raises(ValueError, match="duplicate"):
        report_to_json_bytes(report)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["../evil", "a/b", "", "x.png"])
def test_figure_names_must_be_file_stems(png, name):
    report = Report(kind="demo", title="t", sections=[
        Section(name="s", title="S", figures=[Figure(name=name, title="f", caption="", png=png)])])
    with pytest.raises(ValueError, match="file stem"):
        report_to_json_bytes(report)


def test_table_rows_must_match_columns():
    report = Report(kind="demo", title="t", sections=[
        Section(name="s", title="S", tables=[Table(name="t", title="T", columns=["a", "b"], rows=[[1]])])])
    with pytest.raises(ValueError, match="row 0 has 1 cells"):
        report_to_json_bytes(report)


def test_refuses_to_overwrite_unrelated_folder(tmp_path, png):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(InvalidInputError, match="refusing to overwrite"):
        write_report(make_report(png), out)
    assert (out / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_json_without_schema_version_is_not_a_report(tmp_path, png):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text('{"title": "someone else"}')
    with pytest.raises(InvalidInputError, match="refusing to overwrite"):
        write_report(make_report(png), out)
    assert (out / "report.json").read_text() == '{"title": "someone else"}'


def test_existing_folder_without_overwrite_and_file_destination(tmp_path, png):
    out = write_report(make_report(png), tmp_path / "out")
    with pytest.raises(InvalidInputError, match="already exists"):
        write_report(make_report(png), out, overwrite=False)
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(InvalidInputError, match="not a folder"):
        write_report(make_report(png), target)
    assert target.read_text() == "x"


def test_overwrite_previous_report_and_empty_folder(tmp_path, png):
    out = write_report(make_report(png), tmp_path / "out")
    smaller = Report(kind="levelset", title="Second run", metrics={"accuracy": 0.5})
    write_report(smaller, out)
    assert json.loads((out / "report.json").read_text())["title"] == "Second run"
    assert not (out / "figures" / "trace.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    empty = tmp_path / "empty"
    empty.mkdir()
    write_report(smaller, empty)
    assert (empty / "report.json").is_file()


def test_a_file_the_user_added_to_a_report_folder_is_never_deleted(tmp_path, png):
    out = write_report(make_report(png), tmp_path / "out")
    (out / "notes.txt").write_text("mine")
    (out / "src").mkdir()
    (out / "src" / "main.py").write_text("print('mine')")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(InvalidInputError, match=r"refusing to overwrite .*did not write.*notes\.txt, src/"):
        write_report(Report(kind="levelset", title="Second run"), out)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    write_report(Report(kind="levelset", title="Second run"), out, force=True)  # beside them, theirs kept
    assert (out / "notes.txt").read_text() == "mine" and (out / "src" / "main.py").is_file()
    assert json.loads((out / "report.json").read_text())["title"] == "Second run"
    assert not (out / "figures" / "trace.png").exists()  # the tool's own earlier files go
    assert folder.foreign_entries(out) == ["src/", "notes.txt", "src/main.py"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_report_json_is_no_licence_to_delete(tmp_path, png):
    # The old rule replaced any folder whose report.json had a schema_version, with the user's files in it.
    out = tmp_path / "out"
    (out / "src").mkdir(parents=True)
    (out / "report.json").write_text('{"schema_version": 1}')
    (out / "src" / "main.py").write_text("print('mine')")
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(InvalidInputError, match="ppl-audit did not write it"):
        write_report(make_report(png), out)
    with pytest.raises(InvalidInputError, match="report.json there is not ppl-audit's"):
        write_report(make_report(png), out, force=True)  # even forced, a foreign file is never replaced
    assert (out / "report.json").read_text() == '{"schema_version": 1}'
    assert (out / "thesis.tex").read_text() == "precious" and (out / "src" / "main.py").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_edited_report_file_is_the_users(tmp_path, png):
    out = write_report(make_report(png), tmp_path / "out")
    (out / "report.md").write_text("my annotated copy")
    with pytest.raises(InvalidInputError, match=r"changed since \(report\.md\)"):
        write_report(make_report(png), out)
    with pytest.raises(InvalidInputError, match="report.md there is not ppl-audit's"):
        write_report(make_report(png), out, force=True)
    assert (out / "report.md").read_text() == "my annotated copy"


def test_a_forced_write_killed_half_way_leaves_a_folder_the_next_run_recognises(tmp_path, png, monkeypatch):
    out = write_report(make_report(png), tmp_path / "out")
    (out / "notes.txt").write_text("mine")
    real_replace, moved = os.replace, []

    def replace_twice_then_die(src, dst):
        if len(moved) == 2:
            raise KeyboardInterrupt
        moved.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(folder.os, "replace", replace_twice_then_die)
    with pytest.raises(KeyboardInterrupt):
        write_report(Report(kind="levelset", title="Second run"), out, force=True)
    monkeypatch.undo()
    assert folder.foreign_entries(out) == ["notes.txt"]  # old and new files alike are known as the tool's
    write_report(Report(kind="levelset", title="Third run"), out, force=True)
    assert json.loads((out / "report.json").read_text())["title"] == "Third run"
    assert (out / "notes.txt").read_text() == "mine"


def test_leftovers_of_killed_runs_are_cleaned_and_a_lost_report_restored(tmp_path, png):
    dead = 2 ** 22 + 12345  # above the largest pid Linux can give (2**22): no process has it
    (tmp_path / f".out.tmp-{dead}-abc").mkdir()
    (tmp_path / f".out.tmp-{os.getpid()}-live").mkdir()  # a running process's (ours): left alone
    out = write_report(make_report(png), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".out.tmp-{os.getpid()}-live", "out"]

    os.rename(out, tmp_path / f".out.old-{dead}-abc")  # killed between its two renames
    write_report(make_report(png), tmp_path / "other")  # another folder's run leaves it be
    assert not out.exists()
    assert folder.clean_stale(out) == [tmp_path / f".out.old-{dead}-abc"]
    assert (out / "report.json").is_file()  # the old report is back


def test_creates_missing_parents(tmp_path, png):
    out = write_report(make_report(png), tmp_path / "a" / "b" / "out")
    assert (out / "report.html").is_file()


def test_failure_mid_write_leaves_previous_report(tmp_path, png, monkeypatch):
    out = write_report(Report(kind="levelset", title="First"), tmp_path / "out")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def boom(report):
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(writers, "report_to_html", boom)
    with pytest.raises(RuntimeError, match="renderer exploded"):
        write_report(make_report(png), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .out.tmp-* left behind
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before

    with pytest.raises(RuntimeError):
        write_report(make_report(png), tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_to_jsonable_conversions():
    import dataclasses

    @dataclasses.dataclass
    class Point:
        x: float
        tags: tuple

    value = {
        "np": np.array([[1, 2], [3, 4]], dtype=np.int32),
        "bool": np.bool_(True),
        "t0": torch.tensor(2.5, requires_grad=True) * 2,
        "nonfinite": torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0]),
        "point": Point(np.float32(0.25), ("a", 1)),
        "path": pathlib.Path("x") / "y.txt",
    }
    assert to_jsonable(value) == {
        "np": [[1, 2], [3, 4]],
        "bool": True,
        "t0": 5.0,
        "nonfinite": ["nan", "inf", "-inf", 1.0],
        "point": {"x": 0.25, "tags": ["a", 1]},
        "path": str(pathlib.Path("x") / "y.txt"),
    }
    assert type(to_jsonable(np.float64(1.5))) is float
    with pytest.raises(TypeError, match="keys must be str"):
        to_jsonable({1: "a"})
    with pytest.raises(TypeError):
        to_jsonable(b"bytes")
    with pytest.raises(TypeError):
        to_jsonable({1, 2})


def test_format_value():
    assert format_value(None) == "n/a"
    assert format_value(3) == "3"
    assert format_value(np.int64(7)) == "7"
    assert format_value(True) == "true"
    assert format_value(0.123456) == "0.1235"
    assert format_value(123456.0) == "1.235e+05"
    assert format_value(float("nan")) == "nan"
    assert format_value(-float("inf")) == "-inf"
    assert format_value("text") == "text"
    assert format_value([1.0, 2.0]) == "[1, 2]"
    assert format_value(np.arange(100)) == "[0, 1, 2, …, 98, 99] (n=100)"
    assert len(format_value(["x" * 100] * 5)) <= common.MAX_CELL_CHARS


def test_docstring_examples_run():
    results = doctest.testmod(writers, optionflags=doctest.ELLIPSIS)
    assert results.attempted > 0
    assert results.failed == 0


def test_headline_metrics_stop_at_three_levels_but_json_keeps_everything():
    from ppl_audit.report.model import Report as _Report
    from ppl_audit.report.writers import report_to_html, report_to_json_bytes, report_to_markdown

    deep = {"top": 1, "a": {"b": {"scalar": 2, "c": {"d": 3}}}}
    report = _Report(kind="demo", title="Deep", metrics=deep)
    md = report_to_markdown(report)
    assert "a.b.scalar" in md and "a.b.c.d" not in md and "1 more values" in md
    assert "a.b.c.d" not in report_to_html(report)
    assert json.loads(report_to_json_bytes(report))["metrics"]["a"]["b"]["c"]["d"] == 3
