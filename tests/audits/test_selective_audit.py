"""The selective-classification audit: hand-made curves, the audit file, a tiny-model run, CLI errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from ppl_audit import cli
from ppl_audit.audits import load_audit_file
from ppl_audit.audits import selective
from ppl_audit.audits.selective import MethodOutcome, SelectiveAuditSpec, compare_curves, risk_at, summarise
from ppl_audit.data import load_dataset
from ppl_audit.errors import AuditFileError, InvalidInputError
from ppl_audit.generative.class_generators import ClassGAN
from ppl_audit.generative.vae_ensemble import VAEEnsemble
from ppl_audit.report import Figure, Report, Section, write_report
from tests.report_pins import assert_pinned

# The latent search records its seconds among the report's metrics and in a table; the pin leaves them out.
LATENT_SEARCH_TIMINGS = ("seconds", "generator_seconds", "generator_forward", "generator_backward", "monte_carlo",
                         "in generator passes (s)", "in generator passes (%)", "generations per second")

REPO = Path(__file__).resolve().parents[2]
SELECTIVE_FILE = REPO / "analyses" / "mnist-selective.toml"

pytestmark = pytest.mark.usefixtures("one_thread")


def test_summary_of_a_hand_made_case():
    # 4 MNIST digits (3 right) and 2 OoD images; one OoD image shares the top confidence
    outcome = MethodOutcome("toy", torch.tensor([0, 1, 2, 9, 5, 5]), torch.tensor([1.0, 0.9, 0.8, 0.2, 1.0, 0.1]))
    s = summarise(outcome, torch.tensor([0, 1, 2, 3]), 4)
    assert s["mnist_accuracy"] == 0.75
    assert s["inputs_at_max_confidence"] == 2 and s["ood_at_max_confidence"] == 1
    # thresholds: {1.0}: 1 of 2 wrong; +0.9: 1/3; +0.8: 1/4; +0.2: 2/5; +0.1: 3/6
    assert s["curve"]["coverage"] == pytest.approx([2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])
    assert s["curve"]["risk"] == pytest.approx([0.5, 1 / 3, 0.25, 0.4, 0.5])
    assert s["min_risk"] == pytest.approx(0.25) and s["coverage_at_min_risk"] == pytest.approx(4 / 6)


def test_summary_refuses_mismatched_inputs():
    with pytest.raises(InvalidInputError, match="toy"):
        summarise(MethodOutcome("toy", torch.zeros(3, dtype=torch.long), torch.zeros(2)), torch.zeros(2), 2)


def test_curve_comparison_on_a_grid():
    cnn = {"coverage": [0.6, 1.0], "risk": [0.1, 0.2]}  # a CNN whose first threshold keeps 60%
    better = {"coverage": [0.2, 0.6, 1.0], "risk": [0.0, 0.05, 0.2]}
    worse_late = {"coverage": [0.2, 1.0], "risk": [0.0, 0.25]}
    assert risk_at(cnn, 0.2) == 0.1  # below its first point the CNN is charged that point's risk
    assert compare_curves(better, cnn, grid=(0.2, 0.6, 1.0))["at_or_below_everywhere"]
    assert compare_curves(worse_late, cnn, grid=(0.2, 0.6, 1.0))["above"] == [0.6, 1.0]


@pytest.mark.parametrize("kwargs,message", [
    ({"ood_sets": ("mnist",)}, "ood_sets must be distinct names"),
    ({"num_out": 0}, "num_out must be a positive integer"),
    ({"num_in": True}, "num_in must be a positive integer"),
    ({"num_in": 0}, "num_in must be a positive integer"),
    ({"sdim_percentile": 5}, "sdim_percentile must be 1 or 2"),
    ({"steps": -2}, "steps must be an integer >= 0"),
    ({"cnn": ""}, "cnn must name"),
])
def test_spec_errors_name_the_problem(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        SelectiveAuditSpec(**kwargs)


def test_each_kind_of_generator_may_change_the_shared_search():
    spec = SelectiveAuditSpec(draws=50, steps=7, class_gan_search={"refine_restarts": 2, "steps": 9})
    gan, vae = spec.search_config("class_gan"), spec.search_config("class_vae")
    assert (gan.draws, gan.steps, gan.refine_restarts) == (50, 9, 2)
    assert (vae.draws, vae.steps, vae.refine_restarts) == (50, 7, 0)
    assert spec.search_config() == vae


@pytest.mark.parametrize("changes,message", [
    ({"chunk": 4}, r"class_gan_search: unknown setting\(s\) \['chunk'\]"),
    ({"refine_ratio": 0.5}, "class_gan_search: refine_ratio"),
    ({"refine_draws": 0}, "class_gan_search: refine_draws must be a positive integer"),
])
def test_bad_search_changes_name_the_table_and_the_setting(changes, message):
    with pytest.raises(InvalidInputError, match=message):
        SelectiveAuditSpec(class_gan_search=changes)


def test_search_changes_come_from_a_subtable_of_the_audit_file(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('[audit]\nkind = "selective"\ndraws = 40\n[audit.class_vae_search]\nsteps = 0\n')
    _, spec, _ = load_audit_file(path)
    assert spec.search_config("class_vae").steps == 0 and spec.search_config("class_gan").steps == 100
    path.write_text('[audit]\nkind = "selective"\n[audit.class_gan_search]\nrefine_steps = -1\n')
    with pytest.raises(AuditFileError, match="a.toml.*class_gan_search: refine_steps must be an integer >= 0"):
        load_audit_file(path)


def test_audit_file_spells_out_the_papers_test_set():
    module, spec, seed = load_audit_file(SELECTIVE_FILE)
    assert module is selective and seed == 0
    assert spec.ood_sets == ("omniglot", "notmnist") and spec.class_vae == "mnist-class-vae"
    # the refinement chosen on held-out digits (benchmarks/class_gan_holdout.py --headroom), for the GANs only
    assert spec.search_config("class_gan").refine_restarts == 2 and spec.search_config("class_vae").refine_restarts == 0


def test_audit_file_smoke_run_with_tiny_models(mnist_fixture_dir, mnist_classifier):
    """The shipped file's spec runs end to end when its models and images are swapped for tiny ones."""
    from ppl_audit.classifiers.sdim import SDIM, SDIMClassifier, fit_thresholds

    _, spec, seed = load_audit_file(SELECTIVE_FILE)
    spec = dataclasses.replace(spec, draws=8, steps=2, device="cpu")
    test = load_dataset("mnist", "test", data_dir=mnist_fixture_dir)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        sdim = SDIM(channels=(4, 8, 8), representation_dim=6, mi_units=4).eval()
    fit_thresholds(sdim, test.images, test.labels)
    models = {"cnn": mnist_classifier, "class_vae": VAEEnsemble(10, 2, (16,), seed=0).eval(),
              "class_gan": ClassGAN(10, 3, (8,), (8,), seed=0).eval(), "sdim": SDIMClassifier(sdim),
              "train": (test.images, test.labels)}
    images = {"mnist": (test.images[:20], test.labels[:20]), "omniglot": torch.rand(6, 1, 28, 28),
              "notmnist": torch.rand(6, 1, 28, 28)}
    report = selective.run(spec, seed=seed, models=models, images=images)
    assert len(report.metrics["methods"]) == 7 and report.metrics["num_out"] == {"omniglot": 6, "notmnist": 6}
    search = report.metrics["latent_search"]
    assert "refined_images" not in search["VAE"] and 0 <= search["GAN"]["refined_images"] <= 32


def test_bad_audit_file_is_an_audit_file_error(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('[audit]\nkind = "selective"\nsteps = "many"\n')
    with pytest.raises(AuditFileError, match="a.toml"):
        load_audit_file(path)


def test_tiny_run_is_seeded_and_reports_every_method(mnist_fixture_dir, mnist_classifier, tmp_path):
    test = load_dataset("mnist", "test", data_dir=mnist_fixture_dir)
    models = {"cnn": mnist_classifier, "class_vae": VAEEnsemble(10, 2, (16,), seed=0).eval(),
              "class_gan": ClassGAN(10, 3, (8,), (8,), seed=0).eval(), "train": (test.images, test.labels)}
    omniglot = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(7)) ** 4  # seeded: report pinned
    images = {"mnist": (test.images[:40], test.labels[:40]), "omniglot": omniglot}
    spec = SelectiveAuditSpec(sdim="", ood_sets=("omniglot",), draws=16, steps=3, explanations=4, device="cpu")
    first = selective.run(spec, seed=3, models=models, images=dict(images))
    second = selective.run(spec, seed=3, models=models, images=dict(images))
    methods = first.metrics["methods"]
    assert set(methods) == {"CNN", "VAE synthesis", "hybrid (VAE confidence, CNN label)", "GAN synthesis",
                            "hybrid (GAN confidence, CNN label)", "1-NN"}
    assert methods == second.metrics["methods"]
    assert methods["1-NN"]["mnist_accuracy"] == 1.0  # the 40 digits are in its training set
    assert first.metrics["num_out"] == {"omniglot": 10}
    out = write_report(first, tmp_path / "report")
    saved = json.loads((out / "report.json").read_text())
    assert saved["kind"] == "selective"
    assert_pinned("selective-tiny", out / "report.json", timing_keys=LATENT_SEARCH_TIMINGS)
    assert {f["name"] for s in saved["sections"] for f in s["figures"]} >= {
        "risk_coverage", "explanation_class_vae", "explanation_class_gan"}


def _rendered_objects(value) -> list:
    """Every Figure, Section or Report inside ``value`` (dataclasses, dicts, lists and tuples walked)."""
    if isinstance(value, (Figure, Section, Report)):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = [getattr(value, f.name) for f in dataclasses.fields(value)]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [found for item in value for found in _rendered_objects(item)]
    return []


def test_evaluate_measures_without_rendering_and_present_renders_what_run_does(
        mnist_fixture_dir, mnist_classifier, tmp_path, monkeypatch):
    from ppl_audit.report import figures
    from tests.report_pins import _without

    test = load_dataset("mnist", "test", data_dir=mnist_fixture_dir)
    models = {"cnn": mnist_classifier, "class_vae": VAEEnsemble(10, 2, (16,), seed=0).eval(),
              "class_gan": ClassGAN(10, 3, (8,), (8,), seed=0).eval(), "train": (test.images, test.labels)}
    omniglot = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(7)) ** 4
    images = {"mnist": (test.images[:40], test.labels[:40]), "omniglot": omniglot}
    spec = SelectiveAuditSpec(sdim="", ood_sets=("omniglot",), draws=16, steps=3, explanations=4, device="cpu")

    def no_rendering(*args, **kwargs):
        raise AssertionError("evaluate rendered a figure")

    with monkeypatch.context() as patch:
        patch.setattr(figures, "xy_plot", no_rendering)
        patch.setattr(figures, "explanation_figure", no_rendering)
        results = selective.evaluate(spec, seed=3, models=models, images=dict(images))
    assert isinstance(results, selective.SelectiveResults) and _rendered_objects(results) == []
    with pytest.raises(dataclasses.FrozenInstanceError):
        results.seed = 4
    assert (results.seed, results.device, results.num_in, results.num_out) == (3, "cpu", 40, {"omniglot": 10})
    assert [o.name for o in results.outcomes] == [
        "CNN", "VAE synthesis", "hybrid (VAE confidence, CNN label)", "GAN synthesis",
        "hybrid (GAN confidence, CNN label)", "1-NN"]
    assert all(o.labels.shape == o.confidence.shape == (50,) for o in results.outcomes)
    by_name = {o.name: o for o in results.outcomes}
    for title in ("VAE", "GAN"):  # a hybrid: the CNN's labels, its synthesis classifier's confidence
        hybrid = by_name[f"hybrid ({title} confidence, CNN label)"]
        assert torch.equal(hybrid.labels, by_name["CNN"].labels)
        assert torch.equal(hybrid.confidence, by_name[f"{title} synthesis"].confidence)
    truth = test.labels[:40]
    cnn_accuracy = float((mnist_classifier.probs(test.images[:40]).argmax(1) == truth).double().mean())
    assert results.summaries["CNN"]["mnist_accuracy"] == pytest.approx(cnn_accuracy)
    assert results.summaries["1-NN"]["mnist_accuracy"] == 1.0  # the 40 digits are in its training set
    for outcome in results.outcomes:
        assert results.summaries[outcome.name] == summarise(outcome, truth, 40)
    cnn_curve = results.summaries["CNN"]["curve"]
    assert set(results.hybrids) == {"hybrid (VAE confidence, CNN label)", "hybrid (GAN confidence, CNN label)"}
    for name, comparison in results.hybrids.items():
        assert comparison["baseline"] == [risk_at(cnn_curve, c) for c in selective.COVERAGE_GRID]
        assert comparison["aurc_lower_than_cnn"] == (results.summaries[name]["aurc"]
                                                     < results.summaries["CNN"]["aurc"])
    assert list(results.searches) == ["class_vae", "class_gan"] and results.sdim is None
    for search in results.searches.values():
        assert (search.num_images, search.num_classes, search.config.draws, search.config.seed) == (50, 10, 16, 3)
        rows = search.explanation  # 4 rows: 2 MNIST digits, then 2 out-of-distribution images
        assert rows.generations.shape == (4, 10, 1, 28, 28) and rows.distances.shape == (4, 10)
        assert [label is None for label in rows.true_labels] == [False, False, True, True]
    assert list(results.timings) == ["models_seconds", "cnn_seconds", "class_vae_search_seconds",
                                     "class_gan_search_seconds", "nearest_neighbour_seconds"]

    # present renders; it leaves the results as they were, and gives the report run gives
    presented = write_report(selective.present(results), tmp_path / "presented")
    again = write_report(selective.present(results), tmp_path / "again")
    assert (presented / "report.json").read_bytes() == (again / "report.json").read_bytes()
    ran = write_report(selective.run(spec, seed=3, models=models, images=dict(images)), tmp_path / "ran")
    assert (_without(json.loads((presented / "report.json").read_text()), LATENT_SEARCH_TIMINGS)
            == _without(json.loads((ran / "report.json").read_text()), LATENT_SEARCH_TIMINGS))
    assert_pinned("selective-tiny", presented / "report.json", timing_keys=LATENT_SEARCH_TIMINGS)


def test_refinement_for_one_kind_of_generator_reaches_the_report(mnist_fixture_dir, mnist_classifier):
    test = load_dataset("mnist", "test", data_dir=mnist_fixture_dir)
    models = {"cnn": mnist_classifier, "class_vae": VAEEnsemble(10, 2, (16,), seed=0).eval(),
              "class_gan": ClassGAN(10, 3, (8,), (8,), seed=0).eval()}
    images = {"mnist": (test.images[:12], test.labels[:12]), "omniglot": torch.rand(4, 1, 28, 28)}
    base = SelectiveAuditSpec(sdim="", nearest_neighbour=False, ood_sets=("omniglot",), draws=8, steps=2,
                              explanations=2, device="cpu")
    # a ratio no pair of distances can exceed contests every image
    refine = {"refine_restarts": 1, "refine_ratio": 1e9, "refine_draws": 64, "refine_steps": 5}
    plain = selective.run(base, models=models, images=dict(images))
    refined = selective.run(dataclasses.replace(base, class_gan_search=refine), models=models, images=dict(images))
    assert refined.metrics["latent_search"]["GAN"]["refined_images"] == 16
    assert "refined_images" not in refined.metrics["latent_search"]["VAE"]
    # the VAEs' search is untouched by the GANs' settings
    assert refined.metrics["methods"]["VAE synthesis"] == plain.metrics["methods"]["VAE synthesis"]
    rows = {r[0]: r for s in refined.sections for t in s.tables if t.name == "latent_search" for r in t.rows}
    assert rows["GAN"][9].startswith("16 contested") and rows["VAE"][9] == "off"


def test_tiny_run_with_sdim_adds_its_tables_and_a_risk_coverage_row(mnist_fixture_dir, mnist_classifier, tmp_path):
    from ppl_audit.classifiers.sdim import SDIM, SDIMClassifier, fit_thresholds

    test = load_dataset("mnist", "test", data_dir=mnist_fixture_dir)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = SDIM(channels=(4, 8, 8), representation_dim=6, mi_units=4).eval()
    fit_thresholds(module, test.images, test.labels)
    models = {"cnn": mnist_classifier, "sdim": SDIMClassifier(module)}
    spec = SelectiveAuditSpec(class_vae="", class_gan="", nearest_neighbour=False, ood_sets=("notmnist",),
                              device="cpu")
    report = selective.run(spec, models=models, images={"mnist": (test.images[:30], test.labels[:30]),
                                                        "notmnist": torch.rand(8, 1, 28, 28)})
    assert set(report.metrics["methods"]) == {"CNN", "SDIM"}
    rows = report.metrics["sdim"]["table_2"]
    assert [r["percentile"] for r in rows] == [1, 2]
    assert 0 <= report.metrics["sdim"]["table_3"]["notmnist"]["percentile_1"] <= 1
    assert {t.name for s in report.sections for t in s.tables} >= {"sdim_table_2", "sdim_table_3"}
    out = write_report(report, tmp_path / "report")  # every metric must serialise
    assert json.loads((out / "report.json").read_text())["metrics"]["sdim"]["table_2"][0]["percentile"] == 1


def test_cli_refuses_a_bad_selective_audit_file_with_exit_status_2(tmp_path, capsys):
    path = tmp_path / "a.toml"
    path.write_text('[audit]\nkind = "selective"\nood_sets = ["cifar"]\n')
    status = cli.main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    assert status == 2
    assert "ood_sets" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _export(tmp_path, side: int, classes: int):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(side * side, classes)).eval()
    program = torch.export.export(net, (torch.zeros(2, 1, side, side),),
                                  dynamic_shapes=({0: torch.export.Dim("n", min=1)},))
    torch.export.save(program, str(tmp_path / f"clf{side}x{classes}.pt2"))
    return net, str(tmp_path / f"clf{side}x{classes}.pt2")


def test_a_users_digit_classifier_takes_the_cnns_place(tmp_path):
    net, path = _export(tmp_path, 28, 10)
    spec = SelectiveAuditSpec(cnn=path, class_vae="", class_gan="", sdim="", device="cpu")
    models, cards = selective._load_models(spec, cache=None, data_dir=None, device=torch.device("cpu"), progress=None)
    assert set(models) == {"cnn"} and cards == {"cnn": {"file": path}}
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(models["cnn"].probs(x), torch.softmax(net(x), -1), atol=1e-6)


@pytest.mark.parametrize("side,classes,message", [(32, 10, r"MNIST's digits are \(1, 28, 28\)"),
                                                  (28, 3, "has 3 classes; the selective audit's test set")])
def test_a_users_classifier_that_cannot_stand_for_the_cnn_is_one_line(side, classes, message, tmp_path):
    _, path = _export(tmp_path, side, classes)
    spec = SelectiveAuditSpec(cnn=path, class_vae="", class_gan="", sdim="", device="cpu")
    with pytest.raises(InvalidInputError, match=message):
        selective._load_models(spec, cache=None, data_dir=None, device=torch.device("cpu"), progress=None)


def test_a_users_labelled_digits_replace_mnists_test_set(mnist_fixture_dir, tmp_path):
    import numpy as np

    from ppl_audit.data import DataFileError, load_dataset

    test = load_dataset("mnist", "test", data_dir=mnist_fixture_dir, limit=12)
    path = tmp_path / "mine.npz"
    np.savez(path, images=(test.images[:, 0].numpy() * 255).round().astype(np.uint8), labels=test.labels.numpy())
    spec = SelectiveAuditSpec(test_data=str(path), num_in=10, ood_sets=("omniglot",), device="cpu")
    (digits, labels), ood = selective._load_images(spec, None, {"omniglot": torch.rand(3, 1, 28, 28)})
    assert digits.shape == (10, 1, 28, 28) and labels.tolist() == test.labels[:10].tolist()
    assert torch.allclose(digits, test.images[:10], atol=1 / 255)  # 8-bit round trip
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 28, 28)), labels=np.array([0, 10]))
    np.savez(tmp_path / "pickled.npz", images=np.zeros((2, 28, 28)), labels=np.array([0, None], dtype=object))
    for name, message in (("bad.npz", r"expected 2 integers in 0..9"), ("pickled.npz", "without pickles")):
        with pytest.raises(DataFileError, match=message):
            selective._load_images(dataclasses.replace(spec, test_data=str(tmp_path / name)), None,
                                   {"omniglot": torch.rand(3, 1, 28, 28)})
    with pytest.raises(InvalidInputError, match="test_data must be the path of an .npz file"):
        SelectiveAuditSpec(test_data="digits.csv")
