"""The level-set calibration audit: where the classifier says ``p``, how often is the class really there?

The level-set paper's first "next step" (Booth et al. 2020, Sec. 6). For a grid of targets along a pair
of classes (``P(B) = 0.1, ..., 0.9`` against ``A``; ``mode = "pair"``) or of confidence levels of single
classes (``P(k) = c``, the rest shared evenly; ``mode = "confidence"``), each level set is sampled from a
*labelled* prior: one
that knows, for every latent, the Bayes posterior of its true class (:meth:`class_posterior`; the
house/rocket world computes it from its own densities). Averaged over a level set's samples, that
posterior is the frequency ``q`` with which images the classifier calls ``p`` truly are ``B`` (or ``k``); a
calibrated classifier has ``q = p``. Each independent SMC run gives one estimate of ``q``, so their
spread gives the interval. The reliability diagram draws ``q`` over ``p``.

An image is a deterministic function of the latent here, so the true class's frequency given the image
is the class posterior given the latent, and averaging it (rather than drawing a class per sample) is the
Rao-Blackwellised estimate.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from ppl_audit._device import resolve_device
from ppl_audit.audits import worlds as registry
from ppl_audit.audits.fanout import ModelNames, check_travels, given_objects, level_set_unit
from ppl_audit.audits.spec import DEFAULT_SEED, spec_fields, spec_hash, validate_seed
from ppl_audit.errors import InvalidInputError
from ppl_audit.execute import current_executor
from ppl_audit.metrics import runs_interval_factor
from ppl_audit.progress import ProgressFn
from ppl_audit.provenance import library_versions
from ppl_audit.audits.verdict import with_verdict
from ppl_audit.report import Figure, Report, Section, Table
from ppl_audit.report import figures
from ppl_audit.sampling import MAX_PARTICLES
from ppl_audit.validators import check_count

KIND = "calibration"
DEFAULT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # P(B) along the pair, the grid
DEFAULT_CONCENTRATION = 1000.0  # a tight level set: its predictions stay within ~0.02 of the target
INTERVAL_LEVEL = 0.95  # q's interval: Student's t over the runs' estimates
# q averages a run's particles, so it carries an SMC bias of O(1 / particles per run) that the runs' spread
# does not show: on a three-class world with known answers, runs of 125 put q 2.6 SE high on average, runs
# of 500 0.4-0.8 SE and runs of 1000 about 0.5 SE (README "Calibration on level sets").
PARTICLES_PER_RUN = 500
MAX_GRID = 99
MODES = ("pair", "confidence")


@dataclass(frozen=True)
class CalibrationAuditSpec:
    """Settings of a calibration audit.

    Parameters
    ----------
    title : str
    world : str
        A labelled world (one whose prior gives each latent's class posterior): ``house-rocket``,
        ``house-rocket-circle``, or a name given to :func:`ppl_audit.audits.worlds.register_world`.
    classifier : str
        The classifier's model card (or a classifier of your own with ``classes``).
    classes : tuple of str, optional
        For a classifier of your own: its class names.
    mode : {"pair", "confidence"}
        ``pair``: one curve, ``P(B) = p`` against ``A``. ``confidence``: one curve per class ``k`` of
        ``confidence_classes``, ``P(k) = p`` with the other classes sharing ``1 - p`` evenly.
    pair : tuple of str
        ``(A, B)``: the targets put ``P(B) = p`` and ``P(A) = 1 - p``. Default the world's two classes.
        Pair mode only.
    confidence_classes : tuple of str, optional
        Confidence mode only: the classes whose confidence grids are sampled (default every class of
        the classifier).
    grid : tuple of float
        The values of ``p``, each in (0, 1).
    concentration : float
    num_particles : int
        SMC particles per level set, split into independent runs of at least ``particles_per_run`` (whose
        spread gives the interval); at least 2 runs' worth.
    particles_per_run : int
        The smallest run (default :data:`PARTICLES_PER_RUN`): smaller runs bias ``q``.
    device : str
    """

    title: str = "Calibration of the house/rocket classifier on level sets"
    world: str = "house-rocket"
    classifier: str = "house-rocket-cnn"
    classes: tuple[str, ...] | None = None
    mode: str = "pair"
    pair: tuple[str, ...] | None = None
    confidence_classes: tuple[str, ...] | None = None
    grid: tuple[float, ...] = DEFAULT_GRID
    concentration: float = DEFAULT_CONCENTRATION
    num_particles: int = 4000
    particles_per_run: int = PARTICLES_PER_RUN
    device: str = "auto"

    def __post_init__(self):
        for name in ("title", "world", "classifier", "device"):
            if not isinstance(getattr(self, name), str):
                raise InvalidInputError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.mode not in MODES:
            raise InvalidInputError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if isinstance(self.grid, (str, bytes)) or not 1 <= len(self.grid) <= MAX_GRID or not all(
                isinstance(p, (int, float)) and not isinstance(p, bool) and 0 < p < 1 for p in self.grid):
            raise InvalidInputError(f"grid must list 1 to {MAX_GRID} probabilities strictly between 0 and 1, "
                                    f"got {self.grid!r}")
        object.__setattr__(self, "grid", tuple(float(p) for p in self.grid))
        if not isinstance(self.concentration, (int, float)) or isinstance(self.concentration, bool) or not (
                math.isfinite(self.concentration) and self.concentration > 0):
            raise InvalidInputError(f"concentration must be a number > 0, got {self.concentration!r}")
        check_count(self.num_particles, "num_particles", MAX_PARTICLES, why="the documented bound")
        check_count(self.particles_per_run, "particles_per_run", MAX_PARTICLES, why="the documented bound")
        if self.num_particles < 2 * self.particles_per_run:
            raise InvalidInputError(f"num_particles must be at least {2 * self.particles_per_run} (2 runs of "
                                    f"{self.particles_per_run}, for q's interval), got {self.num_particles}")
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
        if self.pair is not None:
            if isinstance(self.pair, str) or len(self.pair) != 2 or self.pair[0] == self.pair[1]:
                raise InvalidInputError(f"pair must name two different classes (A, B), got {self.pair!r}")
            object.__setattr__(self, "pair", tuple(self.pair))
        self._check_mode_fields()

    def _check_mode_fields(self) -> None:
        """``pair`` belongs to pair mode and ``confidence_classes`` to confidence mode; never both."""
        if self.mode == "confidence" and self.pair is not None:
            raise InvalidInputError('pair applies to mode = "pair"; confidence mode takes confidence_classes')
        if self.confidence_classes is None:
            return
        if self.mode != "confidence":
            raise InvalidInputError('confidence_classes applies to mode = "confidence" only')
        names = self.confidence_classes
        if isinstance(names, str) or not names or len(set(names)) != len(names) or not all(
                isinstance(c, str) for c in names):
            raise InvalidInputError(f"confidence_classes must list distinct class names, got {names!r}")
        object.__setattr__(self, "confidence_classes", tuple(names))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (what the provenance records and hashes)."""
        return spec_fields(self)


SPEC = CalibrationAuditSpec


@dataclass(frozen=True)
class CalibrationPoint:
    """One level set of the grid: the class, its target ``p``, its true frequency ``q`` and ``q``'s interval."""

    class_name: str
    p: float
    q: float
    q_low: float
    q_high: float
    run_estimates: tuple[float, ...]
    mean_prediction: float
    converged: bool


@dataclass(frozen=True)
class CalibrationResults:
    """What :func:`evaluate` measured, before any figure is drawn."""

    spec: CalibrationAuditSpec
    seed: int
    class_names: tuple[str, ...]
    pair: tuple[int, int] | None
    points: tuple[CalibrationPoint, ...]
    timings: dict[str, float]

    @property
    def max_gap(self) -> float:
        """The largest ``|q - p|`` over the grid."""
        return max(abs(pt.q - pt.p) for pt in self.points)

    @property
    def curves(self) -> dict[str, tuple[CalibrationPoint, ...]]:
        """The points of each audited class, in grid order (one curve in pair mode)."""
        names = dict.fromkeys(pt.class_name for pt in self.points)
        return {c: tuple(pt for pt in self.points if pt.class_name == c) for c in names}


def check_labelled(world) -> None:
    """Refuse a prior that cannot say each latent's class (no ``class_posterior``)."""
    if not callable(getattr(world, "class_posterior", None)):
        raise InvalidInputError(f"a calibration audit needs a labelled prior (one with class_posterior(z)); "
                                f"{getattr(world, 'name', type(world).__name__)!r} has none")


def pair_indices(spec, class_names: tuple[str, ...]) -> tuple[int, int]:
    """The classifier's indices of ``spec.pair`` (default its first two classes), else a one-line error."""
    pair = spec.pair or class_names[:2]
    missing = [c for c in pair if c not in class_names]
    if missing:
        raise InvalidInputError(f"pair {list(pair)} names classes {missing} the classifier does not have "
                                f"({list(class_names)})")
    return class_names.index(pair[0]), class_names.index(pair[1])


def pair_target(p: float, pair: tuple[int, int], num_classes: int, floor: float = 1e-3) -> list[float]:
    """``P(B) = p`` and ``P(A) = 1 - p``, other classes at ``floor`` (the Dirichlet needs interior targets)."""
    rest = floor * (num_classes - 2)
    target = [floor] * num_classes
    target[pair[0]], target[pair[1]] = (1 - p) * (1 - rest), p * (1 - rest)
    return target


def confidence_target(p: float, k: int, num_classes: int) -> list[float]:
    """``P(k) = p`` and the other classes sharing ``1 - p`` evenly.

    Examples
    --------
    >>> confidence_target(0.6, 1, 3)
    [0.2, 0.6, 0.2]
    """
    rest = (1 - p) / (num_classes - 1)
    return [p if c == k else rest for c in range(num_classes)]


def confidence_indices(spec, class_names: tuple[str, ...]) -> tuple[int, ...]:
    """The classifier's indices of ``spec.confidence_classes`` (default all), else a one-line error."""
    wanted = spec.confidence_classes or class_names
    missing = [c for c in wanted if c not in class_names]
    if missing:
        raise InvalidInputError(f"confidence_classes {list(wanted)} name classes {missing} the classifier does "
                                f"not have ({list(class_names)})")
    return tuple(class_names.index(c) for c in wanted)


def _curves(spec, class_names: tuple[str, ...], pair: tuple[int, int] | None):
    """``[(k, target_of_p)]``: the audited class of each curve and how its targets are made."""
    num = len(class_names)
    if pair is not None:
        return [(pair[1], lambda p: pair_target(p, pair, num))]
    return [(k, lambda p, k=k: confidence_target(p, k, num)) for k in confidence_indices(spec, class_names)]


def _unit_seed(seed: int, point: int, curve: int, num_classes: int, mode: str) -> int:
    """A distinct seed per (curve, grid point) of one audit seed; pair mode keeps its seeds as they were."""
    base = seed * 1000 + point  # point < MAX_GRID < 1000
    return base if mode == "pair" else base * (num_classes + 1) + 1 + curve


def _world_index(world, name: str) -> int:
    """The world's index of class ``name``, else a one-line error (the world cannot say how often it is true)."""
    if name not in world.class_names:
        raise InvalidInputError(f"class {name!r} is not one of the world's classes {list(world.class_names)}: "
                                "the world cannot say how often it is true")
    return tuple(world.class_names).index(name)


def _point(world, samples, p: float, class_name: str, k: int, world_k: int) -> CalibrationPoint:
    """``q`` per independent run from the runs' final particles, then their mean and 95% interval."""
    chain = samples.chain
    final = chain.final_position
    runs = chain.superchains or 1
    with torch.no_grad():
        posterior = world.class_posterior(final.to(world.device))[:, world_k].double().cpu()
    per_run = posterior.reshape(runs, -1).mean(1)
    q = float(per_run.mean())
    half = runs_interval_factor(runs, INTERVAL_LEVEL) * float(per_run.std(unbiased=True) / math.sqrt(runs))
    return CalibrationPoint(class_name=class_name, p=p, q=q, q_low=max(0.0, q - half),
                            q_high=min(1.0, q + half),
                            run_estimates=tuple(round(float(v), 6) for v in per_run),
                            mean_prediction=float(samples.probs[:, k].mean()),
                            converged=bool(samples.metrics.get("converged")))


def _user_options(spec) -> dict[str, Any]:
    """How the spec's classifier is read when it is the user's own (its class names), else nothing."""
    return {"class_names": spec.classes} if registry.classifier_family(spec.classifier) == registry.USER else {}


def load_audited(spec, device, cache, data_dir, world=None, classifier=None):
    """``(world, classifier)`` of a spec with ``world``, ``classifier`` and ``classes``; given ones are kept."""
    if world is None:
        world = registry.load_world(spec.world, device=device, cache=cache, data_dir=data_dir)
    if classifier is None:
        classifier = registry.load_classifier(spec.classifier, device=device, cache=cache, data_dir=data_dir,
                                              **_user_options(spec))
    return world, classifier


def audited_names(spec, executor, *, cache, data_dir, device) -> ModelNames:
    """What a worker loads for a spec with ``world``, ``classifier`` and ``classes`` (as :func:`load_audited`).

    In process the names are labels only (the models may have been given as objects under any name), so
    they are read as card or file names only for a remote executor.
    """
    options = _user_options(spec) if executor.remote else None
    return ModelNames.of(spec.classifier, spec.world, cache=cache, data_dir=data_dir, device=device,
                         classifier_options=options)


def evaluate(spec: CalibrationAuditSpec, *, seed: int = DEFAULT_SEED, progress: ProgressFn | None = None,
             cache: str | None = None, classifier=None, world=None, data_dir: str | None = None) -> CalibrationResults:
    """Sample the grid's level sets and estimate each one's true-class frequency (no rendering).

    ``classifier`` and ``world`` may be given ready-made instead of by name.
    """
    seed = validate_seed(seed)
    start = time.perf_counter()
    device = resolve_device(spec.device)
    executor = current_executor()
    check_travels(executor, given=given_objects(classifier=classifier, world=world), worlds=(spec.world,))
    world, classifier = load_audited(spec, device, cache, data_dir, world, classifier)
    check_labelled(world)
    class_names = tuple(getattr(classifier, "class_names", None) or world.class_names)
    pair = pair_indices(spec, class_names) if spec.mode == "pair" else None
    curves = _curves(spec, class_names, pair)
    world_index = {k: _world_index(world, class_names[k]) for k, _ in curves}  # all checked before sampling
    names = audited_names(spec, executor, cache=cache, data_dir=data_dir, device=device)
    units = [level_set_unit(f"{class_names[k]}/point {i + 1} (p = {p:g})", names, target_of(p),
                            dict(concentration=spec.concentration, num_particles=spec.num_particles, method="smc",
                                 options={"min_particles_per_run": spec.particles_per_run}, class_names=class_names,
                                 seed=_unit_seed(seed, i, j, len(class_names), spec.mode)),
                            world=world, classifier=classifier, progress=progress)
             for j, (k, target_of) in enumerate(curves) for i, p in enumerate(spec.grid)]
    outcomes = iter(executor.map(units, task="calibration points", progress=progress))
    points = [_point(world, next(outcomes)[0], p, class_names[k], k, world_index[k])
              for k, _ in curves for p in spec.grid]
    return CalibrationResults(spec=spec, seed=seed, class_names=class_names, pair=pair, points=tuple(points),
                              timings={"total_seconds": time.perf_counter() - start})


def _label(results: CalibrationResults) -> tuple[str, str]:
    """What ``p`` is and what a curve is, in the report's words."""
    if results.pair is None:
        return "P(k) said by the classifier", "each class k's confidence against the rest"
    a, b = (results.class_names[i] for i in results.pair)
    return f"P({b}) said by the classifier", f"{b} against {a}"


def _reliability_figure(results: CalibrationResults) -> Figure:
    """``q`` over ``p`` per curve against the diagonal; one curve also draws its 95% band."""
    grid, (said, what) = list(results.spec.grid), _label(results)
    series = {}
    for name, points in results.curves.items():
        series[f"q ({name})"] = (grid, [pt.q for pt in points])
        if len(results.curves) == 1:
            series["q 95% low"] = (grid, [pt.q_low for pt in points])
            series["q 95% high"] = (grid, [pt.q_high for pt in points])
    series["calibrated"] = (grid, grid)
    caption = ("For each target p, the frequency q with which the level set's images truly are the class (the "
               "prior's class posterior averaged over its samples), against the diagonal of a calibrated "
               "classifier. " + ("The band is q's 95% interval over independent SMC runs."
                                 if len(results.curves) == 1 else "Each class's intervals are in the table."))
    return figures.xy_plot("reliability", f"Reliability over level sets: {what}", caption, series,
                           xlabel=f"p = {said}", ylabel="q = true frequency of the class", step=False)


def _verdict(results: CalibrationResults) -> str:
    """The largest gap, and where ``p`` falls outside ``q``'s interval."""
    outside = [(pt.class_name, pt.p) for pt in results.points if not pt.q_low <= pt.p <= pt.q_high]
    where = (", ".join(f"p = {p}" if results.pair else f"{c} at p = {p}" for c, p in outside))
    return (f"Largest gap |q - p| = {results.max_gap:.3f}; "
            + (f"p lies outside q's 95% interval at {where}: miscalibrated there." if outside else
               "p lies within q's 95% interval everywhere: calibrated on this world, to the runs' precision."))


def present(results: CalibrationResults) -> Report:
    """The reliability diagram over level sets, the table of ``p``, ``q`` and intervals, and the verdict."""
    spec = results.spec
    rows = [[pt.class_name, pt.p, round(pt.q, 4), round(pt.q_low, 4), round(pt.q_high, 4),
             round(pt.mean_prediction, 4), pt.q_low <= pt.p <= pt.q_high, pt.converged] for pt in results.points]
    said, what = _label(results)
    table = Table("calibration", f"{said} (p) and true on its level set (q): {what}",
                  ["class", "p", "q", "q 95% low", "q 95% high", "mean prediction", "p within interval",
                   "converged"], rows)
    verdict = _verdict(results)
    section = Section("calibration", "Calibration on level sets", paragraphs=[verdict], tables=[table],
                      figures=[_reliability_figure(results)],
                      warnings=[f"Level set {pt.class_name} at p = {pt.p} did not pass its convergence check; "
                                "its q is uncertain; raise the particles (--particles N; in the audit file, "
                                "num_particles)." for pt in results.points if not pt.converged])
    spec_dict = spec.to_dict()
    gaps = {name: round(max(abs(pt.q - pt.p) for pt in points), 6) for name, points in results.curves.items()}
    return with_verdict(Report(kind=KIND, title=spec.title, summary=[
        f"Level sets of {spec.classifier} on the labelled world {spec.world!r} ({what}), at concentration "
        f"{spec.concentration:g}: {verdict}"],
        metrics={"max_gap": round(results.max_gap, 6), "max_gap_by_class": gaps,
                 "points": [pt.__dict__ for pt in results.points]},
        sections=[section],
        provenance={"seed": results.seed, "spec": spec_dict, "spec_sha256": spec_hash(spec_dict),
                    "versions": library_versions("numpy", "matplotlib")},
        timings=dict(results.timings)))


def run(spec: CalibrationAuditSpec, *, seed: int = DEFAULT_SEED, progress: ProgressFn | None = None,
        cache: str | None = None, classifier=None, world=None, data_dir: str | None = None) -> Report:
    """``present(evaluate(spec, ...))``: the calibration audit's report."""
    return present(evaluate(spec, seed=seed, progress=progress, cache=cache, classifier=classifier, world=world,
                            data_dir=data_dir))


__all__ = ["CalibrationAuditSpec", "CalibrationPoint", "CalibrationResults", "DEFAULT_GRID", "KIND", "MODES",
           "PARTICLES_PER_RUN", "SPEC", "check_labelled", "confidence_indices", "confidence_target", "evaluate",
           "load_audited", "pair_indices", "pair_target", "present", "run"]
