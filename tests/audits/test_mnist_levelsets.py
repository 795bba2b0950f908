"""The level-set audit on MNIST decoder priors: specs, the audit file, the report, the CLI.

Everything runs on the stand-in priors and classifier of ``conftest.py`` at
tiny sizes; the trained VAE, GAN and LeNet-5 are exercised by
``benchmarks/mnist_levelsets.py`` and ``ppl-audit run analyses/mnist-levelsets.toml``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from ppl_audit import cli
from ppl_audit.audits import fanout, levelset, load_audit_file
from ppl_audit.audits import worlds as registry
from ppl_audit.audits.levelset import (
    MNIST_CONCENTRATION,
    MNIST_TARGETS,
    PAPER_DELTA,
    LevelSetAuditSpec,
    TargetSpec,
    paper_delta,
)
from ppl_audit.data import DataNotFoundError
from ppl_audit.errors import AuditFileError, InvalidInputError
from ppl_audit.report import Report, write_report
from tests.report_pins import assert_pinned

REPO = Path(__file__).resolve().parents[2]
MNIST_FILE = REPO / "analyses" / "mnist-levelsets.toml"
TINY = dict(num_particles=32, num_steps=8, num_samples=24, num_prior_samples=60, device="cpu")
CUSTOM = TargetSpec("mostly-3", tuple(0.55 if k == 3 else 0.05 for k in range(10)), 50.0)
LATENTS = ["z1", "z2", "z3", "z4", "z5"]


def _spec(**kw) -> LevelSetAuditSpec:
    return LevelSetAuditSpec(title="tiny mnist", worlds=("mnist-vae", "mnist-gan"),
                             targets=(*MNIST_TARGETS, CUSTOM), **(TINY | kw))


@pytest.fixture(scope="module")
def mnist_report(mnist_classifier, mnist_priors) -> Report:
    return levelset.run(_spec(), seed=0, classifier=mnist_classifier, priors=mnist_priors)


def _sections(sections):
    for section in sections:
        yield section
        yield from _sections(section.subsections)


# --------------------------------------------------------------------------- specs and targets


def test_mnist_targets_are_the_papers():
    by_name = {t.name: t for t in MNIST_TARGETS}
    assert list(by_name) == ["ambiguous", "1-vs-7", "8-vs-9"]
    assert by_name["ambiguous"].probabilities == (0.1,) * 10
    for name, (a, b) in {"1-vs-7": (1, 7), "8-vs-9": (8, 9)}.items():
        p = by_name[name].probabilities
        assert (p[a], p[b]) == (0.46, 0.46)
        assert [v for k, v in enumerate(p) if k not in (a, b)] == [0.01] * 8
        assert math.isclose(sum(p), 1.0)
    assert [t.concentration for t in MNIST_TARGETS] == [MNIST_CONCENTRATION, 100.0, 100.0]
    assert min(t.concentration for t in MNIST_TARGETS) > levelset.PAPER_CONCENTRATION


def test_paper_values_only_for_the_papers_targets():
    assert PAPER_DELTA == {"mnist-vae": {"ambiguous": 0.0183, "1-vs-7": 0.0622, "8-vs-9": 0.0766},
                           "mnist-gan": {"ambiguous": 0.0593, "1-vs-7": 0.0792, "8-vs-9": 0.0531}}
    assert paper_delta("mnist-gan", MNIST_TARGETS[2]) == 0.0531
    assert paper_delta("mnist-gan", CUSTOM) is None
    # Same name, another vector: no borrowed number.
    assert paper_delta("mnist-vae", TargetSpec("1-vs-7", (0.01,) * 8 + (0.46, 0.46))) is None
    # The concentration does not matter: the paper's number is for its target.
    assert paper_delta("mnist-vae", dataclasses.replace(MNIST_TARGETS[0], concentration=10.0)) == 0.0183
    assert paper_delta("house-rocket", TargetSpec("ambiguous", (0.5, 0.5))) is None


def test_mnist_worlds_default_to_lenet_and_the_papers_targets():
    spec = LevelSetAuditSpec(worlds=("mnist-gan",))
    assert spec.family == "mnist"
    assert spec.classifier == "mnist-lenet5"
    assert spec.targets == MNIST_TARGETS
    assert spec.class_names == tuple("0123456789")
    assert "MNIST" in spec.title
    spec = LevelSetAuditSpec(classifier="mnist-lenet5")
    assert spec.worlds == ("mnist-vae", "mnist-gan")
    # House/rocket defaults are unchanged.
    assert LevelSetAuditSpec().worlds == ("house-rocket", "house-rocket-circle")
    assert LevelSetAuditSpec().classifier == "house-rocket-cnn"


@pytest.mark.parametrize("kwargs, needles", [
    (dict(worlds=("house-rocket", "mnist-vae")), ["mix families"]),
    (dict(worlds=("mnist-vae",), classifier="house-rocket-cnn"), ["mnist-vae", "mnist-lenet5", "house-rocket-cnn"]),
    (dict(worlds=("house-rocket",), classifier="mnist-lenet5"), ["house-rocket", "house-rocket-cnn"]),
    (dict(worlds=("mnist-vae",), targets=(TargetSpec("a", (0.5, 0.5)),)),
     ["2 entries", "'mnist-lenet5' has 10 classes"]),
    (dict(worlds=("mnist-vea",)), ["unknown world 'mnist-vea'", "mnist-gan"]),
    (dict(worlds=("mnist-vae",), data_dir=3), ["data_dir"]),
])
def test_mnist_spec_errors_name_the_problem(kwargs, needles):
    with pytest.raises(InvalidInputError) as info:
        LevelSetAuditSpec(**kwargs)
    for needle in needles:
        assert needle in str(info.value), str(info.value)


def test_world_registry():
    assert registry.world_family("mnist-vae") == registry.MNIST
    assert registry.world_family("house-rocket-circle") == registry.HOUSE_ROCKET
    assert registry.classifier_family("mnist-lenet5") == registry.MNIST
    assert registry.classifier_family(str(REPO / "models" / "mnist-lenet5.toml")) == registry.MNIST  # by its kind
    assert registry.classifier_family(str(REPO / "models" / "house-rocket-cnn.toml")) == registry.HOUSE_ROCKET
    # No silent fallback: an unreadable card, or a card of a kind no family audits, is an error.
    with pytest.raises(AuditFileError, match="no model card named 'no-such-card'"):
        registry.classifier_family("no-such-card")
    with pytest.raises(InvalidInputError, match="'mnist-gan' is a 'gan' model card"):
        registry.classifier_family("mnist-gan")
    assert registry.DECODER_PRIORS == ("mnist-vae", "mnist-gan")
    with pytest.raises(InvalidInputError, match="unknown world"):
        registry.world_family("mars")


# --------------------------------------------------------------------------- the audit file


def test_mnist_audit_file_runs_the_papers_experiment():
    module, spec, seed = load_audit_file(MNIST_FILE)
    assert module is levelset
    assert seed == 0
    assert spec.worlds == ("mnist-vae", "mnist-gan")
    assert spec.classifier == "mnist-lenet5"
    assert spec.targets == MNIST_TARGETS  # the file spells out the audit's defaults
    assert spec.method == "smc"
    assert spec.num_particles == 4096 and spec.num_samples <= spec.num_particles
    assert spec.data_dir is None  # given on the command line (--data-dir) or by $PPL_AUDIT_DATA


def test_audit_file_may_name_a_data_dir(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('[audit]\nkind = "levelset"\nworlds = ["mnist-vae"]\ndata_dir = "../shared/data"\n')
    _, spec, _ = load_audit_file(path)
    assert spec.data_dir == "../shared/data"
    assert spec.targets == MNIST_TARGETS


def test_sampler_options_reach_the_sampler(tmp_path, mnist_classifier, mnist_priors, monkeypatch):
    path = tmp_path / "a.toml"
    path.write_text('[audit]\nkind = "levelset"\nworlds = ["mnist-gan"]\nnum_particles = 32\nnum_samples = 16\n'
                    'num_prior_samples = 20\ndevice = "cpu"\n\n[audit.sampler_options]\nnum_final_draws = 5\n'
                    "target_ess_fraction = 0.6\n\n[[targets]]\nname = \"1-vs-7\"\n"
                    "probabilities = [0.01, 0.46, 0.01, 0.01, 0.01, 0.01, 0.01, 0.46, 0.01, 0.01]\n")
    _, spec, seed = load_audit_file(path)
    assert spec.sampler_options == {"num_final_draws": 5, "target_ess_fraction": 0.6}
    seen = []
    original = fanout.sample_level_set
    monkeypatch.setattr(fanout, "sample_level_set", lambda *a, **kw: seen.append(kw["options"]) or original(*a, **kw))
    report = levelset.run(spec, seed=seed, classifier=mnist_classifier, priors=mnist_priors)
    assert seen == [{"num_final_draws": 5, "target_ess_fraction": 0.6}]
    assert "options: num_final_draws = 5, target_ess_fraction = 0.6" in report.summary[0]
    assert report.provenance["spec"]["sampler_options"] == {"num_final_draws": 5, "target_ess_fraction": 0.6}


def test_mnist_audit_file_with_wrong_target_length_is_an_audit_file_error(tmp_path):
    from ppl_audit.errors import AuditFileError

    path = tmp_path / "a.toml"
    path.write_text('[audit]\nkind = "levelset"\nworlds = ["mnist-vae"]\n\n[[targets]]\nname = "a"\n'
                    "probabilities = [0.5, 0.5]\n")
    with pytest.raises(AuditFileError, match="2 entries but classifier 'mnist-lenet5' has 10 classes"):
        load_audit_file(path)


# --------------------------------------------------------------------------- the report


def test_table_1_layout_and_cells(mnist_report):
    report = mnist_report
    assert report.sections[0].name == "table_1"
    wide = report.sections[0].tables[0]
    assert wide.columns[:7] == ["prior", "ambiguous: delta %", "ambiguous: paper %", "1-vs-7: delta %",
                                "1-vs-7: paper %", "8-vs-9: delta %", "8-vs-9: paper %"]
    assert [row[0] for row in wide.rows] == ["VAE", "GAN"]
    assert wide.rows[0][2::2] == [1.83, 6.22, 7.66, None]  # the paper's values; none for the custom target
    assert wide.rows[1][2::2] == [5.93, 7.92, 5.31, None]
    cells = report.metrics["table_1"]["cells"]
    assert report.metrics["table_1"]["cells_compared"] == 6
    for world in ("mnist-vae", "mnist-gan"):
        assert list(cells[world]) == ["ambiguous", "1-vs-7", "8-vs-9", "mostly-3"]
        for name, cell in cells[world].items():
            entry = report.metrics["worlds"][world]["targets"][name]
            assert cell["delta"] == entry["delta"]
            assert 1 <= cell["num_distinct"] <= cell["num_samples"] == TINY["num_samples"]
            if name == "mostly-3":
                assert cell["paper_delta"] is None and cell["delta_at_or_below_paper"] is None
            else:
                assert cell["paper_delta"] == PAPER_DELTA[world][name]
                assert cell["delta_at_or_below_paper"] == (cell["delta"] <= cell["paper_delta"])
            # Percent in the table, fractions in the JSON.
            row = wide.rows[["mnist-vae", "mnist-gan"].index(world)]
            col = wide.columns.index(f"{name}: delta %")
            assert row[col] == round(100 * cell["delta"], 2)
    text = " ".join(report.sections[0].paragraphs + report.summary)
    assert f"{MNIST_CONCENTRATION:g}" in text and "concentration 10" in text


def test_mnist_entries_figures_and_diagnostics(mnist_report, mnist_classifier):
    report = mnist_report
    assert report.metrics["classifier"]["class_names"] == list("0123456789")
    by_section = {s.name: s for s in _sections(report.sections)}
    for world in ("mnist-vae", "mnist-gan"):
        world_json = report.metrics["worlds"][world]
        assert "prior_ambiguous_per_1000_evaluations" not in world_json  # a house/rocket notion
        assert world_json["prior"]["latent_dim"] == 5
        assert world_json["prior"]["image_shape"] == [1, 28, 28]
        for name, entry in world_json["targets"].items():
            assert len(entry["target"]) == 10
            assert list(entry["diagnostics"]) == LATENTS
            assert {"delta", "paper_delta", "num_distinct", "converged", "nested_rhat_max", "ess_bulk_min"} <= set(entry)
            assert "ambiguous_yield_vs_prior" not in entry
            assert [f.rsplit("_", 1)[1] for f in entry["figures"]] == [
                "samples", "embedding", "profile", "acceptance", "tempering", "trace", "rank"]
            section = by_section[f"{world}_{name}".replace("-", "_")]
            assert [f.name for f in section.figures] == entry["figures"]
            assert any(p.startswith("Sampler 'smc': ") and "onverged" in p for p in section.paragraphs)
            grid, embedding, profile = section.figures[:3]
            assert len(grid.data["latents"][0]) == 5 and len(grid.data["probs"][0]) == 10
            assert embedding.data["class_names"] == list("0123456789")
            assert len(embedding.data["sample_embedding"]) == TINY["num_samples"]
            assert len(embedding.data["prior_embedding"]) == TINY["num_prior_samples"]
            assert all(0 <= c < 10 for c in embedding.data["prior_class"])
            assert profile.data["target"] == entry["target"]
        summary = by_section[world.replace("-", "_")].tables[-1]
        assert [r[0] for r in summary.rows] == ["ambiguous", "1-vs-7", "8-vs-9", "mostly-3"]


def test_mnist_report_is_deterministic_and_writes(mnist_report, mnist_classifier, mnist_priors, tmp_path):
    again = levelset.run(_spec(), seed=0, classifier=mnist_classifier, priors=mnist_priors)
    a = (write_report(mnist_report, tmp_path / "a") / "report.json").read_bytes()
    b = (write_report(again, tmp_path / "b") / "report.json").read_bytes()
    assert a == b
    assert_pinned("levelset-mnist-stand-ins", tmp_path / "a" / "report.json")
    doc = json.loads(a)
    assert doc["metrics"]["worlds"]["mnist-gan"]["targets"]["1-vs-7"]["target"][7] == 0.46
    for f in doc["metrics"]["worlds"]["mnist-vae"]["targets"]["ambiguous"]["figures"]:
        assert (tmp_path / "a" / "figures" / f"{f}.png").is_file()


def test_collapsed_particles_and_high_delta_are_warned(mnist_classifier, mnist_priors, monkeypatch):
    # A concentration of 1 makes a loose level set: Delta far above the paper's 1.83%.
    loose = TargetSpec("ambiguous", (0.1,) * 10, 1.0)
    spec = LevelSetAuditSpec(worlds=("mnist-vae",), targets=(loose,), **TINY)
    report = levelset.run(spec, seed=0, classifier=mnist_classifier, priors=mnist_priors)
    entry = report.metrics["worlds"]["mnist-vae"]["targets"]["ambiguous"]
    warnings = [w for _, w in report.iter_warnings()]
    if entry["delta"] > 0.0183:
        assert any("above the paper's 1.83%" in w for w in warnings)
    # Every kept sample the same point: the distinct-samples warning fires.
    monkeypatch.setattr(levelset, "MIN_DISTINCT_FRACTION", 1.01)
    report = levelset.run(spec, seed=0, classifier=mnist_classifier, priors=mnist_priors)
    assert any("distinct of" in w and "collapsed" in w for _, w in report.iter_warnings())


def test_run_loads_models_with_the_data_dir(mnist_classifier, mnist_priors, monkeypatch):
    calls = []

    def load_world(name, **kw):
        calls.append(("world", name, kw["data_dir"], kw["cache"]))
        return mnist_priors[name]

    def load_classifier(name, **kw):
        calls.append(("classifier", name, kw["data_dir"], kw["cache"]))
        return mnist_classifier

    monkeypatch.setattr(registry, "load_world", load_world)
    monkeypatch.setattr(registry, "load_classifier", load_classifier)
    spec = LevelSetAuditSpec(worlds=("mnist-gan",), targets=(MNIST_TARGETS[1],), data_dir="from-spec", **TINY)
    levelset.run(spec, seed=0, cache="C")
    assert calls == [("classifier", "mnist-lenet5", "from-spec", "C"), ("world", "mnist-gan", "from-spec", "C")]
    calls.clear()
    levelset.run(spec, seed=0, cache="C", data_dir="given")  # the command line's --data-dir wins
    assert {c[2] for c in calls} == {"given"}


def test_classifier_with_other_classes_is_refused(tiny_classifier, mnist_priors):
    spec = LevelSetAuditSpec(worlds=("mnist-vae",), targets=(MNIST_TARGETS[0],), **TINY)
    with pytest.raises(InvalidInputError, match=r"classes \['rocket', 'house'\].*needs \['0'"):
        levelset.run(spec, seed=0, classifier=tiny_classifier, priors=mnist_priors)


# --------------------------------------------------------------------------- the command line


@pytest.fixture
def stand_in_models(mnist_classifier, mnist_priors, monkeypatch):
    """The registry's loaders return the stand-ins; records the data_dir each load saw."""
    seen = []
    monkeypatch.setattr(registry, "load_world",
                        lambda name, **kw: seen.append(kw["data_dir"]) or mnist_priors[name])
    monkeypatch.setattr(registry, "load_classifier",
                        lambda name, **kw: seen.append(kw["data_dir"]) or mnist_classifier)
    return seen


def _cli(argv, capsys):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return status, out, err


def test_cli_levelset_on_an_mnist_prior(tmp_path, stand_in_models, capsys):
    target = ",".join(["0.01"] * 4 + ["0.46", "0.46"] + ["0.01"] * 4)
    out = tmp_path / "OUT"
    status, _, err = _cli(["levelset", "--world", "mnist-gan", "--target", target, "--name", "4-vs-5",
                           "--particles", "32", "--samples", "16", "--device", "cpu", "--data-dir", "D",
                           "--out", out, "--quiet"], capsys)
    assert status == 0, err
    doc = json.loads((out / "report.json").read_text())
    spec = doc["provenance"]["spec"]
    assert spec["classifier"] == "mnist-lenet5"
    assert spec["targets"][0]["concentration"] == MNIST_CONCENTRATION  # the MNIST default
    assert spec["data_dir"] is None  # --data-dir says where data is, not what the audit is
    entry = doc["metrics"]["worlds"]["mnist-gan"]["targets"]["4-vs-5"]
    assert entry["target"][4] == 0.46 and entry["paper_delta"] is None
    assert set(stand_in_models) == {"D"}


def test_cli_levelset_concentration_and_house_rocket_default(tmp_path, stand_in_models, capsys):
    out = tmp_path / "OUT"
    status, _, err = _cli(["levelset", "--world", "mnist-vae", "--target", ",".join(["0.1"] * 10),
                           "--concentration", "30", "--particles", "32", "--device", "cpu", "--out", out,
                           "--quiet"], capsys)
    assert status == 0, err
    doc = json.loads((out / "report.json").read_text())
    assert doc["provenance"]["spec"]["targets"][0]["concentration"] == 30.0
    assert levelset.DEFAULT_CONCENTRATION["house-rocket"] == 10.0  # house/rocket's --concentration default


@pytest.mark.parametrize("argv, needles", [
    (["--world", "mnist-vae", "--target", "0.5,0.5"], ["2 entries", "10 classes"]),
    (["--world", "mnist-vae", "--target", "0.5,0.5", "--classifier", "house-rocket-cnn"], ["mnist-lenet5"]),
    (["--world", "mnist-vea", "--target", "0.5,0.5"], ["unknown world 'mnist-vea'"]),
])
def test_cli_levelset_user_errors(argv, needles, tmp_path, stand_in_models, capsys):
    status, _, err = _cli(["levelset", *argv, "--out", tmp_path / "OUT", "--quiet"], capsys)
    assert status == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ppl-audit: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not (tmp_path / "OUT").exists()


def test_cli_run_passes_data_dir(tmp_path, stand_in_models, capsys):
    text = MNIST_FILE.read_text()
    for key, value in (("num_particles", 32), ("num_samples", 16), ("num_prior_samples", 40)):
        text = "\n".join(f"{key} = {value}" if line.startswith(f"{key} ") else line for line in text.splitlines())
    path = tmp_path / "mnist.toml"
    path.write_text(text + "\n")
    out = tmp_path / "OUT"
    status, _, err = _cli(["run", path, "--data-dir", "../shared/data", "--device", "cpu", "--out", out, "--quiet"],
                          capsys)
    assert status == 0, err
    assert set(stand_in_models) == {"../shared/data"}
    doc = json.loads((out / "report.json").read_text())
    assert set(doc["metrics"]["table_1"]["cells"]) == {"mnist-vae", "mnist-gan"}


def test_cli_run_without_data_is_one_user_error(tmp_path, monkeypatch, capsys):
    def missing(name, **kw):
        raise DataNotFoundError("no data folder given: pass --data-dir DIR or set PPL_AUDIT_DATA=DIR")

    monkeypatch.setattr(registry, "load_classifier", missing)
    status, _, err = _cli(["run", MNIST_FILE, "--device", "cpu", "--out", tmp_path / "OUT", "--quiet"], capsys)
    assert status == 2
    assert err.startswith("ppl-audit: error: no data folder given")
    assert not (tmp_path / "OUT").exists()
