"""What the confidently-wrong and novel-class audits share: per class ``k``, a confident region's rate and finds.

Both ask, for each class ``k`` of a classifier, how much prior mass lies where it says ``P(k) >= confidence``
(:func:`~ppl_audit.region_mass.sample_confident_region`), and show the inputs found there. They differ in the
prior of ``k``: the mixture of the *other* classes' generators (:mod:`~ppl_audit.audits.confidently_wrong`),
or one prior of a class the classifier never saw (:mod:`~ppl_audit.audits.novel_class`). This module holds
their settings, the sampling loop over classes and the report.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

from ppl_audit.audits.fanout import travelling, worker_classifier, worker_where
from ppl_audit.audits.spec import spec_fields, spec_hash
from ppl_audit.errors import InvalidInputError
from ppl_audit.execute import Unit, current_executor, worker_model
from ppl_audit.priors.base import Prior
from ppl_audit.progress import ProgressFn
from ppl_audit.provenance import library_versions
from ppl_audit.region_mass import (
    DEFAULT_CONFIDENCE,
    DEFAULT_PARTICLES,
    DEFAULT_RUNS,
    DEFAULT_SHARPNESS,
    GALLERY_SIZE,
    MAX_PARTICLES,
    ConfidentRegion,
    sample_confident_region,
)
from ppl_audit.audits.verdict import with_verdict
from ppl_audit.report import Report, Section, Table
from ppl_audit.report import figures
from ppl_audit.validators import check_count

MAX_RUNS = 64


@dataclass(frozen=True)
class RegionAuditSettings:
    """The settings both audits share.

    Parameters
    ----------
    title : str
    classifier : str
        The classifier's model card, or a model of your own (``.onnx``, ``.pt2``, ``package.module:factory``).
    classes : tuple of str, optional
        The classes ``k`` to audit (default every class).
    confidence : float
        The region's edge: inputs called ``k`` with at least this probability, in ``[0.5, 1)``.
    num_particles, num_runs : int
        SMC particles per class, split into independent runs (their spread is the rate's error).
    sharpness : float
        How fast the soft indicator falls outside the region (:mod:`ppl_audit.region_mass`).
    device : str
    """

    title: str = ""
    classifier: str = "mnist-lenet5"
    classes: tuple[str, ...] | None = None
    confidence: float = DEFAULT_CONFIDENCE
    num_particles: int = DEFAULT_PARTICLES
    num_runs: int = DEFAULT_RUNS
    sharpness: float = DEFAULT_SHARPNESS
    device: str = "auto"

    #: the string fields that must be non-empty (a kind adds the name of its prior's field)
    STRINGS = ("title", "classifier", "device")

    def __post_init__(self):
        for name in self.STRINGS:
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise InvalidInputError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if isinstance(self.confidence, bool) or not isinstance(self.confidence, (int, float)) or not (
                0.5 <= self.confidence < 1):
            raise InvalidInputError(f"confidence must be a probability in [0.5, 1), got {self.confidence!r}")
        if isinstance(self.sharpness, bool) or not isinstance(self.sharpness, (int, float)) or not (
                math.isfinite(self.sharpness) and self.sharpness > 0):
            raise InvalidInputError(f"sharpness must be a finite number > 0, got {self.sharpness!r}")
        check_count(self.num_particles, "num_particles", MAX_PARTICLES, why="a memory bound")
        check_count(self.num_runs, "num_runs", MAX_RUNS, minimum=2, why="independent runs for an error bar")
        if self.num_particles % self.num_runs or self.num_particles // self.num_runs < 8:
            raise InvalidInputError(f"num_particles ({self.num_particles}) must split into num_runs "
                                    f"({self.num_runs}) runs of at least 8 particles each")
        if self.classes is not None:
            if isinstance(self.classes, str) or not self.classes or len(set(self.classes)) != len(self.classes):
                raise InvalidInputError(f"classes must list distinct class names, got {self.classes!r}")
            object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (what the provenance records and hashes)."""
        return spec_fields(self)


@dataclass(frozen=True)
class ClassFinding:
    """The audit of one class ``k``: its confident region under the prior of ``k``."""

    class_name: str
    region: ConfidentRegion
    prior_name: str
    images: torch.Tensor  # the most confident finds (at most GALLERY_SIZE), decoded by the same prior


@dataclass(frozen=True)
class Wording:
    """How a kind's report names its prior and its finds."""

    kind: str
    inputs: str  # what the prior makes, e.g. "inputs of the other classes" or "letters"
    prior: str  # the prior, in a sentence's words


@dataclass(frozen=True)
class RegionResults:
    """What an audit measured, before any figure is drawn."""

    spec: RegionAuditSettings
    seed: int
    class_names: tuple[str, ...]
    findings: tuple[ClassFinding, ...]
    wording: Wording
    timings: dict[str, float]


def audited_classes(spec: RegionAuditSettings, class_names: tuple[str, ...]) -> tuple[str, ...]:
    """The classes ``spec`` names (all by default), each one of the classifier's."""
    if spec.classes is None:
        return class_names
    unknown = [c for c in spec.classes if c not in class_names]
    if unknown:
        raise InvalidInputError(f"classes {unknown} are not the classifier's ({list(class_names)})")
    return spec.classes


def sample_regions(spec: RegionAuditSettings, classifier, prior_for: Callable[[str], Prior], *, seed: int,
                   device, progress: ProgressFn | None = None, recipe: tuple[Callable[..., Prior], dict] | None = None,
                   cache=None, data_dir=None) -> tuple[ClassFinding, ...]:
    """Each audited class's region under ``prior_for(k)``, seeded by the audit seed and the class's index.

    One unit per class: in process with ``classifier`` and ``prior_for(k)``; on a remote worker with the
    classifier loaded by ``spec.classifier`` and the prior made by ``recipe`` (``(make, kwargs)``:
    ``make(k=k, **kwargs)``, a module-level function that loads by name).
    """
    class_names = tuple(classifier.class_names)
    settings = dict(confidence=spec.confidence, num_particles=spec.num_particles, num_runs=spec.num_runs,
                    sharpness=spec.sharpness)
    common = {"settings": settings, "classifier_name": travelling(spec.classifier), "prior_recipe": recipe,
              **worker_where(cache, data_dir, device)}
    units = [Unit(f"class {k}", region_finding, {**common, "k": k, "index": class_names.index(k),
                                                 "seed": seed * 1000 + class_names.index(k)},
                  local={"classifier": classifier, "prior": prior_for(k), "progress": progress},
                  gpu=torch.device(device).type == "cuda")
             for k in audited_classes(spec, class_names)]
    return tuple(current_executor().map(units, task="classes", progress=progress))


def region_finding(*, k: str, index: int, settings: dict[str, Any], seed: int, device: str, classifier_name: str,
                   prior_recipe, cache: str | None, data_dir: str | None, classifier=None, prior=None,
                   progress: ProgressFn | None = None) -> ClassFinding:
    """Class ``k``'s confident region and its gallery; the classifier and prior loaded by name when not given."""
    if classifier is None:
        classifier = worker_classifier(classifier_name, cache=cache, data_dir=data_dir, device=device)
    if prior is None:
        make, kwargs = prior_recipe
        prior = worker_model(("region prior", make.__module__, make.__qualname__, k, tuple(sorted(kwargs.items()))),
                             lambda: make(k=k, **kwargs))
    region = sample_confident_region(prior, classifier, index, seed=seed, device=torch.device(device),
                                     progress=progress, **settings)
    with torch.no_grad():
        images = prior.decode(region.latents[:GALLERY_SIZE].to(prior.device)).cpu()
    return ClassFinding(k, region, getattr(prior, "name", type(prior).__name__), images)


def results(spec, seed: int, classifier, findings, wording: Wording, start: float) -> RegionResults:
    """Bundle an audit's findings with what the report needs to say about them."""
    return RegionResults(spec=spec, seed=seed, class_names=tuple(classifier.class_names), findings=findings,
                         wording=wording, timings={"total_seconds": time.perf_counter() - start})


def rate_text(region: ConfidentRegion) -> str:
    """The rate as a reader takes it in: ``3.1e-04 (95%: 2.0e-04 to 4.2e-04)``, or ``< 1.2e-09`` as a bound.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> rate_text(SimpleNamespace(estimable=False, upper_bound=1.23e-9))
    '< 1.2e-09'
    """
    if not region.estimable:
        return f"< {region.upper_bound:.1e}"
    low, high = region.interval
    return f"{region.rate:.1e} (95%: {low:.1e} to {high:.1e})"


def source_counts(region: ConfidentRegion, class_names) -> list[tuple[str, int]]:
    """How many finds each true class made, most first (empty for an unlabelled prior)."""
    if region.true_classes is None or not len(region.true_classes):
        return []
    counts = torch.bincount(region.true_classes.cpu(), minlength=len(class_names))
    return [(class_names[c], int(counts[c])) for c in torch.argsort(counts, descending=True).tolist() if counts[c]]


def _gallery(finding: ClassFinding, class_names, spec, wording: Wording) -> figures.Figure:
    region = finding.region
    n = min(GALLERY_SIZE, len(region.latents))
    k = class_names.index(finding.class_name)
    truth = region.true_classes[:n].tolist() if region.true_classes is not None else None
    labels = [f"P({finding.class_name})={float(p[k]):.4f}" + (f"\ntrue {class_names[truth[i]]}" if truth else "")
              for i, p in enumerate(region.probs[:n])]
    return figures.image_grid(
        f"finds_{k}", f"{wording.inputs.capitalize()} called {finding.class_name} with >= {spec.confidence:g}",
        f"The most confident of the {len(region.latents)} distinct inputs found in the region, ranked by "
        f"P({finding.class_name})" + ("; each is labelled with the class whose generator made it." if truth else "."),
        finding.images[:n], labels,
        data={"probability": [float(p[k]) for p in region.probs[:n]],
              "true_class": [class_names[t] for t in truth] if truth else None})


def _class_section(finding: ClassFinding, class_names, spec, wording: Wording) -> Section:
    region = finding.region
    paragraphs = [f"Prior: {finding.prior_name}. Rate of {wording.inputs} called {finding.class_name} with at "
                  f"least {spec.confidence:g} confidence: {rate_text(region)}."]
    sources = source_counts(region, class_names)
    if sources:
        paragraphs.append("The finds were made by the generators of " +
                          ", ".join(f"{c} ({n})" for c, n in sources) + ".")
    if not len(region.latents):
        paragraphs.append("No input reached the region: the rate is given as an upper bound.")
    warnings = []
    if not region.checks.get("passed"):
        warnings.append(f"Class {finding.class_name}: the SMC runs failed a check: "
                        f"{'; '.join(region.checks.get('failed', []))}. Raise the particles (--particles N; in the "
                        "audit file, num_particles).")
    table = Table(f"runs_{finding.class_name}", "Each independent SMC run",
                  ["run", "log evidence", "share of draws inside", "rate"],
                  [[i, round(z, 4), round(s, 4), r] for i, (z, s, r) in
                   enumerate(zip(region.run_log_evidence, region.run_share_inside, region.run_rates))])
    return Section(f"class_{finding.class_name}", f"Called {finding.class_name}", paragraphs=paragraphs,
                   tables=[table], warnings=warnings,
                   figures=[_gallery(finding, class_names, spec, wording)] if len(region.latents) else [],
                   metrics={"rate": region.rate if region.estimable else None, "rate_se": region.rate_se,
                            "upper_bound": region.upper_bound, "estimable": region.estimable,
                            "num_finds": len(region.latents),
                            **{k: v for k, v in region.checks.items() if k != "failed"}})


def _overview(results: RegionResults) -> tuple[Section, str]:
    spec, names, wording = results.spec, results.class_names, results.wording
    rows = []
    for f in results.findings:
        low, high = f.region.interval
        made_by = ", ".join(f"{c}: {n}" for c, n in source_counts(f.region, names)[:3]) or "-"
        rows.append([f.class_name, rate_text(f.region), f.region.rate if f.region.estimable else None, low, high,
                     f.region.estimable, len(f.region.latents), made_by, f.region.checks.get("passed"),
                     round(f.region.seconds, 1)])
    table = Table("rates", "Rate per class", ["class k", "rate", "rate (number)", "95% low", "95% high",
                                              "estimable", "distinct finds", "made by (top 3)",
                                              "SMC checks passed", "seconds"], rows)
    worst = max((f for f in results.findings if f.region.estimable), key=lambda f: f.region.rate, default=None)
    verdict = (f"Highest rate: class {worst.class_name}, {rate_text(worst.region)}: about one in "
               f"{1 / worst.region.rate:,.0f} {wording.inputs} is called {worst.class_name} with "
               f">= {spec.confidence:g} confidence." if worst else
               "No class's rate was large enough to estimate; the upper bounds are in the table.")
    plot = figures.rate_plot(
        "rates", f"How often {wording.inputs} are called k with >= {spec.confidence:g} confidence",
        f"Each class's rate (the prior mass of its region, under {wording.prior}) with its 95% interval over "
        "independent SMC runs; a downward triangle is an upper bound where too few inputs reached the region.",
        [f.class_name for f in results.findings],
        [f.region.rate if f.region.estimable else None for f in results.findings],
        [f.region.interval for f in results.findings], xlabel="class k", ylabel="rate (log scale)")
    return Section("rates", "Rates over classes", paragraphs=[verdict], tables=[table], figures=[plot]), verdict


def present(results: RegionResults) -> Report:
    """The table and plot of rates over classes, then one section per class with its ranked finds."""
    spec, wording = results.spec, results.wording
    overview, verdict = _overview(results)
    sections = [overview] + [_class_section(f, results.class_names, spec, wording) for f in results.findings]
    spec_dict = spec.to_dict()
    return with_verdict(Report(
        kind=wording.kind, title=spec.title,
        summary=[f"{spec.classifier} audited with {wording.prior}: for each class k, {wording.inputs} that the "
                 f"classifier calls k with at least {spec.confidence:g} confidence. {verdict}"],
        metrics={"rates": {f.class_name: (f.region.rate if f.region.estimable else None) for f in results.findings},
                 "upper_bounds": {f.class_name: f.region.upper_bound for f in results.findings},
                 "all_checks_passed": all(f.region.checks.get("passed") for f in results.findings)},
        sections=sections,
        provenance={"seed": results.seed, "spec": spec_dict, "spec_sha256": spec_hash(spec_dict),
                    "versions": library_versions("numpy", "matplotlib")},
        timings=dict(results.timings)))


__all__ = ["ClassFinding", "RegionAuditSettings", "RegionResults", "Wording", "audited_classes", "present",
           "rate_text", "region_finding", "results", "sample_regions", "source_counts"]
