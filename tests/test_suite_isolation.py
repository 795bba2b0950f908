"""The suite survives a test that kills its interpreter or hangs (issue 19): that test fails, the rest run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CRASHING_TESTS = '''
import faulthandler, time

def test_before():
    pass

def test_native_crash():
    faulthandler._sigsegv()  # a real SIGSEGV, raised in C as a oneDNN fault would be

def test_native_hang():
    time.sleep(60)

def test_after():
    pass
'''


def test_a_segfault_or_a_hang_fails_one_test_and_the_suite_goes_on(tmp_path):
    (tmp_path / "test_victim.py").write_text(CRASHING_TESTS)
    # The project's own pytest configuration (workers, timeout method), with a short timeout for the hang.
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(tmp_path),
         "-p", "no:cacheprovider", "--timeout", "3", "-q", str(tmp_path / "test_victim.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "2 failed, 2 passed" in out, out
    assert "crashed while running 'test_victim.py::test_native_crash'" in out, out
    assert "crashed while running 'test_victim.py::test_native_hang'" in out, out
    assert re.search(r'test_victim.py", line \d+ in test_native_crash', out), out  # the crash's stack is shown
