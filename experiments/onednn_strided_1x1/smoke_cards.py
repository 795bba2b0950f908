"""Train every shipped model card for one epoch (or two steps) on tiny data, each in its own subprocess.

The shipped architectures are kept; only the data (the committed 100 MNIST test digits, or 200 house/rocket
renders) and the length of training shrink. Run it once with the machine's own instruction set and once
with oneDNN capped at AVX2, the path an AVX2-only AMD EPYC takes (issue 19)::

    .venv/bin/python experiments/onednn_strided_1x1/smoke_cards.py
    .venv/bin/python experiments/onednn_strided_1x1/smoke_cards.py --max-cpu-isa AVX2

Each card ends ``ok``, ``crash`` (a signal), ``hang`` (past ``--timeout``) or ``error`` (a Python
exception, with its last line). Writes ``smoke_cards-ISA.json`` beside this file.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FIXTURE_DATA = ROOT / "tests" / "fixtures" / "data"

TINY_DATA = {"train_split": "test", "num_train": 100, "num_test": 100}
# Per card: the overrides that shorten training. The architecture is the shipped one.
SHORT = {
    "house-rocket-cnn": {"data": {"num_train": 200, "num_test": 100}, "training": {"epochs": 1}},
    # A one-epoch BNN labels no digit with certainty >= 0.95: GWIN's critic then takes every digit.
    "mnist-gwin": {"data": TINY_DATA, "training": {"generator_steps": 2, "confidence_threshold": 0.0}},
}
GWIN_CLASSIFIER = "mnist-bayesian-lenet5"  # GWIN needs a BNN: the smoke trains a one-epoch one first

CHILD = r"""
import sys, tempfile
from pathlib import Path
from ppl_audit.cards import load_card
from ppl_audit.training import load_model
name, tables, data_dir, cache = sys.argv[1], eval(sys.argv[2]), sys.argv[3], sys.argv[4]
if name == "mnist-gwin":
    bnn = load_card(sys.argv[5]).with_overrides(data=eval(sys.argv[6]), training={"epochs": 1})
    path = Path(cache) / "smoke-bnn.toml"
    path.write_text(bnn.to_toml())
    tables["training"]["classifier"] = str(path)
load_model(load_card(name).with_overrides(**tables), cache=cache, data_dir=data_dir, device="cpu")
print("trained")
"""


def overrides(name: str) -> dict:
    """The tables that shrink card ``name``'s data and training."""
    return SHORT.get(name, {"data": TINY_DATA, "training": {"epochs": 1}})


def smoke(name: str, isa: str | None, timeout: float) -> dict:
    """Train one card in a fresh interpreter with a private cache; return its outcome."""
    env = {k: v for k, v in os.environ.items() if k not in ("DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA")}
    if isa:
        env["DNNL_MAX_CPU_ISA"] = isa
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        args = [sys.executable, "-W", "ignore", "-c", CHILD, name, repr(overrides(name)), str(FIXTURE_DATA), cache,
                GWIN_CLASSIFIER, repr(TINY_DATA)]
        try:
            done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return {"card": name, "outcome": "hang", "detail": f"no answer in {timeout:g} s", "seconds": timeout}
    seconds = round(time.perf_counter() - start, 1)
    if done.returncode < 0:
        return {"card": name, "outcome": "crash", "detail": signal.Signals(-done.returncode).name, "seconds": seconds}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"card": name, "outcome": "error", "detail": last, "seconds": seconds}
    return {"card": name, "outcome": "ok", "detail": "", "seconds": seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-cpu-isa", default=None, help="cap oneDNN's instruction set, e.g. AVX2")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a card counts as a hang")
    parser.add_argument("--cards", nargs="*", default=None, help="card names (default: every shipped card)")
    args = parser.parse_args(argv)
    names = args.cards or sorted(p.stem for p in (ROOT / "models").glob("*.toml"))
    rows = []
    for name in names:
        row = smoke(name, args.max_cpu_isa, args.timeout)
        rows.append(row)
        print(f"{name:28} {row['outcome']:6} {row['seconds']:7.1f} s  {row['detail']}", flush=True)
    isa = args.max_cpu_isa or "machine"
    result = {"schema_version": 1, "max_cpu_isa": isa, "rows": rows}
    (HERE / f"smoke_cards-{isa}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(r["outcome"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
