"""The shared entry point of the benchmark and experiment scripts: common flags, machine facts, one JSON format.

Every script builds its command line with :func:`parser` (which adds ``--data-dir``, ``--cache-dir``,
``--seeds``, ``--out``, ``--name`` and ``--quick``), adds its own flags, reads them with :func:`parse`, and
writes its results with :func:`write_results`, which stamps the one results format::

    {"schema_version": 1, "script": "benchmarks/x.py", "arguments": [...], "seed" or "seeds": ...,
     "machine": {...}, "rows": [...], ...}

A ``--quick`` run does the same work at tiny sizes and writes nothing unless ``--out`` is given, so that the
smoke test (``tests/test_benchmarks_quick.py``) never touches ``results/``. A script run as
``python benchmarks/x.py`` has its own folder on ``sys.path``; the experiments reach this module through
``experiments/_common.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import pyro
import torch

__all__ = ["SCHEMA_VERSION", "REPO", "FIXTURE_DATA", "parser", "parse", "one_seed", "results_path",
           "write_results", "stamp", "RESULTS", "machine", "print_table", "line_progress", "skip", "quick_data_dir", "missing_cards",
           "set_threads", "tests_module"]

SCHEMA_VERSION = 1  # bump when a key every results file carries changes meaning
REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"  # the benchmarks' results (an experiment writes its own)
FIXTURE_DATA = REPO / "tests" / "fixtures" / "data"  # 100 MNIST test digits: what quick modes read without data


def parser(script: str, doc: str | None, *, seeds=(0,)) -> argparse.ArgumentParser:
    """An argument parser holding the flags every script shares.

    Parameters
    ----------
    script : str
        The calling script's ``__file__``: names its results folder (``results/`` beside it) and is
        recorded in the JSON.
    doc : str or None
        The script's docstring; its first line is the parser's description.
    seeds : sequence of int
        Default of ``--seeds`` (``--seed`` is an alias, for scripts that run one seed).

    Returns
    -------
    argparse.ArgumentParser

    Examples
    --------
    >>> p = parser(__file__, "A benchmark.")
    >>> args = parse(p, ["--quick", "--seed", "3"])
    >>> args.quick, args.seeds
    (True, [3])
    """
    path = Path(script).resolve()
    p = argparse.ArgumentParser(description=(doc or path.stem).strip().splitlines()[0])
    p.set_defaults(script=str(path))
    p.add_argument("--data-dir", default=None, help="folder with mnist/ etc. (default $PPL_AUDIT_DATA)")
    p.add_argument("--cache-dir", "--cache", dest="cache_dir", default=None,
                   help="weights cache (default $PPL_AUDIT_CACHE or ~/.cache/ppl-audit)")
    p.add_argument("--seeds", "--seed", dest="seeds", type=int, nargs="+", default=list(seeds),
                   help=f"random seeds (default {' '.join(map(str, seeds))})")
    p.add_argument("--out", type=Path, default=None, help="results file (default results/NAME.json beside the "
                                                          "script; a --quick run writes only with --out)")
    p.add_argument("--name", default=path.stem, help="results/NAME.json (default the script's name)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the script runs (seconds)")
    return p


def parse(p: argparse.ArgumentParser, argv=None, *, quick: dict | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) and keep it, so that the results record what made them; a
    ``--quick`` run takes the script's ``quick`` sizes (``{flag's dest: value}``) over the flags'."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.argv = argv
    if args.quick:
        for key, value in (quick or {}).items():
            setattr(args, key, value)
    return args


def one_seed(args: argparse.Namespace) -> int:
    """The one seed of a script that runs a single seed; more than one is a usage error."""
    if len(args.seeds) != 1:
        raise SystemExit(f"{Path(args.script).name}: this script runs one seed, got --seeds {args.seeds}")
    return args.seeds[0]


def results_path(args: argparse.Namespace) -> Path | None:
    """Where the results go: ``--out``, else ``results/NAME.json`` beside the script; None for a quick run."""
    if args.out is not None:
        return Path(args.out)
    if args.quick:
        return None  # a smoke run must not overwrite measured results
    return Path(args.script).parent / "results" / f"{args.name}.json"


def write_results(args: argparse.Namespace, payload: dict) -> Path | None:
    """Write ``payload`` in the one results format and return its path (None when nothing is written).

    Adds ``schema_version``, ``script`` (relative to the repository), ``arguments`` (the command line),
    ``quick`` and ``machine``, and ``seeds`` unless the payload names its ``seed`` or ``seeds``. The payload
    must hold ``rows``, the printed table.
    """
    if "rows" not in payload:
        raise ValueError(f"{Path(args.script).name}: a results payload needs 'rows' (the printed table)")
    path = results_path(args)
    if path is None:
        print("quick run: nothing written (pass --out to keep the results)")
        return None
    record = stamp(args)
    if "seed" not in payload and "seeds" not in payload:
        record["seeds"] = args.seeds
    record.update(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"wrote {path}")
    return path


def stamp(args: argparse.Namespace) -> dict:
    """The keys every results file carries: schema version, script, its arguments, quick or not, machine."""
    script = Path(args.script)
    return {"schema_version": SCHEMA_VERSION,
            "script": str(script.relative_to(REPO)) if script.is_relative_to(REPO) else str(script),
            "arguments": args.argv, "quick": bool(args.quick), "machine": machine()}


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "numpy": np.__version__,
    }


def tests_module(name: str):
    """A module of the test suite's own, e.g. ``labelled_world`` (worlds with known answers, which a benchmark
    checks against as its tests do)."""
    import importlib

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module(f"tests.{name}")


def set_threads(threads: int | None) -> None:
    """Pin torch's intra-op threads when asked (timings on a shared machine), else leave torch's default."""
    if threads is not None:
        torch.set_num_threads(threads)


def best_time(fn, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``fn()``, after one untimed warm-up call (allocators, caches)."""
    import time

    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def raw_rate(prior, classifier, latents: int = 4096, repeats: int = 3) -> float:
    """Prior draws decoded and classified per second, ``latents`` at a time (16 of the samplers' 256-image
    chunks), the best of ``repeats`` passes: the rate that no sampler of that level set passes."""
    from ppl_audit.levelset import LevelSet

    level_set = LevelSet(prior, classifier, [1 / classifier.num_classes] * classifier.num_classes)
    z = prior.sample(latents, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return latents / best_time(lambda: level_set.predict(z), repeats)


def print_table(columns: list[str], rows: list[list]) -> None:
    """Print rows under their column names, floats to 4 significant digits."""
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]  # rows may be none
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def skip(args: argparse.Namespace, reason: str) -> int:
    """Print why a quick run cannot do its work here, in one line, and return exit status 0."""
    print(f"{Path(args.script).name}: skipped: {reason}")
    return 0


def quick_data_dir(args: argparse.Namespace) -> str | None:
    """The data folder of a run: ``--data-dir``, else (quick runs only) the tests' 100 MNIST digits."""
    if args.data_dir is not None or not args.quick:
        return args.data_dir
    if os.environ.get("PPL_AUDIT_DATA"):
        return os.environ["PPL_AUDIT_DATA"]
    return str(FIXTURE_DATA)


def missing_cards(args: argparse.Namespace, cards) -> list[str]:
    """The cards among ``cards`` whose weights the cache lacks (a quick run skips rather than train them)."""
    from ppl_audit.cache import cache_dir
    from ppl_audit.cards import load_card

    root = cache_dir(args.cache_dir)

    def cached(card: str) -> bool:
        try:
            return load_card(card).cache_path(root).exists()
        except Exception:  # noqa: BLE001 - an unreadable card is as good as a missing one for a skip
            return False

    return [c for c in cards if not cached(c)]


def line_progress(every: int = 500):
    """A progress callback (``ppl_audit.progress``'s signature) printing one line per ``every`` steps.

    Benchmarks log to files more often than to terminals, where a tqdm bar
    would be one long line of carriage returns.
    """
    def progress(task: str, done: int, total: int) -> None:
        if done % every == 0 or done == total:
            print(f"{task}: {done}/{total}", flush=True)

    return progress
