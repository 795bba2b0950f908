"""Shared pieces of the property-based suites (tests/test_fuzz_*.py, issue 20).

Every suite runs derandomized (the same cases on every run) with no deadline. Cases per run, as set by
each test's ``max_examples`` and confirmed with ``pytest tests/test_fuzz_*.py --hypothesis-show-statistics``:
CLI 850 (levelset 500, ood 200, arbitrary argument lists 150), API 850 (sample_level_set 700, classifier
outputs 150), files 1,050 (audit files 350, model cards 350, ood folders 350): 2,750 in all.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

def fuzz_settings(max_examples: int):
    """Reproducible settings: derandomized, no deadline, fixtures shared across a test's cases are fine."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# Numbers a careless or hostile user types: extremes, boundaries, special floats, off-by-one counts.
EXTREME_NUMBERS = ["0", "-1", "1", "2", "1e300", "1e-300", "1e10", "1e-50", "inf", "-inf", "nan", "2**63",
                   str(2**63), str(2**64), str(10**12), "1.5", "0.5", "0.9999999999999", "1e5", "100000.0000001",
                   "3", "0x10", "", " ", "1_000"]
JUNK = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
NUMBER_TEXT = st.one_of(st.sampled_from(EXTREME_NUMBERS), st.integers(-10, 10**7).map(str),
                        st.floats(allow_nan=True, allow_infinity=True).map(repr), JUNK)


def one_user_error_line(status, err: str) -> None:
    """Either success, or exit 2 with exactly one stderr line ``ppl-audit: error: ...``; never a traceback."""
    assert "Traceback" not in err, err
    if status != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        assert status == 2, (status, err)
        assert len(lines) == 1 and lines[0].startswith("ppl-audit: error: "), err
