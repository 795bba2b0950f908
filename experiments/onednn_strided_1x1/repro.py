"""Reproduce the oneDNN strided 1x1 backward-weights crash behind issue 19, each case in its own subprocess.

Each case runs a few forward/backward passes of one 1x1 convolution on a CPU tensor and compares the
weight gradient with oneDNN's against the same computation with oneDNN switched off. A case ends as:

* ``ok``: the gradients agree (relative error < 1e-4);
* ``wrong``: it ran, but the gradient differs;
* ``crash``: the process died on a signal (segfault, abort, bus error);
* ``hang``: it did not finish within ``--timeout`` seconds.

Run with the machine's own instruction set and with oneDNN capped at AVX2 (``DNNL_MAX_CPU_ISA=AVX2``, the
path an AVX2-only AMD EPYC takes), for the raw ``nn.Conv2d(..., 1, stride=2)`` and for the toolkit's
``PointwiseDownsample`` that replaces it in SDIM::

    .venv/bin/python experiments/onednn_strided_1x1/repro.py

Writes ``experiments/onednn_strided_1x1/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = 20  # passes per case: the overflow corrupts the heap, and the crash comes at a later free

# (batch, in channels, out channels, side, stride, memory format): the first is SDIM's tiny test card's
# second-stage shortcut; the others vary one factor at a time.
CASES = [
    (25, 4, 8, 28, 2, "channels_last"),
    (25, 4, 8, 28, 2, "contiguous"),
    (25, 4, 8, 28, 1, "channels_last"),
    (25, 8, 8, 28, 2, "channels_last"),
    (25, 12, 8, 28, 2, "channels_last"),
    (128, 16, 32, 28, 2, "channels_last"),  # the shipped card's shortcuts: 16 -> 32 at 28, 32 -> 64 at 14
    (128, 32, 64, 14, 2, "channels_last"),
]

CHILD = r"""
import sys, torch
from ppl_audit.classifiers.sdim import PointwiseDownsample
n, ic, oc, side, stride = map(int, sys.argv[1:6]); fmt, layer = sys.argv[6], sys.argv[7]
torch.manual_seed(0)
conv = (torch.nn.Conv2d(ic, oc, 1, stride=stride, bias=False) if layer == "conv2d"
        else PointwiseDownsample(ic, oc, stride))
memory_format = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
x = torch.randn(n, ic, side, side).to(memory_format=memory_format)
def weight_grad(onednn):
    conv.zero_grad()
    with torch.backends.mkldnn.flags(enabled=onednn):
        conv(x).square().sum().backward()
    return conv.weight.grad.clone()
for _ in range(int(sys.argv[8])):
    got = weight_grad(True)
want = weight_grad(False)
print(float((got - want).abs().max() / want.abs().max()))
"""


def run_case(case, layer: str, isa: str | None, timeout: float) -> dict:
    """Run one case in a fresh interpreter; return its outcome and details."""
    env = {k: v for k, v in os.environ.items() if k not in ("DNNL_MAX_CPU_ISA", "ONEDNN_MAX_CPU_ISA")}
    if isa:
        env["DNNL_MAX_CPU_ISA"] = isa
    args = [sys.executable, "-W", "ignore", "-c", CHILD, *map(str, case), layer, str(STEPS)]
    row = {"batch": case[0], "in_channels": case[1], "out_channels": case[2], "side": case[3],
           "stride": case[4], "memory_format": case[5], "layer": layer, "max_cpu_isa": isa or "machine"}
    try:
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**row, "outcome": "hang", "detail": f"no answer in {timeout:g} s"}
    if done.returncode < 0:
        return {**row, "outcome": "crash", "detail": signal.Signals(-done.returncode).name}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {**row, "outcome": "crash" if "corrupt" in last or "free" in last else "error", "detail": last}
    error = float(done.stdout.strip().splitlines()[-1])
    return {**row, "outcome": "ok" if error < 1e-4 else "wrong", "detail": f"relative error {error:.2g}"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a case counts as a hang")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'ISA':8} {'layer':20} {'N':>4} {'IC':>3} {'OC':>3} {'side':>4} {'s':>2} {'format':14} outcome")
    for isa in (None, "AVX2"):
        for case in CASES:
            for layer in ("conv2d", "PointwiseDownsample"):
                if layer == "PointwiseDownsample" and case[4] == 1:
                    continue
                row = run_case(case, layer, isa, args.timeout)
                rows.append(row)
                print(f"{row['max_cpu_isa']:8} {layer:20} {case[0]:4} {case[1]:3} {case[2]:3} {case[3]:4} "
                      f"{case[4]:2} {case[5]:14} {row['outcome']} ({row['detail']})", flush=True)
    import torch

    result = {"schema_version": 1, "machine": platform.processor() or platform.machine(),
              "cpu": _cpu_model(), "torch": torch.__version__, "onednn": _onednn_version(torch),
              "steps_per_case": STEPS, "rows": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _onednn_version(torch) -> str:
    for line in torch.__config__.show().splitlines():
        if "MKL-DNN" in line or "oneDNN" in line:
            return line.strip(" -")
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
