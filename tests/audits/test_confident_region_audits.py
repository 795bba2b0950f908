"""The confidently-wrong and novel-class audits (issue 24, items 3 and 4) at tiny size, untrained models.

Their estimator is checked against exact answers in ``tests/test_region_mass.py``; here the audits' own
parts: the "without k" priors, the reports (rates, bounds, galleries labelled with true classes), the
audit files and the refusals.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from ppl_audit.audits import confidently_wrong, load_audit_file, novel_class
from ppl_audit.audits.confidently_wrong import ConfidentlyWrongAuditSpec, mixture_without
from ppl_audit.classifiers import CallableClassifier
from ppl_audit.errors import InvalidInputError
from ppl_audit.generative.class_generators import ClassGAN
from ppl_audit.priors import DecoderPrior
from ppl_audit.report import write_report

NAMES = ("a", "b", "c")
GENERATORS = ClassGAN(classes=3, latent_dim=2, generator_hidden=(8,), critic_hidden=(8,), seed=0)
SMALL = dict(num_particles=256, num_runs=4, device="cpu")


def brightness_classifier(names=NAMES) -> CallableClassifier:
    """Calls an image the last class when it is bright, the first when dark: steep in the mean pixel."""
    def probs(x):
        level = 40 * (x.flatten(1).mean(1, keepdim=True) - 0.5)
        middle = torch.zeros(len(x), len(names) - 2)
        logits = torch.cat([-level, middle, level], 1)
        return torch.softmax(logits, 1)

    return CallableClassifier(probs, names)


def test_the_report_gives_a_rate_or_a_bound_per_class_with_labelled_finds(tmp_path):
    spec = ConfidentlyWrongAuditSpec(classifier="brightness", generators="tiny", **SMALL)
    report = confidently_wrong.run(spec, seed=0, classifier=brightness_classifier(), generators=GENERATORS)
    doc = json.loads((write_report(report, tmp_path / "r") / "report.json").read_text())
    assert doc["kind"] == "confidently-wrong" and set(doc["metrics"]["upper_bounds"]) == set(NAMES)
    for name in NAMES:
        section = next(s for s in doc["sections"] if s["name"] == f"class_{name}")
        rate, bound = section["metrics"]["rate"], section["metrics"]["upper_bound"]
        assert (rate is not None) == section["metrics"]["estimable"]
        assert rate is None or 0 < rate <= bound <= 1
        if section["metrics"]["num_finds"]:  # the finds never come from the class they are called
            labels = section["figures"][0]["data"]["true_class"]
            assert labels and name not in labels
    assert (tmp_path / "r" / "figures" / "rates.png").exists()


def test_without_k_leaves_out_k_and_needs_a_generator_per_class():
    prior = mixture_without(GENERATORS, NAMES, "b", "tiny")
    assert prior.class_weights == {"a": 0.5, "c": 0.5} and prior.name == "tiny without b"
    with pytest.raises(InvalidInputError, match="make 3 classes but the classifier has 4"):
        mixture_without(GENERATORS, ("a", "b", "c", "d"), "b", "tiny")


def test_a_class_the_classifier_lacks_is_named():
    spec = ConfidentlyWrongAuditSpec(classes=("z",), **SMALL)
    with pytest.raises(InvalidInputError, match=r"classes \['z'\] are not the classifier's"):
        confidently_wrong.evaluate(spec, classifier=brightness_classifier(), generators=GENERATORS)


@pytest.mark.parametrize("fields, message", [
    (dict(confidence=1.0), "confidence must be a probability in"),
    (dict(num_particles=100, num_runs=8), "must split into num_runs"),
    (dict(num_runs=1), "num_runs"),
    (dict(classes=("a", "a")), "distinct class names"),
    (dict(sharpness=0), "sharpness"),
])
def test_bad_settings_are_named(fields, message):
    with pytest.raises(InvalidInputError, match=message):
        ConfidentlyWrongAuditSpec(**fields)


def test_the_analyses_file_smoke_runs():
    path = Path(__file__).resolve().parents[2] / "analyses" / "mnist-confidently-wrong.toml"
    module, spec, seed = load_audit_file(path)
    assert module is confidently_wrong and spec.generators == "mnist-class-vae" and spec.confidence == 0.99
    ten = tuple(str(d) for d in range(10))
    generators = ClassGAN(classes=10, latent_dim=2, generator_hidden=(8,), critic_hidden=(8,), seed=0)
    report = module.run(dataclasses.replace(spec, classes=("7",), **SMALL), seed=seed,
                        classifier=brightness_classifier(ten), generators=generators)
    assert report.kind == "confidently-wrong" and list(report.metrics["upper_bounds"]) == ["7"]


def test_the_novel_class_report_rates_every_class_under_one_prior(tmp_path):
    prior = DecoderPrior(torch.nn.Sequential(torch.nn.Linear(2, 784), torch.nn.Sigmoid()), 2)
    spec = novel_class.NovelClassAuditSpec(classifier="brightness", prior="tiny", inputs="blobs", **SMALL)
    report = novel_class.run(spec, seed=0, classifier=brightness_classifier(), prior=prior)
    doc = json.loads((write_report(report, tmp_path / "r") / "report.json").read_text())
    assert doc["kind"] == "novel-class" and list(doc["metrics"]["upper_bounds"]) == list(NAMES)
    assert "blobs" in doc["summary"][0]
    for section in doc["sections"][1:]:  # an unlabelled prior: the finds carry no true class
        assert all(f["data"]["true_class"] is None for f in section["figures"])


def test_the_novel_class_analyses_file_smoke_runs():
    path = Path(__file__).resolve().parents[2] / "analyses" / "mnist-novel-class.toml"
    module, spec, seed = load_audit_file(path)
    assert module is novel_class and spec.prior == "notmnist-vae" and spec.inputs == "letters"
    prior = DecoderPrior(torch.nn.Sequential(torch.nn.Linear(2, 784), torch.nn.Sigmoid()), 2)
    report = module.run(dataclasses.replace(spec, classes=("3",), **SMALL), seed=seed, prior=prior,
                        classifier=brightness_classifier(tuple(str(d) for d in range(10))))
    assert report.kind == "novel-class" and list(report.metrics["upper_bounds"]) == ["3"]
