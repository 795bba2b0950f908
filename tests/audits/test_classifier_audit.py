"""One report per classifier (issue 24, item 6): parts run on one classifier, under one verdict table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ppl_audit.audits import classifier, load_audit_file, run_audit
from ppl_audit.errors import AuditFileError, InvalidInputError
from ppl_audit.report import write_report

REPO = Path(__file__).resolve().parents[2]


def _tiny_files(folder: Path, card: str) -> Path:
    (folder / "levels.toml").write_text(
        '[audit]\nkind = "levelset"\nworlds = ["house-rocket"]\nclassifier = "house-rocket-cnn"\n'
        'num_particles = 64\nnum_steps = 8\nnum_samples = 32\nnum_prior_samples = 64\ndevice = "cpu"\n'
        'method = "mh"\n[[targets]]\nname = "ambiguous"\nprobabilities = [0.5, 0.5]\nconcentration = 10.0\n')
    (folder / "path.toml").write_text(
        '[audit]\nkind = "sweep"\nworld = "house-rocket"\npair = ["rocket", "house"]\npath = [0.3, 0.7]\n'
        'num_particles = 256\nimages_per_step = 2\ndevice = "cpu"\n')
    top = folder / "audit.toml"
    top.write_text(f'[audit]\nkind = "classifier"\ntitle = "Tiny"\nseed = 3\nclassifier = "{card}"\n'
                   '[[parts]]\nfile = "levels.toml"\n[[parts]]\nfile = "path.toml"\n')
    return top


def test_one_report_opens_with_a_verdict_row_per_part(tmp_path, tiny_card_file, tiny_classifier):
    top = _tiny_files(tmp_path, str(tiny_card_file))
    report = run_audit(top)
    doc = json.loads((write_report(report, tmp_path / "r") / "report.json").read_text())
    assert doc["kind"] == "classifier" and doc["sections"][0]["name"] == "verdict"
    rows = doc["metrics"]["verdict"]
    assert [r["family"] for r in rows] == ["levelset", "sweep"]
    assert all(r["trust"] and r["key figure"] for r in rows)
    # every part ran on the audit's classifier, with the audit's seed
    assert all(p["seed"] == 3 for p in doc["provenance"]["parts"].values())
    assert doc["provenance"]["parts"]["levelset"]["spec"]["classifier"] == str(tiny_card_file)
    figures = {p.name for p in (tmp_path / "r" / "figures").glob("*.png")}
    assert figures and all(f.startswith(("levelset_", "sweep_")) for f in figures)


def test_a_missing_part_is_named_before_anything_runs(tmp_path):
    top = tmp_path / "audit.toml"
    top.write_text('[audit]\nkind = "classifier"\n[[parts]]\nfile = "nowhere.toml"\n')
    module, spec, _ = load_audit_file(top)
    with pytest.raises(AuditFileError, match="nowhere.toml does not exist"):
        classifier.load_parts(spec)


def test_a_classifier_audit_cannot_nest(tmp_path):
    (tmp_path / "inner.toml").write_text('[audit]\nkind = "classifier"\n[[parts]]\nfile = "x.toml"\n')
    top = tmp_path / "audit.toml"
    top.write_text('[audit]\nkind = "classifier"\n[[parts]]\nfile = "inner.toml"\n')
    with pytest.raises(AuditFileError, match="cannot contain another"):
        classifier.load_parts(load_audit_file(top)[1])


def test_no_parts_or_a_part_that_is_not_an_audit_file_is_refused():
    with pytest.raises(InvalidInputError, match=r"needs 1 to 16 \[\[parts\]\]"):
        classifier.ClassifierAuditSpec()
    with pytest.raises(InvalidInputError, match="must name an audit file"):
        classifier.PartSpec("x.json")


@pytest.mark.parametrize("name", ["mnist-lenet5-audit.toml", "house-rocket-audit.toml"])
def test_the_shipped_files_read_their_parts(name):
    module, spec, _ = load_audit_file(REPO / "analyses" / name)
    parts = classifier.load_parts(spec)
    assert module is classifier and len(parts) >= 2
    assert all(getattr(p, "classifier", spec.classifier) == spec.classifier for _, p in parts)
