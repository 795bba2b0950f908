"""The graded sweep: a path of targets between two classes, sampled as a sequence of level sets.

Bayes-TrEx's graded confidence (Booth et al. 2021): where the classifier moves from ``A`` to ``B``, what do
the inputs look like, and what else does it believe on the way? Each step of the path is the level set
``P(B) = p, P(A) = 1 - p`` (the other classes near 0), sampled by SMC from the world's prior. The report
shows, per step, the samples closest to the target, and the class-probability profile along the path; on a
labelled world it adds the true share of ``B`` at each step (the calibration audit's ``q``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from ppl_audit._device import resolve_device
from ppl_audit.audits.calibration import audited_names, load_audited, pair_indices, pair_target
from ppl_audit.audits.fanout import check_travels, given_objects, level_set_unit
from ppl_audit.audits.spec import DEFAULT_SEED, spec_fields, spec_hash, validate_seed
from ppl_audit.errors import InvalidInputError
from ppl_audit.execute import current_executor
from ppl_audit.metrics import first_of_each_distinct
from ppl_audit.progress import ProgressFn
from ppl_audit.provenance import library_versions
from ppl_audit.audits.verdict import with_verdict
from ppl_audit.report import Report, Section, Table
from ppl_audit.report import figures
from ppl_audit.sampling import MAX_PARTICLES
from ppl_audit.validators import check_count

KIND = "sweep"
DEFAULT_PATH = tuple(round(0.05 + 0.1 * i, 2) for i in range(10))  # P(B) = 0.05, 0.15, ..., 0.95
MAX_STEPS = 99
MAX_IMAGES_PER_STEP = 16


@dataclass(frozen=True)
class SweepAuditSpec:
    """Settings of a graded sweep.

    Parameters
    ----------
    title : str
    world : str
        The prior (any world: built-in, a card, a file or entry point of your own, a registered name).
    classifier : str
        The classifier's model card, or a model of your own with ``classes``.
    classes : tuple of str, optional
        For a classifier of your own: its class names.
    pair : tuple of str
        ``(A, B)``: the path runs from ``A`` to ``B``.
    path : tuple of float
        ``P(B)`` at each step, at least 2, each strictly between 0 and 1 (inside the simplex).
    concentration : float
    num_particles : int
        SMC particles per step.
    images_per_step : int
        Samples shown per step, closest to the target first.
    device : str
    """

    title: str = "Graded sweep of the MNIST LeNet-5 from 1 to 7"
    world: str = "mnist-vae"
    classifier: str = "mnist-lenet5"
    classes: tuple[str, ...] | None = None
    pair: tuple[str, ...] = ("1", "7")
    path: tuple[float, ...] = DEFAULT_PATH
    concentration: float = 100.0
    num_particles: int = 1000
    images_per_step: int = 8
    device: str = "auto"

    def __post_init__(self):
        for name in ("title", "world", "classifier", "device"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise InvalidInputError(f"{name} must be a non-empty string, got {getattr(self, name)!r}")
        if isinstance(self.path, (str, bytes)) or not 2 <= len(self.path) <= MAX_STEPS:
            raise InvalidInputError(f"path must list 2 to {MAX_STEPS} values of P(B), got {self.path!r}")
        outside = [p for p in self.path if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 1]
        if outside:
            raise InvalidInputError(f"path leaves the simplex at {outside}: each P(B) must lie strictly between 0 "
                                    "and 1, with P(A) = 1 - P(B)")
        object.__setattr__(self, "path", tuple(float(p) for p in self.path))
        if isinstance(self.pair, str) or len(self.pair) != 2 or self.pair[0] == self.pair[1]:
            raise InvalidInputError(f"pair must name two different classes (A, B), got {self.pair!r}")
        object.__setattr__(self, "pair", tuple(str(c) for c in self.pair))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
        if isinstance(self.concentration, bool) or not isinstance(self.concentration, (int, float)) or not (
                math.isfinite(self.concentration) and self.concentration > 0):
            raise InvalidInputError(f"concentration must be a number > 0, got {self.concentration!r}")
        check_count(self.num_particles, "num_particles", MAX_PARTICLES, why="the documented bound")
        check_count(self.images_per_step, "images_per_step", MAX_IMAGES_PER_STEP, why="a readable figure")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (what the provenance records and hashes)."""
        return spec_fields(self)


SPEC = SweepAuditSpec


@dataclass(frozen=True)
class SweepStep:
    """One level set of the path: its target, its samples' mean prediction, its closest samples."""

    p: float
    mean_probs: tuple[float, ...]
    sd_b: float
    true_share_b: float | None
    images: torch.Tensor
    image_probs_b: tuple[float, ...]
    converged: bool
    delta: float


@dataclass(frozen=True)
class SweepResults:
    """What :func:`evaluate` measured, before any figure is drawn."""

    spec: SweepAuditSpec
    seed: int
    class_names: tuple[str, ...]
    pair: tuple[int, int]
    steps: tuple[SweepStep, ...]
    timings: dict[str, float]


def _step(world, samples, p: float, pair_b: int, world_b: int | None, shown: int) -> SweepStep:
    """Summarise one level set: mean prediction, true share of B where the world knows it, closest samples."""
    probs_b = samples.probs[:, pair_b]
    first = first_of_each_distinct(samples.latents)
    order = first[torch.argsort((probs_b[first] - p).abs(), stable=True)][:shown]
    true_share = None
    if world_b is not None:
        with torch.no_grad():
            posterior = world.class_posterior(samples.latents.to(world.device)).double().cpu()
        true_share = float(posterior[:, world_b].mean())
    return SweepStep(p=p, mean_probs=tuple(float(v) for v in samples.probs.double().mean(0)),
                     sd_b=float(probs_b.double().std()) if len(probs_b) > 1 else 0.0, true_share_b=true_share,
                     images=samples.images[order].cpu(), image_probs_b=tuple(float(v) for v in probs_b[order]),
                     converged=bool(samples.metrics.get("converged")), delta=float(samples.metrics["delta"]))


def _world_class(world, name: str) -> int | None:
    """The world's index of class ``name`` when the world is labelled and knows it, else ``None``."""
    names = tuple(getattr(world, "class_names", ()) or ())
    if not callable(getattr(world, "class_posterior", None)) or name not in names:
        return None
    return names.index(name)


def evaluate(spec: SweepAuditSpec, *, seed: int = DEFAULT_SEED, progress: ProgressFn | None = None,
             cache: str | None = None, classifier=None, world=None, data_dir: str | None = None) -> SweepResults:
    """Sample every step of the path (no rendering). ``classifier`` and ``world`` may be given ready-made."""
    seed = validate_seed(seed)
    start = time.perf_counter()
    device = resolve_device(spec.device)
    executor = current_executor()
    check_travels(executor, given=given_objects(classifier=classifier, world=world), worlds=(spec.world,))
    world, classifier = load_audited(spec, device, cache, data_dir, world, classifier)
    class_names = tuple(getattr(classifier, "class_names", None) or world.class_names)
    pair = pair_indices(spec, class_names)
    world_b = _world_class(world, class_names[pair[1]])
    names = audited_names(spec, executor, cache=cache, data_dir=data_dir, device=device)
    units = [level_set_unit(f"step {i + 1} (P({class_names[pair[1]]}) = {p:g})", names,
                            pair_target(p, pair, len(class_names)),
                            dict(concentration=spec.concentration, num_particles=spec.num_particles, method="smc",
                                 seed=seed * 1000 + i, class_names=class_names),
                            world=world, classifier=classifier, progress=progress)
             for i, p in enumerate(spec.path)]
    outcomes = executor.map(units, task="sweep steps", progress=progress)
    steps = [_step(world, samples, p, pair[1], world_b, spec.images_per_step)
             for p, (samples, _seconds) in zip(spec.path, outcomes, strict=True)]
    return SweepResults(spec=spec, seed=seed, class_names=class_names, pair=pair, steps=tuple(steps),
                        timings={"total_seconds": time.perf_counter() - start})


def _montage(results: SweepResults) -> figures.Figure:
    spec, (a, b) = results.spec, (results.class_names[i] for i in results.pair)
    columns = spec.images_per_step
    images, labels = [], []
    for step in results.steps:
        shown = step.images[:columns]
        pad = columns - len(shown)
        images.append(torch.cat([shown, shown.new_zeros(pad, *shown.shape[1:])]) if pad else shown)
        labels += [f"P({b})={v:.2f}" for v in step.image_probs_b] + [""] * pad
    return figures.image_grid(
        "steps", f"From {a} to {b}: the samples closest to each step's target",
        f"One row per step of the path (P({b}) = {', '.join(f'{s.p:g}' for s in results.steps)}), its distinct "
        "samples ranked by closeness to the target.", torch.cat(images), labels, columns=columns,
        data={"path": [s.p for s in results.steps], "probability": [list(s.image_probs_b) for s in results.steps]})


def _profile(results: SweepResults) -> figures.Figure:
    names, path = results.class_names, [s.p for s in results.steps]
    a, b = results.pair
    series = {f"P({names[b]})": (path, [s.mean_probs[b] for s in results.steps]),
              f"P({names[a]})": (path, [s.mean_probs[a] for s in results.steps]),
              "other classes": (path, [1 - s.mean_probs[a] - s.mean_probs[b] for s in results.steps]),
              "target": (path, path)}
    if all(s.true_share_b is not None for s in results.steps):
        series[f"true share of {names[b]}"] = (path, [s.true_share_b for s in results.steps])
    return figures.xy_plot(
        "profile", f"Class probabilities along the path from {names[a]} to {names[b]}",
        "The samples' mean predicted probabilities at each step, against the step's target; on a labelled world, "
        f"how often its samples truly are {names[b]}.", series, xlabel=f"target P({names[b]})",
        ylabel="mean probability", step=False)


def present(results: SweepResults) -> Report:
    """The rows of images per step, the probability profile, and a table of the steps."""
    spec, names = results.spec, results.class_names
    a, b = (names[i] for i in results.pair)
    rows = [[s.p, round(s.mean_probs[results.pair[1]], 4), round(s.sd_b, 4), round(s.delta, 4),
             None if s.true_share_b is None else round(s.true_share_b, 4), s.converged] for s in results.steps]
    table = Table("steps", "Each step of the path", ["target P(B)", f"mean P({b})", f"sd P({b})", "delta",
                                                      f"true share of {b}", "converged"], rows)
    failed = [s.p for s in results.steps if not s.converged]
    summary = (f"{len(results.steps)} level sets from {a} to {b} on {spec.world}, at concentration "
               f"{spec.concentration:g}; " + (f"steps {failed} did not pass their convergence check." if failed
                                              else "every step passed its convergence check."))
    section = Section("sweep", f"From {a} to {b}", paragraphs=[summary], tables=[table],
                      figures=[_montage(results), _profile(results)],
                      warnings=[f"Step P({b}) = {p:g} did not pass its convergence check: raise the particles "
                                "(--particles N; in the audit file, num_particles)."
                                for p in failed])
    spec_dict = spec.to_dict()
    return with_verdict(Report(kind=KIND, title=spec.title, summary=[summary],
                  metrics={"steps": [{"p": s.p, "mean_probs": list(s.mean_probs), "true_share_b": s.true_share_b,
                                      "converged": s.converged, "delta": s.delta} for s in results.steps]},
                  sections=[section],
                  provenance={"seed": results.seed, "spec": spec_dict, "spec_sha256": spec_hash(spec_dict),
                              "versions": library_versions("numpy", "matplotlib")},
                  timings=dict(results.timings)))


def run(spec: SweepAuditSpec, *, seed: int = DEFAULT_SEED, progress: ProgressFn | None = None,
        cache: str | None = None, classifier=None, world=None, data_dir: str | None = None) -> Report:
    """``present(evaluate(spec, ...))``: the graded sweep's report."""
    return present(evaluate(spec, seed=seed, progress=progress, cache=cache, classifier=classifier, world=world,
                            data_dir=data_dir))


__all__ = ["DEFAULT_PATH", "KIND", "SPEC", "SweepAuditSpec", "SweepResults", "SweepStep", "evaluate", "present",
           "run"]
