"""Pinned hashes of the audits' tiny smoke reports: behaviour stays unchanged across refactors (issue 22).

Each audit's tiny smoke test writes its ``report.json`` and calls :func:`assert_pinned` with a name.
The file's SHA-256 must equal the one pinned in ``tests/fixtures/report_pins.json``, which was
recorded per machine: the same code on the same CPU model, library versions and torch thread
count gives the same bytes (the reports' numbers are seeded), but another CPU or BLAS may round a
last digit differently. The file keeps one set of pins per machine fingerprint (an Intel and an AMD
machine so far); on a machine with none the check is skipped, saying why.

A change that is meant to alter a report (a new metric, a fixed bug) re-pins, on the machine
that runs CI: ``PPL_AUDIT_REPIN=1 .venv/bin/python -m pytest tests/audits -q``, then commit the
file with a message saying what changed in the reports and why. A machine where the change could not
be re-pinned keeps no stale pin: the pin moves to that machine's ``unpinned`` table with the reason,
and its check skips saying so until someone re-pins there.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
from pathlib import Path

import pytest

PINS = Path(__file__).resolve().parent / "fixtures" / "report_pins.json"
REPIN_VARIABLE = "PPL_AUDIT_REPIN"


def _cpu_model() -> str:
    """The CPU's model name (Linux), else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint() -> dict:
    """What a report's bytes may depend on besides the code: CPU, kernels, versions, threads."""
    import arviz
    import numpy
    import pyro
    import torch

    import ppl_audit

    return {"machine": platform.machine(), "cpu": _cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads(),
            "versions": {"ppl_audit": ppl_audit.__version__, "torch": torch.__version__, "pyro": pyro.__version__,
                         "arviz": arviz.__version__, "numpy": numpy.__version__, "python": platform.python_version()}}


def _record(name: str, digest: str) -> None:
    """Pin ``digest`` under ``name`` with this machine's fingerprint (a lock: xdist workers write too)."""
    with open(PINS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        machines = json.loads(PINS.read_text())["machines"] if PINS.exists() else []
        here = fingerprint()
        others = [m for m in machines if m["fingerprint"] != here]
        entry = _machine_here(machines) or {}
        unpinned = {k: v for k, v in entry.get("unpinned", {}).items() if k != name}
        machines = others + [{"fingerprint": here, "sha256": {**entry.get("sha256", {}), name: digest},
                              **({"unpinned": unpinned} if unpinned else {})}]
        PINS.write_text(json.dumps({"machines": machines}, indent=2, sort_keys=True) + "\n")


def _machine_here(machines: list[dict]) -> dict | None:
    """The entry (``sha256`` pins, optional ``unpinned`` reasons) of a machine with this one's fingerprint."""
    here = fingerprint()
    return next((m for m in machines if m["fingerprint"] == here), None)


def _without(value, keys: tuple[str, ...]):
    """``value`` with every mapping entry and table column named in ``keys`` dropped, at any depth."""
    if isinstance(value, dict) and isinstance(value.get("columns"), list) and isinstance(value.get("rows"), list):
        keep = [i for i, c in enumerate(value["columns"]) if c not in keys]
        value = {**value, "columns": [value["columns"][i] for i in keep],
                 "rows": [[row[i] for i in keep] for row in value["rows"]]}
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


def assert_pinned(name: str, report_json: Path, *, timing_keys: tuple[str, ...] = ()) -> None:
    """Check ``report_json``'s SHA-256 against the pin ``name`` (or record it under ``PPL_AUDIT_REPIN=1``).

    ``timing_keys``: entries (mapping keys or table columns) a report keeps among its numbers although
    they are wall-clock times; the hash is then taken over the JSON without them (re-serialised with
    sorted keys).
    """
    data = report_json.read_bytes()
    if timing_keys:
        data = json.dumps(_without(json.loads(data), timing_keys), sort_keys=True).encode()
    digest = hashlib.sha256(data).hexdigest()
    if os.environ.get(REPIN_VARIABLE) == "1":
        _record(name, digest)
        return
    machine = _machine_here(json.loads(PINS.read_text())["machines"])
    if machine is None:
        pytest.skip(f"report pins were recorded on other machines or versions ({PINS.name}); see tests/report_pins.py")
    if name in machine.get("unpinned", {}):
        pytest.skip(f"{name} is not pinned on this machine: {machine['unpinned'][name]}")
    pins = machine["sha256"]
    assert name in pins, f"no pin named {name!r} in {PINS.name}; record it with {REPIN_VARIABLE}=1"
    assert digest == pins[name], (
        f"{name}: report.json changed ({digest[:12]} against pinned {pins[name][:12]}); if the change "
        f"is meant, re-pin with {REPIN_VARIABLE}=1 on each machine and say why in the commit")
