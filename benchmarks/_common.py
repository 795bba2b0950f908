"""Shared helpers of the benchmark scripts: machine facts and JSON output."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import pyro
import torch

RESULTS = Path(__file__).resolve().parent / "results"


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


def print_table(columns: list[str], rows: list[list]) -> None:
    """Print rows under their column names, floats to 4 significant digits."""
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def write_results(name: str, payload: dict) -> Path:
    """Write ``benchmarks/results/NAME.json`` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def line_progress(every: int = 500):
    """A progress callback (``ppl_audit.progress``'s signature) printing one line per ``every`` steps.

    Benchmarks log to files more often than to terminals, where a tqdm bar
    would be one long line of carriage returns.
    """
    def progress(task: str, done: int, total: int) -> None:
        if done % every == 0 or done == total:
            print(f"{task}: {done}/{total}", flush=True)

    return progress
