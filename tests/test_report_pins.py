"""The report-pin check itself: a match passes, a change fails, an unpinned report skips with its reason."""

import hashlib
import json

import pytest

import tests.report_pins as report_pins

HERE = {"cpu": "test CPU", "torch_threads": 1}


@pytest.fixture
def pins(tmp_path, monkeypatch):
    """A pins file of one machine, this one, with ``a`` pinned to the bytes ``b"a"`` and ``b`` unpinned."""
    path = tmp_path / "report_pins.json"
    path.write_text(json.dumps({"machines": [{"fingerprint": HERE, "sha256": {"a": hashlib.sha256(b"a").hexdigest()},
                                              "unpinned": {"b": "moved by a change; re-pin here"}}]}))
    monkeypatch.setattr(report_pins, "PINS", path)
    monkeypatch.setattr(report_pins, "fingerprint", lambda: HERE)
    monkeypatch.delenv(report_pins.REPIN_VARIABLE, raising=False)
    return path


def _report(tmp_path, content: bytes):
    path = tmp_path / "report.json"
    path.write_bytes(content)
    return path


def test_a_pinned_report_passes_and_a_changed_one_fails(pins, tmp_path):
    report_pins.assert_pinned("a", _report(tmp_path, b"a"))
    with pytest.raises(AssertionError, match="report.json changed"):
        report_pins.assert_pinned("a", _report(tmp_path, b"changed"))
    with pytest.raises(AssertionError, match="no pin named 'c'"):  # a new report needs its pin
        report_pins.assert_pinned("c", _report(tmp_path, b"c"))


def test_an_unpinned_report_skips_with_its_reason(pins, tmp_path):
    with pytest.raises(pytest.skip.Exception, match="b is not pinned on this machine: moved by a change"):
        report_pins.assert_pinned("b", _report(tmp_path, b"anything"))


def test_re_pinning_records_the_digest_and_clears_the_reason(pins, tmp_path, monkeypatch):
    monkeypatch.setenv(report_pins.REPIN_VARIABLE, "1")
    report_pins.assert_pinned("b", _report(tmp_path, b"b"))
    (machine,) = json.loads(pins.read_text())["machines"]
    assert machine["sha256"]["b"] == hashlib.sha256(b"b").hexdigest() and "unpinned" not in machine
    monkeypatch.delenv(report_pins.REPIN_VARIABLE)
    report_pins.assert_pinned("b", _report(tmp_path, b"b"))
