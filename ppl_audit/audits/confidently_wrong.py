"""The confidently-wrong audit: how often do realistic inputs of other classes get called ``k`` with 99% confidence?

The level-set paper's second "next step" (Booth et al. 2020, Sec. 6): in-distribution adversarial examples
found by sampling. For each class ``k`` the prior is the mixture of every *other* class's generator
(:class:`~ppl_audit.priors.class_mixture.ClassMixturePrior` without ``k``), and the region is
``P(k) >= confidence``. :func:`~ppl_audit.region_mass.sample_confident_region` samples it and estimates its
prior mass: the **rate** at which the other classes' realistic inputs are called ``k`` that confidently, with
its spread over independent SMC runs, or an upper bound where too few inputs reach it. The finds are shown
ranked by confidence, each with the class whose generator made it (:mod:`~ppl_audit.audits.confident_regions`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ppl_audit._device import resolve_device
from ppl_audit.audits import worlds as registry
from ppl_audit.audits.confident_regions import RegionAuditSettings, RegionResults, Wording, present, results
from ppl_audit.audits.confident_regions import sample_regions
from ppl_audit.audits.fanout import GENERATOR_KINDS, check_travels, given_objects, travelling, worker_generators
from ppl_audit.audits.fanout import worker_where
from ppl_audit.audits.spec import DEFAULT_SEED, validate_seed
from ppl_audit.errors import InvalidInputError
from ppl_audit.execute import current_executor
from ppl_audit.priors.class_mixture import ClassMixturePrior
from ppl_audit.progress import ProgressFn
from ppl_audit.report import Report
from ppl_audit.training import load_model

KIND = "confidently-wrong"


@dataclass(frozen=True)
class ConfidentlyWrongAuditSpec(RegionAuditSettings):
    """Settings of a confidently-wrong audit: :class:`RegionAuditSettings`, and

    Parameters
    ----------
    generators : str
        A per-class generator card (kind ``class-vae`` or ``class-gan``): member ``c`` makes class ``c``.
    """

    title: str = "Confidently-wrong inputs of the MNIST LeNet-5"
    generators: str = "mnist-class-vae"

    STRINGS = RegionAuditSettings.STRINGS + ("generators",)


SPEC = ConfidentlyWrongAuditSpec


def mixture_without(generators, class_names, k: str, name: str) -> ClassMixturePrior:
    """The class-mixture prior of every class but ``k``.

    Raises
    ------
    InvalidInputError
        The generators do not make one class per classifier class (a class's generator is missing).
    """
    if getattr(generators, "num_members", None) != len(class_names):
        raise InvalidInputError(f"the per-class generators make {getattr(generators, 'num_members', None)} "
                                f"classes but the classifier has {len(class_names)} ({list(class_names)}): a "
                                "'without class k' prior needs one generator per classifier class")
    return ClassMixturePrior(generators, class_names, classes=[c for c in class_names if c != k],
                             name=f"{name} without {k}")


def prior_without_by_name(*, k: str, card: str, class_names: tuple[str, ...], cache: str | None,
                          data_dir: str | None, device: str) -> ClassMixturePrior:
    """A worker's recipe for class ``k``'s prior: the generators of ``card`` (loaded once per worker) without ``k``."""
    generators = worker_generators(card, cache=cache, data_dir=data_dir, device=device)
    return mixture_without(generators, class_names, k, card)


def evaluate(spec: ConfidentlyWrongAuditSpec, *, seed: int = DEFAULT_SEED, progress: ProgressFn | None = None,
             cache: str | None = None, classifier=None, generators=None,
             data_dir: str | None = None) -> RegionResults:
    """Estimate each audited class's confidently-wrong rate and collect its finds (no rendering).

    ``classifier`` and ``generators`` (stacked per-class generators) may be given ready-made.
    """
    seed = validate_seed(seed)
    start = time.perf_counter()
    device = resolve_device(spec.device)
    check_travels(current_executor(), given=given_objects(classifier=classifier, generators=generators))
    if classifier is None:
        classifier = registry.load_classifier(spec.classifier, device=device, cache=cache, data_dir=data_dir)
    if generators is None:
        generators = load_model(spec.generators, cache=cache, data_dir=data_dir, device=str(device),
                                progress=progress, kind=GENERATOR_KINDS).module
    names = tuple(classifier.class_names)
    recipe = (prior_without_by_name, {"card": travelling(spec.generators), "class_names": names,
                                      **worker_where(cache, data_dir, device)})
    findings = sample_regions(spec, classifier, lambda k: mixture_without(generators, names, k, spec.generators),
                              seed=seed, device=device, progress=progress, recipe=recipe, cache=cache,
                              data_dir=data_dir)
    wording = Wording(KIND, "inputs of the other classes", f"the mixture of the other classes' generators "
                                                           f"({spec.generators})")
    return results(spec, seed, classifier, findings, wording, start)


def run(spec: ConfidentlyWrongAuditSpec, *, seed: int = DEFAULT_SEED, progress: ProgressFn | None = None,
        cache: str | None = None, classifier=None, generators=None, data_dir: str | None = None) -> Report:
    """``present(evaluate(spec, ...))``: the confidently-wrong audit's report."""
    return present(evaluate(spec, seed=seed, progress=progress, cache=cache, classifier=classifier,
                            generators=generators, data_dir=data_dir))


__all__ = ["ConfidentlyWrongAuditSpec", "GENERATOR_KINDS", "KIND", "SPEC", "evaluate", "mixture_without",
           "present", "prior_without_by_name", "run"]
