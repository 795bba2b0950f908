"""Smoke run of the hostile-input benchmark's --quick mode (issue 20): every case holds, the JSON has its habits."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "hostile_inputs.py"


def test_hostile_inputs_quick_runs_and_every_case_holds(tmp_path):
    path = tmp_path / "hostile.json"
    done = subprocess.run([sys.executable, str(BENCHMARK), "--quick", "--out", str(path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(path.read_text())
    assert data["schema_version"] == 1 and data["seed"] == 0 and data["quick"] and "torch" in data["machine"]
    assert data["summary"]["all_held"] and data["summary"]["tracebacks"] == 0
    rows = [dict(zip(data["columns"], row)) for row in data["rows"]]
    assert len(rows) >= 4 and {r["class"] for r in rows} >= {"data loss", "path escape", "device", "argparse"}
    for row in rows:
        assert row["held"] and row["exit"] == 2 and row["stderr_lines"] == 1, row
        assert row["first_stderr_line"].startswith("ppl-audit: error: "), row
    assert "cases" in done.stdout and "all held: True" in done.stdout
