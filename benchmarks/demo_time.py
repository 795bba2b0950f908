"""Time `ppl-audit demo` end to end: first run (classifier trained) and cached run.

Run:  python benchmarks/demo_time.py [--quick]
Uses a fresh temporary weights cache, so the first run includes training.
Writes benchmarks/results/demo_time.json. A --quick run times one tiny level-set audit through the same
command line (``ppl-audit levelset``, 20 particles, 5 MH steps) against the weights already cached, and
writes only with --out; it is skipped when the house/rocket classifier is not cached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import missing_cards, parse, parser, print_table, skip, write_results

LIMITS = {"first_run": 300.0, "cached_run": 120.0}  # seconds on 2 CPU cores (the issue's)
QUICK_COMMAND = ["levelset", "--world", "house-rocket", "--target", "0.5,0.5", "--particles", "20", "--steps", "5",
                 "--method", "mh", "--device", "cpu"]  # the demo's audit, one target, tiny sizes


def _run(cache: str, out: Path, command: list[str], seed: int) -> float:
    """Seconds one ``ppl-audit`` run takes, as a fresh process with ``cache`` as its weights cache."""
    env = dict(os.environ, PPL_AUDIT_CACHE=cache)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ppl_audit", *command, "--seed", str(seed), "--out", str(out), "--quiet"],
                   env=env, check=True)
    return time.perf_counter() - start


def _row(name: str, seconds: float, out: Path, limit: float | None) -> list:
    """A table row: the run, its wall seconds, the classifier's seconds the report timed, the limit."""
    timings = json.loads((out / "timings.json").read_text())["seconds"]
    return [name, seconds, timings["classifier_seconds"], limit, None if limit is None else seconds <= limit]


def main(argv=None) -> int:
    args = parse(parser(__file__, __doc__), argv)
    seed = args.seeds[0]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            if missing_cards(args, ["house-rocket-cnn"]):
                return skip(args, "the house-rocket-cnn weights are not cached (ppl-audit demo trains them)")
            from ppl_audit.cache import cache_dir

            out = Path(tmp) / "quick_run"
            seconds = _run(str(cache_dir(args.cache_dir)), out, QUICK_COMMAND, seed)
            rows.append(_row("quick_run", seconds, out, None))
        else:
            cache = os.path.join(tmp, "cache")
            for name in ("first_run", "cached_run"):
                out = Path(tmp) / name
                rows.append(_row(name, _run(cache, out, ["demo"], seed), out, LIMITS[name]))
    columns = ["run", "seconds", "classifier_seconds", "limit_seconds", "within_limit"]
    print_table(columns, rows)
    write_results(args, {"benchmark": "demo_time", "seed": seed, "columns": columns, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
