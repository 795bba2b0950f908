"""A native crash in the middle of a command leaves no report and no cache entry (issue 19).

Each command runs in a child interpreter whose progress display raises a real SIGSEGV (in C, as a oneDNN
fault would) at a chosen step of a chosen phase: training, or sampling a level set.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cli import TINY_SIZES

CRASH_AT_STEP = r"""
import faulthandler, sys
from ppl_audit import cli

phase, step = sys.argv[1], int(sys.argv[2])
shown = cli._Progress.__call__

def crash_in_phase(self, task, done, total):
    if task.startswith("training") == (phase == "training") and done >= step:
        faulthandler._sigsegv()
    shown(self, task, done, total)

cli._Progress.__call__ = crash_in_phase
sys.exit(cli.main(sys.argv[3:]))
"""


def run_crashing(phase: str, argv: list, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-c", CRASH_AT_STEP, phase, "2", *map(str, argv)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGSEGV, f"exit {done.returncode}: {done.stderr[-3000:]}"
    return done


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_crash_while_training_caches_nothing_and_writes_no_report(tmp_path, tiny_card_file):
    cache, reports = tmp_path / "cache", tmp_path / "reports"
    cache.mkdir(), reports.mkdir()
    run_crashing("training", ["train", tiny_card_file, "--cache-dir", cache, "--out", reports / "OUT"], tmp_path)
    assert files_under(cache) == []
    assert list(reports.iterdir()) == []


def test_a_crash_while_sampling_writes_no_report(tmp_path, tiny_card_file, tiny_classifier, cache_root):
    before = files_under(Path(cache_root))
    run_crashing("sampling", ["levelset", "--target", "0.5,0.5", "--classifier", tiny_card_file, *TINY_SIZES,
                              "--cache-dir", cache_root, "--out", tmp_path / "OUT"], tmp_path)
    assert list(tmp_path.iterdir()) == []  # no OUT, no .OUT.tmp-*
    assert files_under(Path(cache_root)) == before
