"""The GWIN audit: the table's arithmetic on a hand-made case, the spec, the audit file, the report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ppl_audit.audits import gwin as gwin_audit
from ppl_audit.audits import load_audit_file
from ppl_audit.audits.gwin import GwinAuditSpec, evaluate_gwin, summarise
from ppl_audit.classifiers.bayesian_lenet import BayesianClassifier
from ppl_audit.data import load_dataset
from ppl_audit.errors import AuditFileError, InvalidInputError
from ppl_audit.report import write_report
from tests.report_pins import assert_pinned

REPO = Path(__file__).resolve().parents[2]
GWIN_FILE = REPO / "analyses" / "mnist-gwin.toml"

pytestmark = pytest.mark.usefixtures("one_thread")


class _Scripted:
    """A stand-in classifier: the 'label' is the image's top-left pixel class, certainty its second pixel.

    Images encode their own prediction, so the pipeline's bookkeeping can be checked by hand.
    """

    class_names = tuple(str(d) for d in range(10))
    device = torch.device("cpu")

    def predict(self, x, num_samples, *, generator=None):
        labels = (x[:, 0, 0, 0] * 10).round().long().clamp(0, 9)
        certainty = x[:, 0, 0, 1]
        probs = torch.full((len(x), 10), 0.0)
        probs[torch.arange(len(x)), labels] = certainty
        probs += (1 - certainty)[:, None] / 10
        samples = probs.expand(num_samples, -1, -1)
        return SimpleNamespace(samples=samples, mean_probs=probs, labels=labels, certainty=certainty)


def _image(label: int, certainty: float) -> torch.Tensor:
    x = torch.zeros(1, 28, 28)
    x[0, 0, 0], x[0, 0, 1] = label / 10, certainty
    return x


def test_table_arithmetic_on_a_hand_made_case():
    # Four inputs, true labels all 3. Input 0: right and certain (0.99). Input 1: wrong (label 5),
    # certainty 0.6. Input 2: right, certainty 0.85. Input 3: wrong (label 1), certainty 0.3.
    # The "GWIN" turns every input into a certain 3. At tau = 0.9 inputs 1-3 are rejected:
    # BNN is right on 1 of 3, BNN+GWIN on 3 of 3; overall accuracy goes from 2/4 to 4/4, the error
    # from 0.5 to 0 (-100%). At tau = 0.5 only input 3 is rejected: 0 of 1 -> 1 of 1.
    images = torch.stack([_image(3, 0.99), _image(5, 0.6), _image(3, 0.85), _image(1, 0.3)])
    labels = torch.full((4,), 3)
    result = evaluate_gwin(_Scripted(), lambda x, g: torch.stack([_image(3, 0.99)] * len(x)), images, labels,
                           taus=(0.5, 0.9), num_samples=3, runs=2, figure_tau=0.9)
    np.testing.assert_allclose(result.rejected, [[0.25, 0.75]] * 2)
    np.testing.assert_allclose(result.bnn_accuracy, [[0.0, 1 / 3]] * 2)
    np.testing.assert_allclose(result.gwin_accuracy, [[1.0, 1.0]] * 2)
    rows = summarise(result)
    assert rows[1]["rejected_percent_mean"] == 75.0 and rows[1]["rejected_percent_std"] == 0.0
    assert rows[1]["overall_accuracy_change_points_mean"] == 50.0
    assert rows[1]["error_change_percent_mean"] == -100.0
    assert rows[0]["overall_accuracy_change_points_mean"] == 25.0
    assert rows[0]["error_change_percent_mean"] == -50.0
    assert rows[0]["paper_gwin_accuracy_rejected_percent"] == 75.59 and rows[0]["at_or_above_paper"] is True
    # Figure data: the three inputs rejected at 0.9, their true-class certainty before and after.
    assert result.examples.shape == (2, 3, 1, 28, 28)
    assert result.example_labels == ["true 3: 5 -> 3", "true 3: 3 -> 3", "true 3: 1 -> 3"]
    assert torch.all(result.certainty_after > result.certainty_before)


def test_nothing_rejected_gives_no_accuracy_rather_than_a_number():
    images = torch.stack([_image(3, 0.99)] * 2)
    result = evaluate_gwin(_Scripted(), lambda x, g: x, images, torch.full((2,), 3), taus=(0.5,), num_samples=2,
                           runs=1, figure_tau=0.5)
    row = summarise(result)[0]
    assert row["rejected_percent_mean"] == 0.0
    assert row["gwin_accuracy_rejected_percent_mean"] is None and row["at_or_above_paper"] is None


@pytest.mark.parametrize("kwargs, message", [
    ({"taus": (0.5, 1.2)}, r"each of taus must be a number in \[0, 1\]"),
    ({"taus": (0.9, 0.5)}, "increasing"),
    ({"figure_tau": 0.6}, "figure_tau must be one of taus"),
    ({"num_samples": 0}, "num_samples"),
    ({"runs": 0}, "runs must be a positive integer"),
])
def test_spec_errors_name_the_problem(kwargs, message):
    with pytest.raises(InvalidInputError, match=message):
        GwinAuditSpec(**kwargs)


def test_labels_must_match_the_images():
    with pytest.raises(InvalidInputError, match="labels must have shape"):
        evaluate_gwin(_Scripted(), lambda x, g: x, torch.rand(3, 1, 28, 28), torch.zeros(2, dtype=torch.long))


def test_audit_file_spells_out_the_papers_settings():
    module, spec, seed = load_audit_file(GWIN_FILE)
    assert module is gwin_audit and seed == 0
    assert spec == GwinAuditSpec()  # the file spells out the defaults
    assert spec.taus == (0.5, 0.7, 0.8, 0.9, 0.95, 0.99) and spec.num_samples == 10 and spec.runs == 10


def test_bad_audit_file_is_an_audit_file_error(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('[audit]\nkind = "gwin"\ntaus = [0.5, 1.5]\n')
    with pytest.raises(AuditFileError, match="taus"):
        load_audit_file(path)
    path.write_text('[audit]\nkind = "gwin"\ntau = 0.5\n')
    with pytest.raises(AuditFileError, match="unknown key"):
        load_audit_file(path)


def _tiny_audit(tiny_mnist_model, mnist_fixture_dir):
    """``(spec, seed, classifier, gwin, data)``: the audit file with tiny sizes, a tiny BNN, an untrained GWIN."""
    from ppl_audit.generative.gwin import GWIN

    _, spec, seed = load_audit_file(GWIN_FILE)
    spec = GwinAuditSpec(**{**spec.__dict__, "runs": 2, "num_samples": 3, "device": "cpu"})
    bnn = tiny_mnist_model("mnist-bayesian-lenet5")
    classifier = BayesianClassifier(bnn.module)
    classifier.trained = bnn
    torch.manual_seed(0)
    untrained = SimpleNamespace(module=GWIN(noise_dim=4, channels=4, critic_channels=4).eval())
    data = load_dataset("mnist", "test", data_dir=mnist_fixture_dir)
    return spec, seed, classifier, untrained, data


def test_audit_file_smoke_run_with_tiny_models(tiny_mnist_model, mnist_fixture_dir, tmp_path):
    spec, seed, classifier, untrained, data = _tiny_audit(tiny_mnist_model, mnist_fixture_dir)
    report = gwin_audit.run(spec, seed=seed, classifier=classifier, gwin=untrained,
                            images=(data.images, data.labels))
    table = report.sections[0].tables[0]
    assert [row[0] for row in table.rows] == list(spec.taus)
    assert report.metrics["num_images"] == 100 and len(report.metrics["taus"]) == 6
    names = {f.name for f in report.iter_figures()}
    assert {"accuracy_vs_tau", "ground_truth_certainty"} <= names
    assert any(n.startswith("mnist_bayesian_lenet5_curve") for n in names)  # the ELBO curve
    out = write_report(report, tmp_path / "report")
    saved = json.loads((out / "report.json").read_text())
    assert saved["kind"] == "gwin" and saved["metrics"]["runs"] == 2
    again = gwin_audit.run(spec, seed=seed, classifier=classifier, gwin=untrained, images=(data.images, data.labels))
    assert again.metrics == report.metrics  # same seed, same numbers
    assert_pinned("gwin-tiny", out / "report.json")


def test_evaluate_gives_the_numbers_and_present_the_report_of_run(tiny_mnist_model, mnist_fixture_dir):
    """The tiny audit's numbers without rendering; rendering them gives run's report.json byte for byte."""
    from ppl_audit.report import Figure, Report, Section, Table
    from ppl_audit.report.writers import report_to_json_bytes

    spec, seed, classifier, untrained, data = _tiny_audit(tiny_mnist_model, mnist_fixture_dir)
    kwargs = dict(seed=seed, classifier=classifier, gwin=untrained, images=(data.images, data.labels))
    results = gwin_audit.evaluate(spec, **kwargs)
    assert isinstance(results, gwin_audit.GwinResults)
    for field in dataclasses.fields(results):
        assert not isinstance(getattr(results, field.name), (Report, Section, Table, Figure)), field.name
    out = results.outcomes
    assert results.num_images == 100 and out.taus == spec.taus and out.rejected.shape == (2, 6)
    assert results.rows == summarise(out)
    assert [row["tau"] for row in results.rows] == list(spec.taus)
    assert results.bnn_accuracy_percent == pytest.approx(100 * out.base_accuracy.mean())
    assert np.all(np.diff(out.rejected, axis=1) >= 0)  # a larger tau rejects a superset
    # Accuracy on every input: the BNN's, with the rejected share's accuracy swapped for BNN+GWIN's.
    swapped = out.base_accuracy[:, None] + out.rejected * np.nan_to_num(out.gwin_accuracy - out.bnn_accuracy)
    np.testing.assert_allclose(out.pipeline_accuracy, swapped, atol=1e-6)
    assert len(out.certainty_before) == len(out.certainty_after) == round(100 * out.rejected[0, 2])  # tau = 0.8
    assert results.classifier_training.card == "mnist-bayesian-lenet5" and results.gwin_training is None
    assert not any(isinstance(v, (list, dict)) for v in results.classifier_training.metrics.values())
    rendered = report_to_json_bytes(gwin_audit.present(results))
    assert report_to_json_bytes(gwin_audit.present(results)) == rendered  # present leaves its input as it was
    assert report_to_json_bytes(gwin_audit.run(spec, **kwargs)) == rendered


def test_cli_refuses_a_bad_gwin_audit_file_with_exit_status_2(tmp_path, capsys):
    from ppl_audit import cli

    path = tmp_path / "a.toml"
    path.write_text('[audit]\nkind = "gwin"\ntaus = [0.5, 0.7]\nfigure_tau = 0.8\n')
    status = cli.main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    assert status == 2
    assert "figure_tau must be one of taus" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # no half-written report


def test_cli_without_data_says_where_it_looked(tmp_path, capsys, monkeypatch):
    from ppl_audit import cli

    monkeypatch.delenv("PPL_AUDIT_DATA", raising=False)
    monkeypatch.setenv("PPL_AUDIT_CACHE", str(tmp_path / "empty-cache"))
    status = cli.main(["run", str(GWIN_FILE), "--out", str(tmp_path / "out"), "--quiet"])
    assert status == 2
    assert "PPL_AUDIT_DATA" in capsys.readouterr().err
