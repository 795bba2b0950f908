"""The GWIN audit: reject uncertain inputs, re-map them with a conditional WGAN-GP, relabel.

Cosentino & Zhu (2019) pair a Bayesian classifier's reject option with a
Generative Well-intentioned Network: inputs whose certainty is below ``tau``
are transformed by ``G(x, z)`` into the classifier's confident distribution
and labelled again. For every ``tau`` this audit reports the paper's Table 1
columns (% rejected, the BNN's accuracy on the rejected subset, BNN+GWIN's,
their difference, the overall accuracy change and the % change in error) as
mean +- standard deviation over ``runs`` repetitions, with the paper's
BNN+GWIN figures beside ours; accuracy against ``tau`` (the paper's Figure
3); the ground-truth-class certainty of rejected inputs before and after the
transformation (Figure 5); rejected inputs beside their transformations;
and the BNN's ELBO curve.

**What varies between runs.** Each run draws new posterior weights for the
BNN's ``S``-draw predictions (before and after the transformation) and new
GWIN noise ``z``; the trained BNN and GWIN are the same in every run
(retraining them ``R`` times is out of a 2-core CPU's reach). The spread is
therefore the Monte Carlo spread of the inference pipeline.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np
import torch

from ppl_audit._device import resolve_device
from ppl_audit.audits.spec import DEFAULT_SEED, spec_hash, validate_seed
from ppl_audit.classifiers.base import check_images
from ppl_audit.classifiers.bayesian_lenet import (
    DEFAULT_CARD as DEFAULT_CLASSIFIER,
    KIND as CLASSIFIER_KIND,
    BayesianClassifier,
    check_num_samples,
    check_threshold,
    median_probability,
)
from ppl_audit.errors import InvalidInputError
from ppl_audit.provenance import library_versions
from ppl_audit.progress import ProgressFn, report
from ppl_audit.audits.verdict import with_verdict
from ppl_audit.report import Report, Section, Table
from ppl_audit.report import figures
from ppl_audit.training import load_model

KIND = "gwin"
DEFAULT_GWIN = "mnist-gwin"
PAPER_TAUS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)  # the thresholds of the paper's MNIST table
#: the paper's BNN+GWIN accuracy on the rejected subset (%), MNIST, per tau in PAPER_TAUS
PAPER_GWIN_ACCURACY = {0.5: 75.59, 0.7: 85.07, 0.8: 86.30, 0.9: 86.95, 0.95: 89.34, 0.99: 92.55}
PAPER_BNN_TEST_ACCURACY = 98.0  # the paper's Bayesian LeNet-5 on MNIST (%)
EXAMPLE_IMAGES = 16  # rejected inputs shown beside their transformations
TASK = "GWIN runs"  # progress task name


@dataclass(frozen=True)
class GwinAuditSpec:
    """What a GWIN audit runs.

    Parameters
    ----------
    title : str
    classifier : str
        Card of the Bayesian classifier (kind ``bayesian-lenet-classifier``).
    gwin : str
        Card of the GWIN (kind ``gwin``) trained against that classifier.
    dataset, split : str
        The labelled images audited (default: the 10,000 MNIST test digits).
    num_images : int, optional
        Keep only the first N images (all when absent).
    taus : tuple of float
        Certainty thresholds: an input is rejected when its certainty is below tau.
    num_samples : int
        ``S``, posterior weight draws per prediction (the paper's 10).
    runs : int
        ``R``, repetitions of the inference pipeline (the paper's 10).
    figure_tau : float
        The threshold whose rejected inputs the certainty histogram and the
        image pairs show; one of ``taus``.
    device : str
    data_dir : str, optional
        Data folder (the command line's ``--data-dir`` wins).
    """

    title: str = "GWIN: rejecting and re-mapping uncertain MNIST digits"
    classifier: str = DEFAULT_CLASSIFIER
    gwin: str = DEFAULT_GWIN
    dataset: str = "mnist"
    split: str = "test"
    num_images: int | None = None
    taus: tuple[float, ...] = PAPER_TAUS
    num_samples: int = 10
    runs: int = 10
    figure_tau: float = 0.8
    device: str = "auto"
    data_dir: str | None = None

    def __post_init__(self):
        if not isinstance(self.taus, tuple) or not self.taus:
            raise InvalidInputError(f"taus must be a non-empty list of thresholds, got {self.taus!r}")
        for tau in self.taus:
            check_threshold(tau, "each of taus")
        if list(self.taus) != sorted(set(self.taus)):
            raise InvalidInputError(f"taus must be increasing with no repeats, got {list(self.taus)}")
        check_threshold(self.figure_tau, "figure_tau")
        if self.figure_tau not in self.taus:
            raise InvalidInputError(f"figure_tau must be one of taus {list(self.taus)}, got {self.figure_tau}")
        check_num_samples(self.num_samples)
        if not isinstance(self.runs, int) or isinstance(self.runs, bool) or self.runs <= 0:
            raise InvalidInputError(f"runs must be a positive integer, got {self.runs!r}")
        if self.num_images is not None and (not isinstance(self.num_images, int) or self.num_images <= 0):
            raise InvalidInputError(f"num_images must be a positive integer (or absent: all), got {self.num_images!r}")


SPEC = GwinAuditSpec  # the [audit] table's dataclass (audits.spec.spec_from_toml)


# --------------------------------------------------------------------------- the computation


@dataclass(frozen=True)
class GwinRuns:
    """Per-run outcomes of the reject-transform-relabel pipeline.

    Attributes
    ----------
    taus : tuple of float
    rejected : numpy.ndarray, (R, T)
        Fraction of inputs rejected at each tau.
    bnn_accuracy, gwin_accuracy : numpy.ndarray, (R, T)
        Accuracy on the rejected subset of the BNN's own labels and of its
        labels of the transformed inputs (NaN where nothing was rejected).
    base_accuracy : numpy.ndarray, (R,)
        The BNN's accuracy on every input (no reject option).
    pipeline_accuracy : numpy.ndarray, (R, T)
        Accuracy on every input when rejected inputs are transformed and relabelled.
    certainty_before, certainty_after : torch.Tensor
        Ground-truth-class certainty (median over draws of the true class's
        probability) of the inputs rejected at ``figure_tau`` in the first run,
        before and after the transformation.
    examples : torch.Tensor
        ``(2, n, 1, 28, 28)``: up to ``EXAMPLE_IMAGES`` of those inputs and their transformations.
    example_labels : list of str
        ``"true y: before -> after"`` per example.
    """

    taus: tuple[float, ...]
    rejected: np.ndarray
    bnn_accuracy: np.ndarray
    gwin_accuracy: np.ndarray
    base_accuracy: np.ndarray
    pipeline_accuracy: np.ndarray
    certainty_before: torch.Tensor
    certainty_after: torch.Tensor
    examples: torch.Tensor
    example_labels: list[str]


def _mean_where(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float(values[mask].float().mean()) if bool(mask.any()) else math.nan


class _Pass(NamedTuple):
    """One run's two predictions: of the inputs, and of the transformed ones rejected at the widest tau."""

    before: Any  # the classifier's Prediction of every input
    widest: torch.Tensor  # (N,) bool: rejected at the largest tau, so transformed
    moved: torch.Tensor | None  # G(x, z) of those inputs (None when none was rejected)
    labels_after: torch.Tensor  # (N,) labels once rejected inputs are relabelled
    truth_after: torch.Tensor  # (N,) true-class certainty after the transformation (NaN where not transformed)


def _one_pass(classifier, transform, images, labels, widest_tau: float, num_samples: int,
              generator: torch.Generator) -> _Pass:
    """Classify, transform what falls below ``widest_tau``, classify that again; every draw from ``generator``."""
    before = classifier.predict(images, num_samples, generator=generator)
    widest = before.certainty < widest_tau
    subset = images[widest.to(images.device)]
    labels_after = before.labels.clone()
    truth_after = torch.full((images.shape[0],), math.nan, device=labels.device)
    moved = None
    if len(subset):
        moved = transform(subset, generator)
        after = classifier.predict(moved, num_samples, generator=generator)
        labels_after[widest] = after.labels
        truth_after[widest] = median_probability(after.samples, labels[widest])
    return _Pass(before, widest, moved, labels_after, truth_after)


def _figure_data(classifier, images, labels, first: _Pass, figure_tau: float) -> dict[str, Any]:
    """The first run's inputs rejected at ``figure_tau``: true-class certainty before and after, examples, labels."""
    before = first.before
    mask = before.certainty < figure_tau
    truth_before = median_probability(before.samples, labels)
    figure = {"before": truth_before[mask].cpu(), "after": first.truth_after[mask].cpu()}
    shown = mask.nonzero().flatten()[:EXAMPLE_IMAGES]
    if len(shown):
        index_in_subset = first.widest.cumsum(0)[shown] - 1
        figure["examples"] = torch.stack([images[shown.to(images.device)].cpu(),
                                          first.moved[index_in_subset.to(first.moved.device)].cpu()])
    else:
        figure["examples"] = torch.zeros(2, 0, 1, 28, 28)
    names = classifier.class_names
    figure["labels"] = [f"true {names[int(labels[i])]}: {names[int(before.labels[i])]} -> "
                        f"{names[int(first.labels_after[i])]}" for i in shown]
    return figure


def evaluate_gwin(
    classifier: BayesianClassifier,
    transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    taus=PAPER_TAUS,
    num_samples: int = 10,
    runs: int = 10,
    figure_tau: float = 0.8,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> GwinRuns:
    """Run classify -> reject below tau -> transform -> relabel ``runs`` times (Cosentino & Zhu, Sec. 3.3).

    The inputs rejected at the largest tau are transformed once per run (the
    rejected set at a smaller tau is a subset of it), so each run costs two
    ``S``-draw predictions of the inputs and one generator pass over the
    rejected ones.

    Parameters
    ----------
    classifier : BayesianClassifier
    transform : callable
        ``transform(x, generator) -> x'``: the GWIN's ``G(x, z)`` with ``z`` drawn from ``generator``.
    images, labels : torch.Tensor
        ``(N, 1, 28, 28)`` in ``[0, 1]`` and ``(N,)`` class indices.
    taus : sequence of float
    num_samples, runs : int
    figure_tau : float
    seed : int
        Run ``r`` draws from ``torch.Generator().manual_seed(seed * 1000 + r)``.
    progress : callable, optional

    Returns
    -------
    GwinRuns

    Examples
    --------
    >>> from ppl_audit.classifiers.bayesian_lenet import BayesianLeNet
    >>> clf = BayesianClassifier(BayesianLeNet(conv_channels=(2, 4), hidden=(8, 8)))
    >>> out = evaluate_gwin(clf, lambda x, g: x, torch.rand(20, 1, 28, 28), torch.zeros(20, dtype=torch.long),
    ...                     taus=(0.5, 0.9), num_samples=2, runs=2, figure_tau=0.9)
    >>> out.rejected.shape
    (2, 2)
    """
    check_images(images, (1, 28, 28))
    if labels.shape != (images.shape[0],):
        raise InvalidInputError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
    if images.shape[0] == 0:
        raise InvalidInputError("no images to audit")
    taus = tuple(check_threshold(t) for t in taus)
    labels = labels.to(classifier.device)
    shape = (runs, len(taus))
    rejected, bnn_acc, gwin_acc, pipeline = (np.full(shape, math.nan) for _ in range(4))
    base = np.zeros(runs)
    figure = {}
    for r in range(runs):
        one = _one_pass(classifier, transform, images, labels, max(taus), num_samples,
                        torch.Generator().manual_seed(seed * 1000 + r))
        correct_before = one.before.labels == labels
        base[r] = float(correct_before.float().mean())
        correct_after = one.labels_after == labels
        for j, tau in enumerate(taus):
            mask = one.before.certainty < tau
            rejected[r, j] = float(mask.float().mean())
            bnn_acc[r, j] = _mean_where(correct_before, mask)
            gwin_acc[r, j] = _mean_where(correct_after, mask)
            pipeline[r, j] = float(torch.where(mask, correct_after, correct_before).float().mean())
        if r == 0:
            figure = _figure_data(classifier, images, labels, one, figure_tau)
        report(progress, TASK, r + 1, runs)
    return GwinRuns(taus, rejected, bnn_acc, gwin_acc, base, pipeline, figure["before"], figure["after"],
                    figure["examples"], figure["labels"])


def summarise(result: GwinRuns) -> list[dict[str, Any]]:
    """One row per tau of the paper's table: mean and standard deviation over runs, in percent.

    ``overall_accuracy_change_points`` is the pipeline's accuracy minus the
    BNN's on every input (percentage points); ``error_change_percent`` is the
    relative change of the error rate, ``100 (e_pipeline - e_bnn) / e_bnn``.
    Standard deviations are over runs (``ddof = 1``; 0 for one run).
    """

    def stats(values: np.ndarray) -> tuple[float | None, float | None]:
        finite = values[np.isfinite(values)]
        if not len(finite):
            return None, None
        std = float(finite.std(ddof=1)) if len(finite) > 1 else 0.0
        return round(float(finite.mean()), 4), round(std, 4)

    base_error = 1 - result.base_accuracy[:, None]
    columns = {
        "rejected_percent": 100 * result.rejected,
        "bnn_accuracy_rejected_percent": 100 * result.bnn_accuracy,
        "gwin_accuracy_rejected_percent": 100 * result.gwin_accuracy,
        "accuracy_difference_points": 100 * (result.gwin_accuracy - result.bnn_accuracy),
        "overall_accuracy_change_points": 100 * (result.pipeline_accuracy - result.base_accuracy[:, None]),
        "error_change_percent": np.where(base_error > 0, 100 * ((1 - result.pipeline_accuracy) - base_error)
                                         / np.where(base_error > 0, base_error, 1), math.nan),
    }
    rows = []
    for j, tau in enumerate(result.taus):
        row: dict[str, Any] = {"tau": tau}
        for key, values in columns.items():
            row[f"{key}_mean"], row[f"{key}_std"] = stats(values[:, j])
        paper = PAPER_GWIN_ACCURACY.get(tau)
        row["paper_gwin_accuracy_rejected_percent"] = paper
        mean = row["gwin_accuracy_rejected_percent_mean"]
        row["at_or_above_paper"] = None if paper is None or mean is None else bool(mean >= paper)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- the audit's numbers


@dataclass(frozen=True)
class TrainingRecord:
    """What a report shows of a trained model: its card, training curves and scalar training metrics.

    Attributes
    ----------
    card, recipe_hash, description : str
        The model card's name, recipe hash and description.
    info : dict
        The cache sidecar's ``info`` (its ``history`` holds the training curves).
    metrics : dict
        The training metrics that are single numbers or strings, wall-clock times left out.
    """

    card: str
    recipe_hash: str
    description: str
    info: dict[str, Any]
    metrics: dict[str, Any]


def _training_record(trained) -> TrainingRecord:
    """The :class:`TrainingRecord` of a :class:`~ppl_audit.training.TrainedModel`."""
    card = trained.card
    metrics = {k: v for k, v in trained.metrics.items() if not isinstance(v, (list, dict)) and "seconds" not in k}
    return TrainingRecord(card.name, card.recipe_hash, card.description, trained.info, metrics)


@dataclass(frozen=True)
class GwinResults:
    """What a GWIN audit measured, before any table or figure is drawn (:func:`evaluate`).

    Attributes
    ----------
    spec : GwinAuditSpec
    seed : int
    device : str
        The device type the pipeline ran on (``"cpu"``, ``"cuda"``).
    num_images : int
        How many labelled images were audited.
    outcomes : GwinRuns
        Every run's outcomes at every tau, and the figure data of run 1.
    rows : list of dict
        :func:`summarise` of ``outcomes``: one row per tau, mean and standard deviation over runs.
    bnn_accuracy_percent : float
        The BNN's accuracy on every input, mean over runs (%, unrounded).
    classifier_training, gwin_training : TrainingRecord or None
        The Bayesian classifier's and the GWIN's cards and training curves (None when a model without its
        card was given).
    timings : dict
        Seconds per stage.
    started : float
        ``time.perf_counter()`` when the audit began, so that the report's ``total_seconds`` counts rendering too.
    """

    spec: GwinAuditSpec
    seed: int
    device: str
    num_images: int
    outcomes: GwinRuns
    rows: list[dict[str, Any]]
    bnn_accuracy_percent: float
    classifier_training: TrainingRecord | None
    gwin_training: TrainingRecord | None
    timings: dict[str, float]
    started: float


def evaluate(
    spec: GwinAuditSpec,
    *,
    seed: int = DEFAULT_SEED,
    progress: ProgressFn | None = None,
    cache: str | None = None,
    data_dir: str | None = None,
    classifier: BayesianClassifier | None = None,
    gwin=None,
    images: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> GwinResults:
    """Run the reject-transform-relabel pipeline ``spec.runs`` times and summarise it; nothing is drawn.

    Parameters are those of :func:`run`; :func:`present` renders the result.

    Returns
    -------
    GwinResults

    Examples
    --------
    >>> results = evaluate(GwinAuditSpec(runs=2), data_dir="/path/to/data")  # doctest: +SKIP
    >>> results.rows[0]["gwin_accuracy_rejected_percent_mean"]  # doctest: +SKIP
    """
    seed = validate_seed(seed)
    start = time.perf_counter()
    device = resolve_device(spec.device)
    data_dir = data_dir if data_dir is not None else spec.data_dir
    timings: dict[str, float] = {}
    if classifier is None:
        classifier = load_model(spec.classifier, cache=cache, data_dir=data_dir, device=device, progress=progress,
                                kind=CLASSIFIER_KIND).model
    if gwin is None:
        gwin = load_model(spec.gwin, cache=cache, data_dir=data_dir, device=device, progress=progress, kind="gwin")
    timings["models_seconds"] = time.perf_counter() - start
    if images is None:
        from ppl_audit.data import load_dataset

        data = load_dataset(spec.dataset, spec.split, data_dir=data_dir, limit=spec.num_images)
        images = (data.images, data.labels)
    x, y = images[0].to(device), images[1].to(device)
    t0 = time.perf_counter()
    outcomes = evaluate_gwin(classifier, gwin.module.transform, x, y, taus=spec.taus, num_samples=spec.num_samples,
                             runs=spec.runs, figure_tau=spec.figure_tau, seed=seed, progress=progress)
    timings["pipeline_seconds"] = time.perf_counter() - t0
    trained_classifier = getattr(classifier, "trained", None)
    return GwinResults(
        spec=spec, seed=seed, device=device.type, num_images=int(len(y)), outcomes=outcomes,
        rows=summarise(outcomes), bnn_accuracy_percent=float(100 * outcomes.base_accuracy.mean()),
        classifier_training=None if trained_classifier is None else _training_record(trained_classifier),
        gwin_training=None if getattr(gwin, "card", None) is None else _training_record(gwin),
        timings=timings, started=start,
    )


# --------------------------------------------------------------------------- the report


def _pm(mean, std, digits=2) -> str:
    return "n/a" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _table(rows: list[dict[str, Any]]) -> Table:
    columns = ["tau", "% rejected", "BNN acc. on rejected (%)", "BNN+GWIN acc. on rejected (%)",
               "difference (points)", "overall acc. change (points)", "% change in error",
               "paper BNN+GWIN (%)"]
    keys = ["rejected_percent", "bnn_accuracy_rejected_percent", "gwin_accuracy_rejected_percent",
            "accuracy_difference_points", "overall_accuracy_change_points", "error_change_percent"]
    body = []
    for row in rows:
        body.append([row["tau"], *[_pm(row[f"{k}_mean"], row[f"{k}_std"]) for k in keys],
                     row["paper_gwin_accuracy_rejected_percent"]])
    return Table("gwin_table", "Reject, transform, relabel (mean ± std over runs; the paper's Table 1 layout)",
                 columns, body)


def _warnings(rows: list[dict[str, Any]]) -> list[str]:
    """A warning per tau where nothing was rejected or BNN+GWIN falls below the paper."""
    warnings = []
    for row in rows:
        if row["gwin_accuracy_rejected_percent_mean"] is None:
            warnings.append(f"nothing was rejected at tau = {row['tau']}: no accuracy on the rejected subset")
        elif row["at_or_above_paper"] is False:
            warnings.append(f"at tau = {row['tau']}, BNN+GWIN accuracy on the rejected subset "
                            f"{row['gwin_accuracy_rejected_percent_mean']:.2f}% is below the paper's "
                            f"{row['paper_gwin_accuracy_rejected_percent']}%")
    return warnings


def _table_section(results: GwinResults) -> Section:
    """The paper's Table 1 layout over every tau, with how the pipeline ran and the BNN's own accuracy."""
    spec = results.spec
    return Section(
        "table", "Rejected inputs before and after GWIN",
        paragraphs=[
            f"{results.num_images} images ({spec.dataset} {spec.split}); S = {spec.num_samples} posterior draws per "
            f"prediction; R = {spec.runs} runs (new weight draws and GWIN noise per run; the trained models are "
            "fixed). An input is rejected when its certainty (median over draws of the predicted class's "
            "probability) is below tau; rejected inputs are transformed by G(x, z) and labelled again by the same "
            "BNN.",
            f"The BNN alone is right on {results.bnn_accuracy_percent:.2f}% of the inputs (paper: "
            f"{PAPER_BNN_TEST_ACCURACY}%). 'overall acc. change' is the pipeline's accuracy on all inputs minus "
            "that; '% change in error' is the relative change of the error rate.",
        ],
        tables=[_table(results.rows)], warnings=_warnings(results.rows),
    )


def _accuracy_figure(rows: list[dict[str, Any]], taus: list[float]):
    """Accuracy on the rejected subset against tau, BNN and BNN+GWIN, the paper's values beside (its Figure 3)."""
    return figures.errorbar_plot(
        "accuracy_vs_tau", "Accuracy on the rejected subset against tau",
        "The BNN's accuracy on the inputs it rejects, and after GWIN transforms them (mean ± std over runs); "
        "hollow squares: the paper's BNN+GWIN values (its Figure 3).",
        taus,
        {label: ([row[f"{key}_mean"] if row[f"{key}_mean"] is not None else math.nan for row in rows],
                 [row[f"{key}_std"] if row[f"{key}_std"] is not None else 0.0 for row in rows])
         for label, key in (("BNN", "bnn_accuracy_rejected_percent"),
                            ("BNN+GWIN", "gwin_accuracy_rejected_percent"))},
        xlabel="certainty threshold tau", ylabel="accuracy on rejected (%)",
        reference={"paper BNN+GWIN": [PAPER_GWIN_ACCURACY.get(t, math.nan) for t in taus]},
    )


def _certainty_figure(outcomes: GwinRuns, figure_tau: float):
    """True-class certainty of run 1's rejected inputs before and after the transformation (the paper's Figure 5)."""
    change = outcomes.certainty_after - outcomes.certainty_before
    return figures.score_histogram(
        "ground_truth_certainty", f"Ground-truth certainty of inputs rejected at tau = {figure_tau}",
        "Median over posterior draws of the true class's probability, before and after the GWIN transformation "
        f"(run 1; the paper's Figure 5). Mean change {float(change.mean()) if len(change) else math.nan:+.3f}; "
        f"{int((change > 0).sum())} of {len(change)} inputs gained certainty in their true class.",
        {"before GWIN": outcomes.certainty_before, "after GWIN": outcomes.certainty_after},
        xlabel="certainty of the true class",
    )


def _example_figures(outcomes: GwinRuns, figure_tau: float) -> list:
    """Rejected inputs above their transformations (no figure when nothing was rejected at ``figure_tau``)."""
    if not outcomes.examples.shape[1]:
        return []
    n_show = outcomes.examples.shape[1]
    return [figures.image_grid(
        "rejected_examples", f"Inputs rejected at tau = {figure_tau} (row 1) and G(x, z) (row 2)",
        "Each column: a rejected test image and its transformation; labels read 'true y: BNN label before -> "
        "after'.", outcomes.examples.reshape(-1, 1, 28, 28),
        [*outcomes.example_labels, *["G(x, z)"] * n_show], columns=n_show)]


def _figure_section(results: GwinResults) -> Section:
    """Accuracy against tau, the certainty change and the examples."""
    spec, outcomes = results.spec, results.outcomes
    return Section("figures", "Accuracy against tau, certainty change, examples",
                   figures=[_accuracy_figure(results.rows, list(spec.taus)),
                            _certainty_figure(outcomes, spec.figure_tau),
                            *_example_figures(outcomes, spec.figure_tau)])


def _model_section(trained: TrainingRecord, title: str, paragraphs: list[str]) -> Section:
    """A trained model's training curves and metrics, named after its card."""
    from ppl_audit.training import curve_figures

    figs = curve_figures(trained.info, prefix=f"{trained.card.replace('-', '_')}_curve",
                         caption_note=f" ({trained.card}, recipe {trained.recipe_hash})")
    return Section(trained.card.replace("-", "_"), title, paragraphs=paragraphs, metrics=trained.metrics,
                   figures=figs)


def present(results: GwinResults) -> Report:
    """The GWIN audit's :class:`~ppl_audit.report.Report` from its numbers: table, figures, training curves.

    Parameters
    ----------
    results : GwinResults
        From :func:`evaluate`; left unchanged. Nothing here draws a random number: the same results give
        the same report.

    Returns
    -------
    Report

    Examples
    --------
    >>> report = present(evaluate(GwinAuditSpec(runs=2), data_dir="/path/to/data"))  # doctest: +SKIP
    """
    spec, rows = results.spec, results.rows
    sections = [_table_section(results), _figure_section(results)]
    if results.classifier_training is not None:
        sections.append(_model_section(
            results.classifier_training, "The Bayesian LeNet-5 (ELBO curve)",
            ["Pyro model with Normal(0, prior_scale) priors on every weight, a mean-field Gaussian guide, SVI with "
             "the Flipout estimator of the expected log-likelihood and the KL in closed form."]))
    if results.gwin_training is not None:
        sections.append(_model_section(results.gwin_training, "The GWIN (training curves)",
                                       [results.gwin_training.description]))
    paper_met = [row["at_or_above_paper"] for row in rows if row["at_or_above_paper"] is not None]
    base_mean = results.bnn_accuracy_percent
    metrics = {
        "bnn_accuracy_percent": round(base_mean, 4),
        "num_images": results.num_images,
        "num_samples": spec.num_samples,
        "runs": spec.runs,
        "taus": rows,
        "at_or_above_paper_count": int(sum(paper_met)),
        "paper_comparisons": len(paper_met),
    }
    spec_dict = dataclasses.asdict(spec)
    return with_verdict(Report(
        kind=KIND,
        title=spec.title,
        summary=[
            f"BNN accuracy {base_mean:.2f}% on {results.num_images} images; BNN+GWIN accuracy on the rejected "
            f"subset at or above the paper's at {sum(paper_met)} of {len(paper_met)} thresholds.",
        ],
        metrics=metrics,
        sections=sections,
        provenance={"seed": results.seed, "spec": spec_dict, "spec_sha256": spec_hash(spec_dict),
                    "versions": library_versions("numpy", "matplotlib"),
                    "device": results.device},
        timings={**results.timings, "total_seconds": time.perf_counter() - results.started},
    ))


def run(
    spec: GwinAuditSpec,
    *,
    seed: int = DEFAULT_SEED,
    progress: ProgressFn | None = None,
    cache: str | None = None,
    data_dir: str | None = None,
    classifier: BayesianClassifier | None = None,
    gwin=None,
    images: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Report:
    """Run the GWIN audit and return its :class:`~ppl_audit.report.Report`: ``present(evaluate(...))``.

    Parameters
    ----------
    spec : GwinAuditSpec
    seed : int
    progress : callable, optional
    cache : str, optional
        Weights cache folder.
    data_dir : str, optional
        Data folder (wins over ``spec.data_dir``): the audited images, and the
        training data of models not yet cached.
    classifier : BayesianClassifier, optional
        Use this classifier instead of loading ``spec.classifier``.
    gwin : TrainedModel, optional
        Use this trained GWIN instead of loading ``spec.gwin``.
    images : (torch.Tensor, torch.Tensor), optional
        Audit these ``(images, labels)`` instead of the spec's dataset.

    Examples
    --------
    >>> report = run(GwinAuditSpec(runs=2), data_dir="/path/to/data")  # doctest: +SKIP
    """
    return present(evaluate(spec, seed=seed, progress=progress, cache=cache, data_dir=data_dir,
                            classifier=classifier, gwin=gwin, images=images))


__all__ = ["SPEC", "GwinAuditSpec", "GwinResults", "GwinRuns", "KIND", "PAPER_GWIN_ACCURACY", "PAPER_TAUS", "TrainingRecord",
           "evaluate", "evaluate_gwin", "present", "run", "summarise"]
