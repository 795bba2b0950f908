"""The novel-class audit: how often does a class the classifier never saw get called ``k`` with 99% confidence?

Bayes-TrEx's novel-class extrapolation (Booth et al. 2021), with a rate. The prior makes inputs of a class
outside the classifier's training data: the built-in ``notmnist-vae`` (letters A-J, for an MNIST digit
classifier), or any world, including a prior of your own. For each class ``k`` the region is
``P(k) >= confidence``; :func:`~ppl_audit.region_mass.sample_confident_region` estimates its prior mass, how
often such inputs are confidently taken for ``k``, and the report shows the inputs found, ranked by confidence
(:mod:`~ppl_audit.audits.confident_regions`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ppl_audit._device import resolve_device
from ppl_audit.audits import worlds as registry
from ppl_audit.audits.confident_regions import RegionAuditSettings, RegionResults, Wording, present, results
from ppl_audit.audits.confident_regions import sample_regions
from ppl_audit.audits.fanout import check_travels, given_objects, travelling, worker_where, world_by_name
from ppl_audit.execute import current_executor
from ppl_audit.audits.spec import DEFAULT_SEED, validate_seed
from ppl_audit.progress import ProgressFn
from ppl_audit.report import Report

KIND = "novel-class"


@dataclass(frozen=True)
class NovelClassAuditSpec(RegionAuditSettings):
    """Settings of a novel-class audit: :class:`RegionAuditSettings`, and

    Parameters
    ----------
    prior : str
        A world whose inputs are of a class the classifier never saw (``notmnist-vae``, or a prior of your
        own: ``.onnx``, ``.pt2``, ``package.module:factory`` or a registered world).
    inputs : str
        What the prior makes, in the report's words (``letters``).
    """

    title: str = "Novel-class extrapolation of the MNIST LeNet-5: notMNIST letters"
    prior: str = "notmnist-vae"
    inputs: str = "letters"

    STRINGS = RegionAuditSettings.STRINGS + ("prior", "inputs")


SPEC = NovelClassAuditSpec


def evaluate(spec: NovelClassAuditSpec, *, seed: int = DEFAULT_SEED, progress: ProgressFn | None = None,
             cache: str | None = None, classifier=None, prior=None, data_dir: str | None = None) -> RegionResults:
    """Estimate each audited class's novel-class rate and collect its finds (no rendering).

    ``classifier`` and ``prior`` may be given ready-made.
    """
    seed = validate_seed(seed)
    start = time.perf_counter()
    device = resolve_device(spec.device)
    check_travels(current_executor(), given=given_objects(classifier=classifier, prior=prior), worlds=(spec.prior,))
    if classifier is None:
        classifier = registry.load_classifier(spec.classifier, device=device, cache=cache, data_dir=data_dir)
    if prior is None:
        prior = registry.load_world(spec.prior, device=device, cache=cache, data_dir=data_dir, progress=progress)
    recipe = (world_by_name, {"name": travelling(spec.prior), **worker_where(cache, data_dir, device)})
    findings = sample_regions(spec, classifier, lambda k: prior, seed=seed, device=device, progress=progress,
                              recipe=recipe, cache=cache, data_dir=data_dir)
    return results(spec, seed, classifier, findings, Wording(KIND, spec.inputs, f"the prior {spec.prior}"), start)


def run(spec: NovelClassAuditSpec, *, seed: int = DEFAULT_SEED, progress: ProgressFn | None = None,
        cache: str | None = None, classifier=None, prior=None, data_dir: str | None = None) -> Report:
    """``present(evaluate(spec, ...))``: the novel-class audit's report."""
    return present(evaluate(spec, seed=seed, progress=progress, cache=cache, classifier=classifier, prior=prior,
                            data_dir=data_dir))


__all__ = ["KIND", "NovelClassAuditSpec", "SPEC", "evaluate", "present", "run"]
