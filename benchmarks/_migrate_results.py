"""Stamp results written before the one results format (issue 22) with its keys, keeping every number.

Adds what a file lacks: ``schema_version``, ``script`` (from the file name: the longest script stem it
starts with, in the same tree), ``arguments`` (null, with a note: they were not recorded), ``machine`` and
``seed`` (null with a note where never recorded), and ``rows`` (copied from ``results`` / ``methods`` where
the table was kept under another key), plus ``migrated`` listing what was added. Files already in the format
are left alone, so running it again changes nothing.

Run:  python benchmarks/_migrate_results.py [FILE.json ...]   # default: every file in */results/
"""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def script_of(path: Path) -> str:
    """The script (relative to the repository) whose default name or --name variant ``path`` is."""
    folder = path.parent.parent
    if path.stem.startswith("synthesis_tuning_"):  # --name variants of synthesis_mnist.py (tuning on training digits)
        return "benchmarks/synthesis_mnist.py"
    stems = sorted((p.stem for p in folder.glob("[a-z]*.py")), key=len, reverse=True)
    stem = next(s for s in stems if path.stem == s or path.stem.startswith(s + "_"))
    return str((folder / f"{stem}.py").relative_to(REPO))


def rows_from(d: dict):
    """Rows copied from the key a pre-format file kept its table under, and that key's name."""
    if "methods" in d:  # selective_mnist: one row per classifier
        return [{"classifier": k, **v} for k, v in d["methods"].items()], "methods"
    res = d.get("results")
    if isinstance(res, dict) and all(isinstance(v, dict) for v in res.values()):
        first = next(iter(res.values()), {})
        if first and all(isinstance(v, dict) and "errors" in v for v in first.values()):  # class_gan_holdout
            return [{"generators": g, "search": s, **f} for g, by in res.items() for s, f in by.items()], "results"
        return [{"card": k, **v} for k, v in res.items()], "results"  # synthesis_mnist
    return None, None


def migrate(path: Path) -> list[str]:
    """Add the format's missing keys to ``path`` in place; return what was added (empty: nothing to do)."""
    d = json.loads(path.read_text())
    added = []
    if "script" not in d:
        d["script"] = script_of(path); added.append("script")
    if "arguments" not in d:
        d["arguments"] = None; added.append("arguments")
        d["arguments_note"] = ("not recorded when this file was written; the file name is the script's default "
                               "or the --name (or --out) it was given")
    if "machine" not in d:
        d["machine"] = None; d["machine_note"] = "not recorded when this file was written"; added.append("machine")
    if "seed" not in d and "seeds" not in d:
        if isinstance(d.get("settings"), dict) and "seeds" in d["settings"]:
            d["seeds"] = d["settings"]["seeds"]; added.append("seeds (from settings)")
        else:
            d["seed"] = None; d["seed_note"] = "not recorded when this file was written"; added.append("seed")
    if "rows" not in d:
        rows, source = rows_from(d)
        d["rows"] = rows; added.append(f"rows (one per entry of '{source}', copied)" if rows else "rows")
        if rows is None:
            d["rows_note"] = "no table was recorded"
    if "schema_version" not in d:
        d["schema_version"] = 1; added.append("schema_version")
    if added:
        d["migrated"] = {"issue": 22, "note": "stamped after the fact; no number changed", "added": added}
        path.write_text(json.dumps(d, indent=2, sort_keys=True, default=str) + "\n")
    return added


def main(argv: list[str]) -> int:
    """Migrate the files named, else every results file of the benchmarks and the experiments."""
    paths = [Path(a).resolve() for a in argv] or sorted((REPO / "benchmarks" / "results").glob("*.json")) + sorted(
        (REPO / "experiments" / "results").glob("*.json"))
    for path in paths:
        added = migrate(path)
        if added:
            print(f"{path.relative_to(REPO)}: added {', '.join(added)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
