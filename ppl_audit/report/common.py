"""What the report's writers share: JSON-safe values, file names, checks and cell formatting.

:mod:`ppl_audit.report.writers` (JSON, Markdown, the folder) and
:mod:`ppl_audit.report.html` (the page) both read a report through these, so
that a number reads the same in every file.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from ppl_audit.report.model import DataFile, Figure, Report, walk

REPORT_JSON = "report.json"
TIMINGS_JSON = "timings.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
FIGURES_DIR = "figures"
DATA_DIR = "data"  # sections' data files (CSV of samples)

NAN_STR, POS_INF_STR, NEG_INF_STR = "nan", "inf", "-inf"  # JSON has no non-finite numbers
SIGNIFICANT_DIGITS = 4  # enough to read a metric, short enough for a table cell
LIST_HEAD, LIST_TAIL = 3, 2  # items kept at each end when a long list is shortened
LIST_MAX_SHOWN = LIST_HEAD + LIST_TAIL + 1  # lists up to this length are shown whole
MAX_CELL_CHARS = 200  # a table cell longer than this is cut (the JSON keeps it all)
MAX_HEADING_LEVEL = 6  # Markdown and HTML stop at ######
FIGURE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")  # a file stem, no dots or slashes
FILE_EXTENSION_RE = re.compile(r"^[a-z0-9]{1,8}$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

__all__ = [
    "DATA_DIR", "FIGURES_DIR", "REPORT_HTML", "REPORT_JSON", "REPORT_MD", "TIMINGS_JSON", "check_report",
    "data_file", "figure_data_file", "figure_file", "flatten", "format_value", "heading_level", "headline_rows",
    "is_number", "seconds_text", "to_jsonable", "walk", "warning_entries", "warning_line",
]


# --------------------------------------------------------------------------- JSON-safe values


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



# --------------------------------------------------------------------------- files and checks


def figure_file(figure: Figure) -> str:
    """``figures/NAME.png``, relative to the report folder."""
    return f"{FIGURES_DIR}/{figure.name}.png"


def figure_data_file(figure: Figure) -> str:
    """``figures/NAME.json``: the data the figure was drawn from."""
    return f"{FIGURES_DIR}/{figure.name}.json"


def data_file(file: DataFile) -> str:
    """``data/NAME.EXT``, relative to the report folder."""
    return f"{DATA_DIR}/{file.name}.{file.extension}"


def _check_name(name, what: str, seen: dict[str, str]) -> None:
    """Raise unless ``name`` is a file stem not yet in ``seen`` (case-insensitively, as some file systems are)."""
    if not isinstance(name, str) or not FIGURE_NAME_RE.match(name):
        raise ValueError(f"{what} name {name!r} cannot be a file stem: use letters, digits, '_' and '-' only "
                         "(for example 'trace_plot')")
    if name.lower() in seen:
        raise ValueError(f"duplicate {what} name {name!r} (already used by {seen[name.lower()]!r}): "
                         f"{what} names must be unique across the report")
    seen[name.lower()] = name


def check_report(report: Report) -> None:
    """Raise ``ValueError`` for figure or file names that cannot be files or collide, and bad tables."""
    seen: dict[str, str] = {}
    for figure in report.iter_figures():
        _check_name(figure.name, "figure", seen)
        if not isinstance(figure.png, (bytes, bytearray, memoryview)):
            raise ValueError(
                f"figure {figure.name!r}: png must be bytes, got {type(figure.png).__name__}"
            )
        if not bytes(figure.png[: len(PNG_SIGNATURE)]) == PNG_SIGNATURE:
            raise ValueError(f"figure {figure.name!r}: png does not start with the PNG signature")
    seen = {}
    for file in report.iter_files():
        _check_name(file.name, "data file", seen)
        if not isinstance(file.extension, str) or not FILE_EXTENSION_RE.match(file.extension):
            raise ValueError(f"data file {file.name!r}: extension {file.extension!r} must be 1-8 lowercase "
                             "letters or digits")
    for _, section in walk(report.sections):
        for table in section.tables:
            for i, row in enumerate(table.rows):
                if len(row) != len(table.columns):
                    raise ValueError(
                        f"table {table.name!r} in section {section.name!r}: row {i} has "
                        f"{len(row)} cells but there are {len(table.columns)} columns"
                    )



# --------------------------------------------------------------------------- table cells


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


def flatten(mapping: Mapping[str, Any], prefix: str = "", max_depth: int | None = None) -> list[tuple[str, Any]]:
    """Flatten nested dicts into ``(dotted.key, value)`` rows, in insertion order.

    With ``max_depth``, dicts nested deeper are left out (the caller says where they are).
    """
    rows: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            if max_depth is None or max_depth > 1:
                rows.extend(flatten(value, dotted, None if max_depth is None else max_depth - 1))
        else:
            rows.append((dotted, value))
    return rows


def headline_rows(metrics: Mapping[str, Any]) -> list[list[Any]]:
    rows = [[k, v] for k, v in flatten(to_jsonable(metrics), max_depth=HEADLINE_DEPTH)]
    hidden = len(flatten(to_jsonable(metrics))) - len(rows)
    if hidden:
        rows.append(["…", f"{hidden} more values in the sections below and in report.json"])
    return rows


def is_number(value: Any) -> bool:
    value = to_jsonable(value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def heading_level(depth: int) -> int:
    return min(2 + depth, MAX_HEADING_LEVEL)


def seconds_text(value: Any) -> str:
    value = to_jsonable(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{float(value):.2f}"
    return format_value(value)


WARNING_LINE_CHARS = 180  # a verdict's warning line: the first sentence, cut to this


def warning_line(message: str) -> str:
    """The first sentence of a warning, for the verdict's one-line link to it.

    Examples
    --------
    >>> warning_line("Not converged: nested R-hat reaches 1.0153 (> 1.01). The means cannot be trusted.")
    'Not converged: nested R-hat reaches 1.0153 (> 1.01).'
    """
    sentence = re.split(r"(?<=[.!?])\s+(?=[A-Z])", " ".join(str(message).split()), maxsplit=1)[0]
    return sentence if len(sentence) <= WARNING_LINE_CHARS else sentence[: WARNING_LINE_CHARS - 1] + "…"


def warning_entries(report: Report) -> list[dict[str, str]]:
    """Every section's warnings, depth first: ``{"section": "outer/inner", "section_name", "section_title",
    "message", "line"}`` (``line``: :func:`warning_line`)."""
    return [{"section": "/".join(path), "section_name": section.name, "section_title": section.title,
             "message": message, "line": warning_line(message)}
            for path, section in walk(report.sections) for message in section.warnings]
