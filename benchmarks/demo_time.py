"""Time `ppl-audit demo` end to end: first run (classifier trained) and cached run.

Run:  python benchmarks/demo_time.py
Uses a fresh temporary weights cache, so the first run includes training.
Writes benchmarks/results/demo_time.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine, print_table, write_results

LIMITS = {"first_run": 300.0, "cached_run": 120.0}  # seconds on 2 CPU cores (the issue's)


def _run(cache: str, out: Path) -> float:
    env = dict(os.environ, PPL_AUDIT_CACHE=cache)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ppl_audit", "demo", "--out", str(out), "--quiet"], env=env, check=True)
    return time.perf_counter() - start


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "cache")
        for name in ("first_run", "cached_run"):
            out = Path(tmp) / name
            seconds = _run(cache, out)
            timings = json.loads((out / "timings.json").read_text())["seconds"]
            rows.append([name, seconds, timings["classifier_seconds"], LIMITS[name], seconds <= LIMITS[name]])
    columns = ["run", "seconds", "classifier_seconds", "limit_seconds", "within_limit"]
    print_table(columns, rows)
    path = write_results("demo_time", {"benchmark": "demo_time", "machine": machine(), "columns": columns, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
