"""The public API: the contracts a user extends, and one call that runs any audit and writes its report."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

import ppl_audit
from ppl_audit.audits import levelset, with_executor
from ppl_audit.audits.levelset import LevelSetAuditSpec, TargetSpec
from ppl_audit.errors import InvalidInputError
from ppl_audit.execute import LocalExecutor
from ppl_audit.report import write_report

TINY = dict(title="tiny", worlds=("house-rocket",), targets=(TargetSpec("ambiguous", (0.5, 0.5), 10.0),),
            num_particles=32, num_steps=8, num_samples=32, num_prior_samples=50, device="cpu")


def test_the_contracts_a_user_extends_are_exported():
    for name in ("Prior", "DecoderPrior", "Classifier", "as_classifier", "SamplingResult", "Detector",
                 "run_audit", "load_audit_file", "load_model", "sample_level_set"):
        assert name in ppl_audit.__all__ and getattr(ppl_audit, name) is not None, name


def test_run_audit_runs_a_spec_and_writes_the_same_report(tiny_classifier, tmp_path):
    report = ppl_audit.run_audit(LevelSetAuditSpec(**TINY), seed=3, out=tmp_path / "r", classifier=tiny_classifier)
    assert report.title == "tiny" and json.loads((tmp_path / "r" / "report.json").read_text())["title"] == "tiny"
    assert report.provenance["executor"] == {"kind": "local"}  # where it ran: the one entry run_audit adds
    direct = levelset.run(LevelSetAuditSpec(**TINY), seed=3, classifier=tiny_classifier)
    direct = write_report(with_executor(direct, LocalExecutor()), tmp_path / "d")
    assert (direct / "report.json").read_bytes() == (tmp_path / "r" / "report.json").read_bytes()


def test_run_audit_reads_an_audit_file_with_its_seed(tiny_classifier, tmp_path, monkeypatch):
    seen, report = {}, SimpleNamespace(provenance={})
    monkeypatch.setattr(levelset, "run", lambda spec, seed, **options: seen.update(spec=spec, seed=seed) or report)
    path = tmp_path / "a.toml"
    path.write_text('[audit]\nkind = "levelset"\nseed = 7\nnum_particles = 64\nnum_samples = 64\n')
    assert ppl_audit.run_audit(path) is report and report.provenance["executor"] == {"kind": "local"}
    assert seen["seed"] == 7 and seen["spec"].num_particles == 64
    ppl_audit.run_audit(path, seed=2)
    assert seen["seed"] == 2


def test_run_audit_refuses_what_is_not_an_audit_and_a_bad_destination_before_work(tmp_path, monkeypatch):
    with pytest.raises(InvalidInputError, match="needs an audit file or an audit spec, got int"):
        ppl_audit.run_audit(5)
    monkeypatch.setattr(levelset, "run", lambda *a, **k: pytest.fail("ran although --out is unusable"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="not a folder"):
        ppl_audit.run_audit(LevelSetAuditSpec(**TINY), out=tmp_path / "file")
