"""One report per classifier (issue 24, item 6): parts run on one classifier, under one verdict table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ppl_audit.audits import classifier, load_audit_file, run_audit, verdict
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
    assert doc["kind"] == "classifier" and [s["name"] for s in doc["sections"]] == ["levelset", "sweep"]
    rows = doc["metrics"]["verdict"]
    assert [r["family"] for r in rows] == ["levelset", "sweep"]
    assert all(r["trust"] and r["key figure"] for r in rows)
    # the verdict block: one row per part, linked to the part's section; the parts' first images
    verdict = doc["verdict"]
    assert [r["item"] for r in verdict["rows"]] == ["levelset", "sweep"]
    assert [r["section"] for r in verdict["rows"]] == ["levelset", "sweep"]
    assert [r["trust"] for r in verdict["rows"]] == [r["trust"] for r in rows]
    assert verdict["audited"]["classifier"] == str(tiny_card_file)
    assert 1 <= len(verdict["highlights"]) <= 3
    assert all((tmp_path / "r" / h["file"]).is_file() for h in verdict["highlights"])
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


@pytest.mark.parametrize("kind,metrics,expected", [
    ("gwin", {"bnn_accuracy_percent": 98.123, "at_or_above_paper_count": 4, "paper_comparisons": 5},
     "BNN accuracy 98.12%; rejected-subset accuracy at or above the paper's at 4 of 5 thresholds"),
    ("selective", {"methods": {"CNN": {"aurc": 0.01234, "ood_at_max_confidence": 7}}},
     "classifier AURC 0.0123; 7 out-of-distribution images at its maximum confidence"),
    ("calibration", {"max_gap": 0.0456}, "largest |q - p| = 0.046"),
    ("levelset", {"rows": [{"converged": True}, {"converged": False}]}, "1 of 2 level sets converged"),
])
def test_each_family_has_its_own_key_figure(kind, metrics, expected):
    from ppl_audit.report import Report

    assert verdict.key_figure(Report(kind=kind, title="t", metrics=metrics)) == expected


def test_an_inline_part_runs_like_its_file(tmp_path, tiny_card_file, tiny_classifier):
    top = tmp_path / "audit.toml"
    top.write_text(f'[audit]\nkind = "classifier"\nseed = 2\nclassifier = "{tiny_card_file}"\n'
                   '[[parts]]\nkind = "sweep"\n[parts.settings]\nworld = "house-rocket"\npair = ["rocket", "house"]\n'
                   'path = [0.3, 0.7]\nnum_particles = 256\nimages_per_step = 2\ndevice = "cpu"\n')
    report = run_audit(top)
    assert [r["family"] for r in report.metrics["verdict"]] == ["sweep"]
    assert report.provenance["spec"]["parts"][0] == {
        "kind": "sweep", "settings": {"world": "house-rocket", "pair": ["rocket", "house"], "path": [0.3, 0.7],
                                      "num_particles": 256, "images_per_step": 2, "device": "cpu"}}


@pytest.mark.parametrize("part,message", [
    ('kind = "levelsets"\n', "kind = 'levelsets' is unknown"),
    ('kind = "sweep"\nfile = "x.toml"\n', "an audit file or a kind, not both"),
    ('kind = "sweep"\n[parts.settings]\npaths = [0.3, 0.7]\n', r"part 1 \(sweep\).*paths"),
    ('file = "x.toml"\n[parts.settings]\nworld = "house-rocket"\n', "settings go with an inline part"),
])
def test_bad_inline_parts_are_named(tmp_path, part, message):
    top = tmp_path / "audit.toml"
    top.write_text(f'[audit]\nkind = "classifier"\n[[parts]]\n{part}')
    with pytest.raises((AuditFileError, InvalidInputError), match=message):
        classifier.load_parts(load_audit_file(top)[1])


def test_flags_plan_every_family_the_models_allow():
    from ppl_audit.audits.plan import CONFIDENCE_GRID, spec_from_models

    spec = spec_from_models("mnist-lenet5", priors=["mnist-vae", "mnist-class-vae"], novel_priors=["notmnist-vae"])
    parts = classifier.load_parts(spec)
    assert [m.KIND for m, _ in parts] == ["levelset", "calibration", "confidently-wrong", "sweep", "novel-class"]
    calibration = parts[1][1]
    assert calibration.mode == "confidence" and calibration.grid == CONFIDENCE_GRID
    assert all(getattr(p, "classifier", "mnist-lenet5") == "mnist-lenet5" for _, p in parts)
    two_class = classifier.load_parts(spec_from_models("house-rocket-cnn", priors=["house-rocket"]))
    assert [m.KIND for m, _ in two_class] == ["levelset", "calibration", "sweep"]
    assert two_class[1][1].pair == ("rocket", "house")


def test_flags_for_a_classifier_of_ones_own(tmp_path):
    from ppl_audit.audits.plan import plan_parts

    with pytest.raises(InvalidInputError, match="name its classes"):
        plan_parts("my.pt2", priors=["house-rocket"])
    with pytest.raises(InvalidInputError, match="no built-in priors"):
        plan_parts("my.pt2", class_names=("a", "b"))
    parts = plan_parts("my.pt2", priors=["house-rocket"], class_names=("a", "b"))
    assert parts[0].settings["targets"] == [{"name": "ambiguous", "probabilities": [0.5, 0.5]}]
    assert parts[0].settings["classes"] == ["a", "b"] and parts[-1].settings["pair"] == ["a", "b"]


@pytest.mark.parametrize("argv,message", [
    (["audit", "--out", "o"], "name an audit file or a classifier"),
    (["audit", "x.toml", "--prior", "house-rocket", "--out", "o"], "not both"),
    (["audit", "--classifier", "mnist-lenet5", "--prior", "nowhere", "--out", "o"], "unknown world 'nowhere'"),
])
def test_audit_flags_refuse_bad_input_in_one_line(argv, message, capsys, tmp_path, monkeypatch):
    from ppl_audit.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "o").exists()
