"""The package's layering holds: every module imports only its own layer or lower ones.

The layers are DESIGN.md's picture read bottom-up. Every ``import`` statement is read from the source
(including those inside functions and ``TYPE_CHECKING`` blocks, which are imports all the same), so a
new upward edge fails here with the file, the line and the two layers.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ppl_audit"

#: bottom to top; a module may import its own layer or any layer below it
LAYERS = (
    ("errors", "_version", "validators", "progress", "_device", "paths"),  # the base: no ppl_audit imports above it
    ("provenance", "cache", "cards", "metrics", "report"),
    ("diagnostics",),  # the one ArviZ module; draws its plots with report.figures
    ("data",),
    ("training",),  # registry, loader, trainer loop: model modules register into it
    ("priors",),
    ("classifiers",),
    ("levelset", "inference"),
    ("generative", "detectors", "adversarial"),
    ("sampling", "region_mass"),  # region_mass: rare-event masses of confident regions, on the SMC engine
    ("execute",),  # where audits' units run (local, Ray): below the audits that fan out
    ("audits",),
    ("cli", "__main__", "__init__"),
)
LAYER_OF = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}


def _room(module: str) -> str:
    """``ppl_audit.training.loader`` -> ``training``; the package itself -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _module_name(path: Path, package: Path) -> str:
    parts = ("ppl_audit",) + path.relative_to(package).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, package_dir: Path):
    """``(line, imported module)`` for every ppl_audit import in ``path``, relative ones resolved."""
    module = _module_name(path, package_dir)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names if alias.name.startswith("ppl_audit"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "ppl_audit":  # `from ppl_audit import x`: x names the room
                yield from ((node.lineno, f"ppl_audit.{alias.name}") for alias in node.names)
            elif target.startswith("ppl_audit."):
                yield node.lineno, target


def _upward_edges(package_dir: Path = PACKAGE) -> list[str]:
    edges = []
    for path in sorted(package_dir.rglob("*.py")):
        room = _room(_module_name(path, package_dir))
        for line, target in _imports(path, package_dir):
            other = _room(target)
            if other not in LAYER_OF or other == "__version__":
                continue
            if LAYER_OF[other] > LAYER_OF[room]:
                edges.append(f"{path.relative_to(package_dir.parent)}:{line} ({room}, layer {LAYER_OF[room]}) imports "
                             f"{target} ({other}, layer {LAYER_OF[other]})")
    return edges


def test_every_room_has_a_layer():
    rooms = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists()))}
    assert rooms - set(LAYER_OF) == set(), "a new module needs a layer in LAYERS (and a line in DESIGN.md)"


def test_imports_run_downward():
    assert _upward_edges() == []


def test_an_upward_import_is_caught(tmp_path):
    """The walk is not vacuous: a planted upward import (inside a function) in a copy of the package is reported."""
    copy = tmp_path / "ppl_audit"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    planted = copy / "validators.py"
    planted.write_text(planted.read_text() + "\n\ndef _planted():\n    from .audits import levelset\n")
    edges = _upward_edges(copy)
    assert len(edges) == 1 and "validators.py" in edges[0] and "audits" in edges[0]


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__main__.py"),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_every_module_declares_all(path):
    """Every importable module says what it offers (``__main__`` is an entry point, not an import target)."""
    tree = ast.parse(path.read_text(), str(path))
    names = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
             if isinstance(t, ast.Name)}
    assert "__all__" in names, f"{path.relative_to(PACKAGE.parent)} declares no __all__"
