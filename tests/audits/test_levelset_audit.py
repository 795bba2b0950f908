"""Tests of the level-set audit: its report, determinism, audit files and spec validation.

Everything runs with tiny sizes and the tiny classifier of ``conftest.py``;
the baseline yield's prior draws are cut from 20,000 to 500 per world.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from ppl_audit.audits import AUDIT_KINDS, levelset, load_audit_file
from ppl_audit.audits.levelset import LevelSetAuditSpec, TargetSpec
from ppl_audit.audits.spec import spec_hash
from ppl_audit.errors import AuditFileError, InvalidInputError
from ppl_audit.report import Figure, Report, Section, Table, write_report
from tests.report_pins import assert_pinned

REPO = Path(__file__).resolve().parents[2]
# The level-set audit files; the other kinds' files are smoke-run by their own tests
# (test_gwin_audit.py, test_ood_audit.py), and test_every_audit_file_has_a_smoke_test checks that.
ANALYSES = sorted(p for p in (REPO / "analyses").glob("*.toml") if 'kind = "levelset"' in p.read_text())
SMOKE_TESTED_ELSEWHERE = {"mnist-gwin.toml": "test_gwin_audit.py", "mnist-ood.toml": "test_ood_audit.py",
                          "mnist-selective.toml": "test_selective_audit.py",
                          "house-rocket-calibration.toml": "test_calibration_audit.py",
                          "mnist-calibration.toml": "test_calibration_audit.py",
                          "mnist-confidently-wrong.toml": "test_confident_region_audits.py",
                          "mnist-novel-class.toml": "test_confident_region_audits.py",
                          "mnist-sweep.toml": "test_sweep_audit.py",
                          "mnist-lenet5-audit.toml": "test_classifier_audit.py",
                          "house-rocket-audit.toml": "test_classifier_audit.py"}
FAST_YIELD_DRAWS = 500
# num_steps >= 8 keeps 4 post-warm-up draws per particle, ArviZ's minimum for its diagnostics.
TINY = dict(num_particles=32, num_steps=8, num_samples=32, num_prior_samples=50, device="cpu")
TARGET_KEYS = {
    "target", "concentration", "delta", "mean_confidence", "min_confidence", "max_confidence",
    "fraction_in_ambiguous_band", "acceptance_rate", "num_samples", "num_distinct", "rhat_max",
    "ess_bulk_min", "ess_tail_min", "classifier_evaluations", "ambiguous_per_1000_evaluations",
    "ambiguous_yield_vs_prior", "diagnostics", "figures",
}
TWO_TARGETS = (TargetSpec("house", (0.001, 0.999), 10.0), TargetSpec("ambiguous", (0.5, 0.5), 10.0))


@pytest.fixture(autouse=True)
def _fast_yield(monkeypatch):
    monkeypatch.setattr(levelset, "YIELD_PRIOR_DRAWS", FAST_YIELD_DRAWS)


def _two_target_spec() -> LevelSetAuditSpec:
    return LevelSetAuditSpec(title="tiny", worlds=("house-rocket",), targets=TWO_TARGETS, **TINY)


@pytest.fixture(scope="module")
def two_target_report(tiny_classifier) -> Report:
    """One run of the two-target audit, seed 0, shared by the tests below."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(levelset, "YIELD_PRIOR_DRAWS", FAST_YIELD_DRAWS)
        return levelset.run(_two_target_spec(), seed=0, classifier=tiny_classifier)


def _sections(sections):
    for section in sections:
        yield section
        yield from _sections(section.subsections)


# --------------------------------------------------------------------------- the report


def test_report_has_one_entry_per_target(two_target_report, tiny_classifier):
    report = two_target_report
    assert report.kind == levelset.KIND == "levelset"
    assert AUDIT_KINDS["levelset"] is levelset
    assert report.title == "tiny"
    worlds = report.metrics["worlds"]
    assert list(worlds) == ["house-rocket"]
    world = worlds["house-rocket"]
    assert world["prior_ambiguous_per_1000_evaluations"] >= 0
    assert list(world["targets"]) == ["house", "ambiguous"]
    for spec_target in TWO_TARGETS:
        entry = world["targets"][spec_target.name]
        assert TARGET_KEYS <= set(entry), TARGET_KEYS - set(entry)
        assert entry["target"] == list(spec_target.probabilities)
        assert entry["concentration"] == spec_target.concentration
        assert 0 <= entry["delta"] <= 1
        assert 0 <= entry["min_confidence"] <= entry["mean_confidence"] <= entry["max_confidence"] <= 1
        assert 0 <= entry["acceptance_rate"] <= 1
        assert entry["num_samples"] == TINY["num_samples"]
        assert 1 <= entry["num_distinct"] <= entry["num_samples"]
        assert entry["classifier_evaluations"] > 0
        assert entry["ambiguous_per_1000_evaluations"] >= 0
        assert entry["ess_bulk_min"] > 0
        assert math.isfinite(entry["rhat_max"])
        assert set(entry["diagnostics"]) == {"w", "h", "t"}
        for d in entry["diagnostics"].values():
            assert {"mean", "sd", "mcse_mean", "rhat", "ess_bulk", "ess_tail"} <= set(d)
    # The sampler reaches the confident target: P(house) near 0.999 on the house level set.
    assert world["targets"]["house"]["mean_confidence"] > 0.8
    info = report.metrics["classifier"]
    assert info["recipe_hash"] == tiny_classifier.info["recipe_hash"]
    assert info["class_names"] == ["rocket", "house"]
    assert info["test_accuracy"] == tiny_classifier.info["metrics"]["test_accuracy"]


def test_figures_named_in_entries_exist_in_their_sections(two_target_report):
    report = two_target_report
    all_figures = [f.name for f in report.iter_figures()]
    assert len(all_figures) == len(set(all_figures))
    by_section = {s.name: s for s in _sections(report.sections)}
    for name, entry in report.metrics["worlds"]["house-rocket"]["targets"].items():
        # samples, latents, confidence, acceptance, tempering (the default smc), ArviZ trace and rank plots
        assert [f.rsplit("_", 1)[1] for f in entry["figures"]] == [
            "samples", "latents", "confidence", "acceptance", "tempering", "trace", "rank"]
        section = by_section[f"house_rocket_{name}"]
        assert [f.name for f in section.figures] == entry["figures"]
        assert section.metrics["target"] == entry["target"]
        for fig in section.figures:
            assert fig.png.startswith(b"\x89PNG")
    world_section = by_section["house_rocket"]
    summary = world_section.tables[0]
    assert [row[0] for row in summary.rows] == ["house", "ambiguous"]
    assert [row[1] for row in summary.rows] == [[0.001, 0.999], [0.5, 0.5]]
    # the statistics the verdict uses, not ArviZ's split R-hat over thousands of short chains
    assert {"nested_rhat_max", "converged"} <= set(summary.columns) and "rhat_max" not in summary.columns


def test_verdict_has_a_row_per_target_linked_to_its_section(two_target_report, tmp_path):
    report = two_target_report
    verdict = report.verdict
    entries = report.metrics["worlds"]["house-rocket"]["targets"]
    assert [r.item for r in verdict.rows] == ["house-rocket: house", "house-rocket: ambiguous"]
    sections = {s.name for s in _sections(report.sections)}
    assert [r.section for r in verdict.rows] == ["house_rocket_house", "house_rocket_ambiguous"]
    assert all(r.section in sections for r in verdict.rows)
    for row, name in zip(verdict.rows, ["house", "ambiguous"]):
        assert row.trusted is entries[name]["converged"]
        assert row.trust.startswith("converged" if row.trusted else "not converged")
    bad = sum(not r.trusted for r in verdict.rows)
    assert verdict.headline.startswith("All 2 level sets converged" if not bad else f"{bad} of 2 level sets")
    assert "ambiguous inputs found" in verdict.headline  # one ambiguous target: found or not, no count
    assert verdict.audited["source"] == report.metrics["classifier"]["card"]
    assert verdict.audited["priors"] == ["house-rocket"]
    # A converged ambiguous target's closest sample leads; an unconverged one yields to a confidently
    # called sample that the world's labels contradict (the house target's), where there is one.
    sections_shown = [h.section for h in verdict.highlights]
    assert 1 <= len(sections_shown) <= 3 and "house_rocket_ambiguous" in sections_shown
    contradicted = "house_rocket_house" in sections_shown
    lead = "house_rocket_ambiguous" if verdict.rows[1].trusted or not contradicted else "house_rocket_house"
    assert sections_shown[0] == lead, sections_shown
    doc = json.loads((write_report(report, tmp_path / "out") / "report.json").read_text())
    assert [r["key_figure"] for r in doc["verdict"]["rows"]] == [r.key_figure for r in verdict.rows]
    assert [w["section"] for w in doc["verdict"]["warnings"]] == [w["section"] for w in doc["warnings"]]


def test_gallery_ranks_distinct_samples_by_closeness_beside_prior_draws(two_target_report):
    section = next(s for s in _sections(two_target_report.sections) if s.name == "house_rocket_ambiguous")
    data = section.figures[0].data
    distance = data["distance_to_target"]
    assert distance == sorted(distance) and len(distance) <= levelset.GRID_IMAGES
    assert len(set(map(tuple, data["latents"]))) == len(data["latents"])  # distinct samples only
    for probs, d in zip(data["probs"], distance):  # the per-sample term of Delta, from the shown predictions
        assert d == pytest.approx(sum(abs(p - 0.5) for p in probs) / 2, abs=2e-4)
    assert len(data["prior_probs"]) == min(levelset.GRID_IMAGES, TINY["num_prior_samples"])
    assert not any(data["contradicts_world_label"])  # either class meets an ambiguous target


def test_a_confident_gallery_flags_the_samples_the_world_labels_otherwise(two_target_report):
    section = next(s for s in _sections(two_target_report.sections) if s.name == "house_rocket_house")
    data = section.figures[0].data
    entry = two_target_report.metrics["worlds"]["house-rocket"]["targets"]["house"]
    assert len(data["contradicts_world_label"]) == len(data["sample_indices"])
    assert sum(data["contradicts_world_label"]) <= entry["world_label_contradictions"]
    note = [p for p in section.paragraphs if p.startswith("Finding:")]
    assert bool(note) == bool(entry["world_label_contradictions"])


def test_world_labels_and_samples_csv(two_target_report, tmp_path):
    entries = two_target_report.metrics["worlds"]["house-rocket"]["targets"]
    for entry in entries.values():  # the house/rocket world is labelled: its own class posterior is known
        assert 0 <= entry["world_label_share"] <= 1
        assert 0 <= entry["world_label_contradictions"] <= entry["num_samples"]
    out = write_report(two_target_report, tmp_path / "out")
    lines = (out / "data" / "house_rocket_house_samples.csv").read_text().splitlines()
    assert lines[0] == "rank,sample,distance_to_target,w,h,t,p_rocket,p_house"
    assert len(lines) == 1 + TINY["num_samples"]
    ranks = [int(line.split(",")[0]) for line in lines[1:]]
    distances = [float(line.split(",")[2]) for line in lines[1:]]
    assert ranks == list(range(1, TINY["num_samples"] + 1)) and distances == sorted(distances)


def test_provenance_and_timings(two_target_report):
    report = two_target_report
    spec = _two_target_spec()
    prov = report.provenance
    assert prov["seed"] == 0
    assert prov["spec"] == spec.to_dict()
    assert prov["spec_sha256"] == spec_hash(spec.to_dict())
    assert prov["device"] == "cpu"
    assert {"ppl_audit", "torch", "pyro", "arviz", "numpy"} <= set(prov["versions"])
    json.dumps(prov["spec"])  # JSON-safe
    assert report.timings["total_seconds"] > 0
    assert "house-rocket/house_seconds" in report.timings


def test_report_json_carries_the_target_vector(two_target_report, tmp_path):
    out = write_report(two_target_report, tmp_path / "out")
    doc = json.loads((out / "report.json").read_text())
    entry = doc["metrics"]["worlds"]["house-rocket"]["targets"]["house"]
    assert entry["target"] == [0.001, 0.999]
    for name in entry["figures"]:
        assert (out / "figures" / f"{name}.png").is_file()
        assert (out / "figures" / f"{name}.json").is_file()
    assert "total_seconds" not in (out / "report.json").read_text()  # timings live apart


def test_same_seed_gives_byte_identical_report_json(two_target_report, tiny_classifier, tmp_path):
    again = levelset.run(_two_target_spec(), seed=0, classifier=tiny_classifier)
    other = levelset.run(_two_target_spec(), seed=1, classifier=tiny_classifier)
    a = (write_report(two_target_report, tmp_path / "a") / "report.json").read_bytes()
    b = (write_report(again, tmp_path / "b") / "report.json").read_bytes()
    c = (write_report(other, tmp_path / "c") / "report.json").read_bytes()
    assert a == b
    assert a != c
    assert_pinned("levelset-two-targets", tmp_path / "a" / "report.json")
    # Not only the recorded seed differs: the samples do.
    ta = two_target_report.metrics["worlds"]["house-rocket"]["targets"]["ambiguous"]
    tc = other.metrics["worlds"]["house-rocket"]["targets"]["ambiguous"]
    assert (ta["delta"], ta["mean_confidence"]) != (tc["delta"], tc["mean_confidence"])


def test_evaluate_measures_without_drawing_and_present_gives_runs_report(two_target_report, tiny_classifier,
                                                                        tmp_path):
    def no_drawing(*args, **kwargs):
        raise AssertionError("evaluate drew a figure")

    # evaluate must not draw: with the figure module and ArviZ's plots gone it still runs.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(levelset, "figures", None)
        mp.setattr(levelset.diagnostics, "trace_and_rank_png", no_drawing)
        results = levelset.evaluate(_two_target_spec(), seed=0, classifier=tiny_classifier)
    assert isinstance(results, levelset.LevelSetResults)
    with pytest.raises(dataclasses.FrozenInstanceError):
        results.seed = 1
    assert (results.spec, results.seed, results.device) == (_two_target_spec(), 0, "cpu")
    assert results.classifier_info["class_names"] == ["rocket", "house"]
    assert [w.name for w in results.worlds] == ["house-rocket"]
    world = results.worlds[0]
    assert world.latent_names == ("w", "h", "t")
    assert world.prior_latents.shape == (TINY["num_prior_samples"], 3)
    assert world.prior_probs.shape == (TINY["num_prior_samples"], 2)
    assert world.yield_prior_draws == FAST_YIELD_DRAWS
    assert world.prior_yield >= 0
    assert tuple(t.target for t in world.targets) == TWO_TARGETS
    for result in world.targets:
        assert result.samples.latents.shape == (TINY["num_samples"], 3)
        assert result.metrics["num_samples"] == TINY["num_samples"]
        assert 0 <= result.metrics["delta"] <= 1
        assert "ambiguous_yield_vs_prior" in result.metrics
    for record in (results, world, *world.targets):  # data only: nothing drawn is kept
        for f in dataclasses.fields(record):
            assert not isinstance(getattr(record, f.name), (Figure, Section, Table, Report)), f.name
    # Same seed, same numbers as run's report: evaluate is run's sampling.
    world_json = two_target_report.metrics["worlds"]["house-rocket"]
    assert world.prior_yield == world_json["prior_ambiguous_per_1000_evaluations"]
    for result in world.targets:
        entry = world_json["targets"][result.target.name]
        assert json.dumps({k: entry[k] for k in result.metrics}) == json.dumps(result.metrics)
    # present(evaluate(...)) is run(...): the same report.json, byte for byte.
    report = levelset.present(results)
    assert set(report.timings) == set(two_target_report.timings)
    a = (write_report(two_target_report, tmp_path / "run") / "report.json").read_bytes()
    b = (write_report(report, tmp_path / "present") / "report.json").read_bytes()
    assert a == b


def test_circle_world_runs_with_six_latents(tiny_classifier):
    spec = LevelSetAuditSpec(worlds=("house-rocket-circle",), targets=(TargetSpec("ambiguous", (0.5, 0.5)),), **TINY)
    report = levelset.run(spec, seed=0, classifier=tiny_classifier)
    entry = report.metrics["worlds"]["house-rocket-circle"]["targets"]["ambiguous"]
    assert list(entry["diagnostics"]) == ["w", "h", "t", "r", "cx", "cy"]
    assert entry["figures"][0] == "house_rocket_circle_ambiguous_samples"
    grid = next(f for f in report.iter_figures() if f.name == entry["figures"][0])
    assert grid.data["latent_names"] == ["w", "h", "t", "r", "cx", "cy"]
    assert all(len(z) == 6 for z in grid.data["latents"])


# --------------------------------------------------------------------------- audit files


def test_analyses_folder_has_audit_files():
    assert ANALYSES, "analyses/ holds no audit file"
    assert REPO / "analyses" / "house-rocket.toml" in ANALYSES


def test_house_rocket_audit_file_matches_the_demo():
    module, spec, seed = load_audit_file(REPO / "analyses" / "house-rocket.toml")
    assert module is levelset
    assert seed == 0
    assert spec.worlds == ("house-rocket", "house-rocket-circle")
    assert [t.name for t in spec.targets] == ["house", "rocket", "ambiguous", "ambiguous-tight"]
    assert len(spec.targets) == 4
    assert spec.targets[-1].concentration == 1000.0
    assert spec.targets[0].probabilities == (0.001, 0.999)
    # The README says the file holds the demo's settings.
    assert spec == LevelSetAuditSpec()


@pytest.mark.parametrize("path", ANALYSES, ids=lambda p: p.name)
def test_each_audit_file_in_analyses_smoke_runs(path, tiny_classifier, mnist_classifier, mnist_priors, tmp_path):
    """Every audit file runs at tiny sizes; MNIST files on the stand-in priors and classifier of conftest.py."""
    module, spec, seed = load_audit_file(path)
    tiny = dataclasses.replace(spec, **TINY)
    if spec.family == "mnist":
        models = dict(classifier=mnist_classifier, priors=mnist_priors)
    else:
        models = dict(classifier=tiny_classifier)
    report = module.run(tiny, seed=seed, **models)
    assert report.kind == module.KIND
    assert list(report.metrics["worlds"]) == list(spec.worlds)
    for world in spec.worlds:
        assert list(report.metrics["worlds"][world]["targets"]) == [t.name for t in spec.targets]
    assert_pinned(f"analyses-{path.stem}", write_report(report, tmp_path / "report") / "report.json")


def test_every_audit_file_has_a_smoke_test():
    others = {p.name for p in (REPO / "analyses").glob("*.toml")} - {p.name for p in ANALYSES}
    assert others == set(SMOKE_TESTED_ELSEWHERE)
    for test_file in SMOKE_TESTED_ELSEWHERE.values():
        assert (Path(__file__).parent / test_file).exists()


AUDIT = '[audit]\nkind = "levelset"\n'
TARGET = '\n[[targets]]\nname = "a"\nprobabilities = [0.5, 0.5]\n'

MALFORMED = {
    "typo-in-audit": (AUDIT + "num_particle = 10\n" + TARGET, ["unknown key", "num_particle"]),
    "unknown-kind": ('[audit]\nkind = "levelsets"\n' + TARGET, ["kind", "levelsets", "unknown"]),
    "no-kind": ("[audit]\nseed = 1\n" + TARGET, ["kind", "unknown"]),
    "missing-audit": (TARGET, ["missing table [audit]"]),
    "audit-not-a-table": ("audit = 3\n", ["missing table [audit]"]),
    "unknown-table": (AUDIT + "\n[extra]\nx = 1\n", ["unknown key", "extra"]),
    "sum-not-1": (AUDIT + '\n[[targets]]\nname = "a"\nprobabilities = [0.3, 0.3]\n', ["sum to 1"]),
    "exact-0": (AUDIT + '\n[[targets]]\nname = "a"\nprobabilities = [0.0, 1.0]\n', ["exactly 0 or 1"]),
    "wrong-length": (AUDIT + '\n[[targets]]\nname = "a"\nprobabilities = [0.2, 0.3, 0.5]\n', ["3 entries"]),
    "negative": (AUDIT + '\n[[targets]]\nname = "a"\nprobabilities = [-0.5, 1.5]\n', ["negative"]),
    "concentration-0": (AUDIT + TARGET + "concentration = 0\n", ["concentration", "0"]),
    "concentration-negative": (AUDIT + TARGET + "concentration = -1.0\n", ["concentration", "-1.0"]),
    "concentration-string": (AUDIT + TARGET + 'concentration = "x"\n', ["concentration"]),
    "typo-in-target": (AUDIT + TARGET + "concentraton = 5\n", ["unknown key", "concentraton", "#1"]),
    "target-missing-probabilities": (AUDIT + '\n[[targets]]\nname = "a"\n', ["probabilities"]),
    "targets-not-array-of-tables": (AUDIT + '\n[targets]\nname = "a"\n', ["[[targets]]"]),
    "duplicate-target-names": (AUDIT + TARGET + TARGET, ["unique"]),
    "bad-target-name": (AUDIT + '\n[[targets]]\nname = "a b"\nprobabilities = [0.5, 0.5]\n', ["target name"]),
    "particles-0": (AUDIT + "num_particles = 0\n" + TARGET, ["num_particles", "an integer in 1..1000000"]),
    "particles-float": (AUDIT + "num_particles = 10.5\n" + TARGET, ["num_particles", "an integer"]),
    "steps-string": (AUDIT + 'num_steps = "ten"\n' + TARGET, ["num_steps"]),
    "samples-over-particles": (AUDIT + "num_particles = 8\nnum_samples = 9\n" + TARGET, ["num_samples"]),
    "unknown-world": (AUDIT + 'worlds = ["mars"]\n' + TARGET, ["unknown world", "mars"]),
    "no-worlds": (AUDIT + "worlds = []\n" + TARGET, ["worlds"]),
    "no-targets": (AUDIT + "targets = []\n", ["targets"]),
    "negative-seed": (AUDIT + "seed = -1\n" + TARGET, ["seed"]),
    "bool-seed": (AUDIT + "seed = true\n" + TARGET, ["seed"]),
    "invalid-toml": (AUDIT + "num_particles = = 3\n", ["not valid TOML"]),
    "unknown-sampler-option": (AUDIT + "\n[audit.sampler_options]\nmoves = 3\n" + TARGET,
                               ["sampler_options ['moves']", "'smc'", "num_moves"]),
    "sampler-option-for-mh": (AUDIT + 'method = "mh"\n\n[audit.sampler_options]\nnum_moves = 3\n' + TARGET,
                              ["sampler_options ['num_moves']", "'mh'", "none"]),
    "sampler-option-list": (AUDIT + "\n[audit.sampler_options]\nnum_moves = [3]\n" + TARGET,
                            ["sampler_options must be a table"]),
}


@pytest.mark.parametrize("text, needles", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_audit_file_raises_audit_file_error(tmp_path, text, needles):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(AuditFileError) as info:
        load_audit_file(path)
    message = str(info.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, message


def test_binary_audit_file_is_not_valid_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_bytes(b"\xff\xfe\x00[audit]")
    with pytest.raises(AuditFileError, match="not valid TOML"):
        load_audit_file(path)


def test_nonexistent_audit_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(AuditFileError, match="does not exist") as info:
        load_audit_file(path)
    assert "nope.toml" in str(info.value)
    with pytest.raises(AuditFileError, match="does not exist"):
        load_audit_file(tmp_path)  # a folder is not an audit file


def test_audit_file_defaults_and_overrides(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text(AUDIT + 'seed = 7\nworlds = ["house-rocket-circle"]\nnum_particles = 40\n'
                    "num_samples = 20\n" + TARGET + "concentration = 1000\n")
    module, spec, seed = load_audit_file(path)
    assert (module, seed) == (levelset, 7)
    assert spec.worlds == ("house-rocket-circle",)
    assert (spec.num_particles, spec.num_samples, spec.num_steps) == (40, 20, 200)
    assert spec.targets == (TargetSpec("a", (0.5, 0.5), 1000.0),)
    assert spec.classifier == "house-rocket-cnn"


def test_audit_file_without_targets_uses_the_default_targets(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text(AUDIT)
    _, spec, seed = load_audit_file(path)
    assert seed == 0
    assert spec.targets == levelset.DEFAULT_TARGETS


# Values of the wrong type once escaped as plain exceptions (a traceback from
# `ppl-audit run`); each must be an AuditFileError.
MALFORMED_VALUES = {
    "string-probabilities": AUDIT + '\n[[targets]]\nname = "a"\nprobabilities = ["a", "b"]\n',
    "kind-is-a-list": '[audit]\nkind = ["levelset"]\n',
    "worlds-is-a-string": AUDIT + 'worlds = "house-rocket"\n' + TARGET,
    "concentration-is-a-bool": AUDIT + '\n[[targets]]\nname = "a"\nprobabilities = [0.5, 0.5]\nconcentration = true\n',
    "classifier-is-a-number": AUDIT + "classifier = 5\n" + TARGET,
    "seed-too-large": '[audit]\nkind = "levelset"\nseed = 9223372036854775807\n' + TARGET,
}


@pytest.mark.parametrize("text", MALFORMED_VALUES.values(), ids=MALFORMED_VALUES.keys())
def test_malformed_values_raise_audit_file_error(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(AuditFileError):
        load_audit_file(path)


# --------------------------------------------------------------------------- spec validation


@pytest.mark.parametrize(
    "probabilities, needle",
    [
        ((0.5,), "at least 2 entries, got 1"),
        ((-0.5, 1.5), "negative"),
        ((0.3, 0.3), "sum to 1"),
        ((0.0, 1.0), "exactly 0 or 1"),
        ((float("nan"), 0.5), "non-finite"),
    ],
)
def test_target_spec_rejects_bad_probabilities(probabilities, needle):
    with pytest.raises(InvalidInputError, match="target") as info:
        TargetSpec("t", probabilities)
    assert needle in str(info.value)


@pytest.mark.parametrize("concentration", [0, -1, float("nan"), float("inf"), "x"])
def test_target_spec_rejects_bad_concentration(concentration):
    with pytest.raises(InvalidInputError, match="concentration"):
        TargetSpec("t", (0.5, 0.5), concentration)


@pytest.mark.parametrize("name", ["", "a b", "a/b", "../x", 3])
def test_target_spec_rejects_bad_names(name):
    with pytest.raises(InvalidInputError, match="target name"):
        TargetSpec(name, (0.5, 0.5))


@pytest.mark.parametrize("probabilities", [(0.2, 0.3, 0.5), (0.1,) * 10])
def test_spec_checks_target_length_against_the_classifier(probabilities):
    target = TargetSpec("t", probabilities)  # a point of some simplex: the spec knows which
    with pytest.raises(InvalidInputError, match=rf"{len(probabilities)} entries but classifier 'house-rocket-cnn' "
                                                r"has 2 classes \['rocket', 'house'\]"):
        LevelSetAuditSpec(targets=(target,))


def test_target_spec_normalises_types():
    t = TargetSpec("ambiguous-tight_2", [0.25, 0.75], 3)
    assert t.probabilities == (0.25, 0.75)
    assert isinstance(t.concentration, float)
    TargetSpec("t", (0.5, 0.5 + 5e-7))  # within the 1e-6 tolerance


def test_spec_rejects_more_samples_than_particles():
    with pytest.raises(InvalidInputError, match=r"num_samples \(9\) cannot exceed num_particles \(8\)"):
        LevelSetAuditSpec(num_particles=8, num_samples=9)


def test_spec_rejects_unknown_world():
    with pytest.raises(InvalidInputError, match="unknown world 'mars'"):
        LevelSetAuditSpec(worlds=("house-rocket", "mars"))


def test_spec_rejects_duplicate_target_names():
    t = TargetSpec("a", (0.5, 0.5))
    with pytest.raises(InvalidInputError, match="unique"):
        LevelSetAuditSpec(targets=(t, TargetSpec("a", (0.1, 0.9))))


@pytest.mark.parametrize("field", ["num_particles", "num_steps", "num_samples", "num_prior_samples"])
@pytest.mark.parametrize("value", [0, -3, 2.0, True, "5"])
def test_spec_rejects_non_positive_integer_sizes(field, value):
    kwargs = {"num_particles": 10, "num_samples": 10} | {field: value}
    with pytest.raises(InvalidInputError, match=field):
        LevelSetAuditSpec(**kwargs)


def test_spec_rejects_empty_worlds_and_targets():
    with pytest.raises(InvalidInputError, match="worlds"):
        LevelSetAuditSpec(worlds=())
    with pytest.raises(InvalidInputError, match="targets"):
        LevelSetAuditSpec(targets=())


def test_default_spec_is_the_demo():
    spec = LevelSetAuditSpec()
    assert spec.worlds == ("house-rocket", "house-rocket-circle")
    assert [t.name for t in spec.targets] == ["house", "rocket", "ambiguous", "ambiguous-tight"]
    d = spec.to_dict()
    assert d["targets"][0] == {"name": "house", "probabilities": (0.001, 0.999), "concentration": 20.0,
                               "relaxation": "dirichlet", "sigma": None}
    assert spec_hash(d) == spec_hash(LevelSetAuditSpec().to_dict())
    assert spec_hash(d) != spec_hash(dataclasses.replace(spec, num_steps=201).to_dict())
