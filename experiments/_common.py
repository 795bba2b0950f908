"""The benchmarks' shared entry point (``benchmarks/_common.py``), for the experiments.

One copy of the code: this module loads that file and stands in for it, so that an experiment run as
``python experiments/x.py`` imports ``_common`` as a benchmark does, and writes ``experiments/results/``
(the results folder follows the calling script's own folder).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_SOURCE = Path(__file__).resolve().parents[1] / "benchmarks" / "_common.py"

_spec = importlib.util.spec_from_file_location(__name__, _SOURCE)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
sys.modules[__name__] = _module  # the import statement returns this entry: the benchmarks' module
