"""Metrics of level-set samples (average deviation, confidence, distinct samples) and of OoD scores."""

from __future__ import annotations

import math

import numpy as np
import torch

from ppl_audit.errors import InvalidInputError, ModelOutputError

AMBIGUOUS_BAND = (0.45, 0.55)  # a prediction this close to 1/2 counts as "ambiguous" (the 45-55%)


def average_deviation(probs: torch.Tensor, target: torch.Tensor) -> float:
    """Average deviation Delta of predictions from the target (Booth et al. Eq. 5).

    ``Delta = 1 / (n K) * sum_i sum_k |f_k(x_i) - p_k|``: the mean absolute
    gap per class and sample; for two classes it is ``mean_i |f_1(x_i) - p_1|``.

    Examples
    --------
    >>> round(average_deviation(torch.tensor([[0.4, 0.6], [0.6, 0.4]]), torch.tensor([0.5, 0.5])), 6)
    0.1
    """
    return float((probs - target.to(probs)).abs().mean())


def target_class(target: torch.Tensor) -> int:
    """Index of the target's largest entry (the first on ties)."""
    return int(torch.argmax(target))


def target_confidence(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Probability each sample gives to the target's top class, ``(n,)``.

    This is the paper's "confidence": for a house target (p_house = 0.999) the
    probability of "house", for a rocket target that of "rocket". For a tie
    (the ambiguous target) it is the first tied class.

    Examples
    --------
    >>> target_confidence(torch.tensor([[0.1, 0.9]]), torch.tensor([0.001, 0.999]))
    tensor([0.9000])
    """
    return probs[:, target_class(target)]


def fraction_in_band(values: torch.Tensor, band: tuple[float, float] = AMBIGUOUS_BAND) -> float:
    """Share of ``values`` inside the closed interval ``band``."""
    if values.numel() == 0:
        return float("nan")
    return float(((values >= band[0]) & (values <= band[1])).float().mean())


def count_distinct(latents: torch.Tensor) -> int:
    """Number of distinct rows of ``latents`` ``(n, D)`` (exact equality).

    Examples
    --------
    >>> count_distinct(torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 2.0]]))
    2
    """
    return int(torch.unique(latents, dim=0).shape[0])


def first_of_each_distinct(rows: torch.Tensor) -> torch.Tensor:
    """The index of each distinct row's first occurrence in ``rows`` ``(n, D)``, in the order of
    :func:`torch.unique` (draws with replacement repeat rows).

    Examples
    --------
    >>> first_of_each_distinct(torch.tensor([[1.0], [0.0], [1.0]])).tolist()
    [1, 0]
    """
    _, inverse = torch.unique(rows, dim=0, return_inverse=True)
    return torch.full((int(inverse.max()) + 1,), len(rows), dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(len(rows)), reduce="amin")


# --- Out-of-distribution detection metrics ------------------------------------------------------

OOD_TPR_LEVEL = 0.95  # the OoD literature's operating point: catch 95% of the out-of-distribution inputs
OOD_POSITIVE_CLASS = "out-of-distribution"  # label 1: the class a detector's high score flags
OOD_SCORE_SIGN = "higher = more out-of-distribution"  # the Detector contract; metrics never flip it


def _ood_score_array(scores, which: str):
    """``scores`` (torch tensor or array-like, ``(N,)``) as float64 numpy, checked; ``which`` names the set."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().double().numpy()
    try:
        values = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{which} scores must be numbers, got {type(scores).__name__}") from exc
    if values.ndim != 1:
        raise InvalidInputError(f"{which} scores must have shape (N,), got {values.shape}")
    if values.size == 0:
        raise InvalidInputError(f"{which} scores are empty: OoD metrics need at least one score in each set")
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise ModelOutputError(
            f"{bad} of {values.size} {which} scores are NaN or inf; a non-finite score is a model failure "
            "and is never dropped"
        )
    return values


def _ood_labels_and_scores(scores_in, scores_out):
    """Concatenated scores and labels (0 = in-distribution, 1 = out-of-distribution)."""
    s_in = _ood_score_array(scores_in, "in-distribution")
    s_out = _ood_score_array(scores_out, "out-of-distribution")
    labels = np.concatenate([np.zeros(s_in.size, dtype=np.int64), np.ones(s_out.size, dtype=np.int64)])
    return labels, np.concatenate([s_in, s_out]), s_in.size, s_out.size


def ood_metrics(scores_in, scores_out) -> dict:
    """AUROC, average precision and FPR at 95% TPR of an OoD detector's scores.

    The positive class (label 1) is **out-of-distribution** and the scores
    are taken as given: higher = more out-of-distribution (the Detector
    contract). Nothing here guesses or flips the sign; a detector scored
    with the wrong sign reads AUROC < 0.5.

    ``fpr_at_95_tpr`` is the smallest false-positive rate (share of
    in-distribution inputs flagged) among the ROC points whose true-positive
    rate (share of OoD inputs flagged) is at least 0.95, no interpolation.
    Note that some papers (ODIN, Liang et al. 2018) take in-distribution as
    the positive class for this number instead.

    Parameters
    ----------
    scores_in, scores_out : torch.Tensor or array-like, (N_in,) and (N_out,)
        Scores of in-distribution and out-of-distribution inputs.

    Returns
    -------
    dict
        ``auroc``, ``average_precision``, ``fpr_at_95_tpr`` (floats in
        [0, 1]), ``positive_class``, ``score_sign`` (strings), ``num_in``,
        ``num_out`` (ints).

    Raises
    ------
    InvalidInputError
        A set is empty or not one-dimensional.
    ModelOutputError
        A score is NaN or inf (the message says how many and in which set).

    Examples
    --------
    >>> m = ood_metrics(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.8, 0.9]))
    >>> m["auroc"], m["average_precision"], m["fpr_at_95_tpr"]
    (1.0, 1.0, 0.0)
    """
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve  # deferred: slow import

    labels, scores, num_in, num_out = _ood_labels_and_scores(scores_in, scores_out)
    fpr, tpr, _ = roc_curve(labels, scores, pos_label=1, drop_intermediate=False)
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "average_precision": float(average_precision_score(labels, scores, pos_label=1)),
        "fpr_at_95_tpr": float(fpr[tpr >= OOD_TPR_LEVEL].min()),
        "positive_class": OOD_POSITIVE_CLASS,
        "score_sign": OOD_SCORE_SIGN,
        "num_in": int(num_in),
        "num_out": int(num_out),
    }


def roc_points(scores_in, scores_out) -> dict:
    """The ROC curve of an OoD detector's scores, for plotting.

    Same conventions and checks as :func:`ood_metrics` (positive class =
    out-of-distribution, higher score = more out-of-distribution).

    Returns
    -------
    dict
        ``fpr`` and ``tpr``: lists of floats of equal length, from (0, 0)
        to (1, 1), one point per distinct threshold.

    Examples
    --------
    >>> roc_points(torch.tensor([0.1, 0.4]), torch.tensor([0.3, 0.9]))
    {'fpr': [0.0, 0.0, 0.5, 0.5, 1.0], 'tpr': [0.0, 0.5, 0.5, 1.0, 1.0]}
    """
    from sklearn.metrics import roc_curve

    labels, scores, _, _ = _ood_labels_and_scores(scores_in, scores_out)
    fpr, tpr, _ = roc_curve(labels, scores, pos_label=1, drop_intermediate=False)
    return {"fpr": [float(v) for v in fpr], "tpr": [float(v) for v in tpr]}


def reference_percentiles(scores_ref, scores) -> np.ndarray:
    """Each score's percentile among reference scores: the share of the reference scoring lower, ties half.

    With in-distribution scores as the reference and the Detector contract
    (higher = more out-of-distribution), 0.99 means an input looks less
    in-distribution than 99% of the reference, and 0 that every reference
    input looks at least as out-of-distribution as it. Counting ties half
    makes the mean over an out-of-distribution set equal its AUROC against
    the reference, so the inputs with the lowest percentiles are the ones
    that pull a row's AUROC down. One sort and two binary searches: no loop
    over inputs.

    Parameters
    ----------
    scores_ref, scores : torch.Tensor or array-like, (N_ref,) and (N,)
        Reference (in-distribution) scores and the scores to place among them.

    Returns
    -------
    numpy.ndarray
        ``(N,)`` float64 in [0, 1].

    Raises
    ------
    InvalidInputError
        A set is empty or not one-dimensional.
    ModelOutputError
        A score is NaN or inf.

    Examples
    --------
    >>> reference_percentiles(torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([1.5, 3.0, -1.0]))
    array([0.5  , 0.875, 0.   ])
    """
    ref = np.sort(_ood_score_array(scores_ref, "reference"))
    values = _ood_score_array(scores, "input")
    below = np.searchsorted(ref, values, side="left")
    at_or_below = np.searchsorted(ref, values, side="right")
    return (below + 0.5 * (at_or_below - below)) / ref.size


# --------------------------------------------------------------------------- selective classification


def _selective_inputs(confidence, correct, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence as float64, correct as bool)`` flat arrays, checked: non-empty, equal lengths, no NaN.

    A list's floats keep double precision (``torch.as_tensor`` would round
    them to float32 and could tie confidences that differ).
    """
    conf = (confidence.detach().cpu().double().numpy() if isinstance(confidence, torch.Tensor)
            else np.asarray(confidence, dtype=np.float64)).ravel()
    ok = np.asarray(torch.as_tensor(correct).detach().cpu().numpy()).ravel().astype(bool)
    if conf.size == 0:
        raise InvalidInputError(f"{caller} needs at least one input")
    if ok.shape != conf.shape:
        raise InvalidInputError(f"confidence has {conf.size} entries but correct has {ok.size}")
    if np.isnan(conf).any():
        raise ModelOutputError(f"{int(np.isnan(conf).sum())} of {conf.size} confidences are NaN")
    return conf, ok


def risk_coverage(confidence, correct) -> dict:
    """The risk-coverage curve of a selective classifier and its area (AURC; Geifman & El-Yaniv 2017).

    Inputs are accepted in order of decreasing confidence; at each distinct
    confidence threshold the curve has one point: ``coverage`` (share of
    inputs accepted) and ``risk`` (share of accepted inputs that are wrong).
    Ties are never split: a threshold accepts every input at that confidence
    or none, so a classifier that gives many inputs the same top confidence
    (a CNN's softmax of exactly 1.0) cannot reach a lower risk by an
    arbitrary order among them. ``aurc`` is the mean risk over the ``N``
    acceptance steps with tied inputs taking their group's risk, the usual
    empirical AURC; ``min_risk`` is the lowest risk any threshold attains,
    with the largest coverage at which it is attained.

    Parameters
    ----------
    confidence : array-like, (N,)
        Higher = more sure (the classifier's own confidence, not a rejection score).
    correct : array-like of bool, (N,)
        Whether each prediction is right; out-of-distribution inputs count as wrong.

    Returns
    -------
    dict
        ``coverage``, ``risk`` (lists, one point per distinct threshold, coverage
        increasing to 1), ``aurc``, ``min_risk``, ``coverage_at_min_risk``,
        ``risk_at_full_coverage``, ``num_inputs``.

    Raises
    ------
    InvalidInputError
        Empty or mismatched inputs.
    ModelOutputError
        A NaN confidence.

    Examples
    --------
    >>> rc = risk_coverage([0.9, 0.8, 0.7, 0.6], [True, True, False, True])
    >>> rc["coverage"], [round(r, 4) for r in rc["risk"]]
    ([0.25, 0.5, 0.75, 1.0], [0.0, 0.0, 0.3333, 0.25])
    >>> round(rc["aurc"], 4)
    0.1458
    """
    conf, ok = _selective_inputs(confidence, correct, "risk_coverage")
    order = np.argsort(-conf, kind="stable")
    conf, errors = conf[order], (~ok)[order].astype(np.float64)
    n = conf.size
    cum_errors = np.cumsum(errors)
    # the last index of each group of tied confidences: thresholds sit only there
    ends = np.flatnonzero(np.r_[conf[1:] != conf[:-1], True])
    accepted = ends + 1
    risk = cum_errors[ends] / accepted
    group_sizes = np.diff(np.r_[0, accepted])
    aurc = float((risk * group_sizes).sum() / n)
    best = len(risk) - 1 - int(np.argmin(risk[::-1]))  # of equally low risks, the one at the largest coverage
    return {
        "coverage": (accepted / n).tolist(),
        "risk": risk.tolist(),
        "aurc": aurc,
        "min_risk": float(risk[best]),
        "coverage_at_min_risk": float(accepted[best] / n),
        "risk_at_full_coverage": float(risk[-1]),
        "num_inputs": int(n),
    }


def selective_risk(confidence, correct, threshold: float) -> dict:
    """Coverage and risk of a selective classifier that keeps the inputs with ``confidence >= threshold``.

    Parameters
    ----------
    confidence : array-like, (N,)
        Higher = more sure.
    correct : array-like of bool, (N,)
    threshold : float
        Must lie within the observed confidences, ``[min, max]``: above the
        maximum nothing is kept and the risk is undefined; below the minimum
        the threshold rejects nothing and is almost surely a mistake of scale
        (a distance given where a similarity was meant).

    Returns
    -------
    dict
        ``threshold``, ``coverage``, ``risk``, ``kept``.

    Raises
    ------
    InvalidInputError
        Empty or mismatched inputs, a NaN threshold or one outside the observed range.
    ModelOutputError
        A NaN confidence.

    Examples
    --------
    >>> selective_risk([0.9, 0.8, 0.7, 0.6], [True, True, False, True], 0.7)
    {'threshold': 0.7, 'coverage': 0.75, 'risk': 0.3333333333333333, 'kept': 3}
    >>> selective_risk([0.9, 0.8], [True, True], 1.5)
    Traceback (most recent call last):
    ...
    ppl_audit.errors.InvalidInputError: threshold 1.5 is outside the observed confidences [0.8, 0.9]: it would keep nothing
    """
    conf, ok = _selective_inputs(confidence, correct, "selective_risk")
    low, high = float(conf.min()), float(conf.max())
    if not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise InvalidInputError(f"threshold must be a number, got {threshold!r}")
    if threshold > high:
        raise InvalidInputError(f"threshold {threshold:g} is outside the observed confidences [{low:g}, {high:g}]: "
                                "it would keep nothing")
    if threshold < low:
        raise InvalidInputError(f"threshold {threshold:g} is outside the observed confidences [{low:g}, {high:g}]: "
                                "it would reject nothing")
    kept = conf >= threshold
    return {"threshold": float(threshold), "coverage": float(kept.mean()),
            "risk": float((~ok[kept]).mean()), "kept": int(kept.sum())}


__all__ = [
    "AMBIGUOUS_BAND",
    "OOD_POSITIVE_CLASS",
    "OOD_SCORE_SIGN",
    "OOD_TPR_LEVEL",
    "average_deviation",
    "count_distinct",
    "fraction_in_band",
    "ood_metrics",
    "reference_percentiles",
    "risk_coverage",
    "roc_points",
    "runs_interval_factor",
    "selective_risk",
    "target_class",
    "target_confidence",
]


def runs_interval_factor(runs: int, level: float = 0.95) -> float:
    """Half-width of a ``level`` interval for the mean of ``runs`` independent runs, in standard errors.

    Student's t with ``runs - 1`` degrees of freedom: with 8 runs it is 2.36, where the normal 1.96 would
    give intervals about 17% too narrow.

    Examples
    --------
    >>> round(runs_interval_factor(8), 3), round(runs_interval_factor(1000), 2)
    (2.365, 1.96)
    """
    from scipy.stats import t  # scipy comes with scikit-learn, a dependency

    if runs < 2:
        return math.inf
    return float(t.ppf(0.5 + level / 2, runs - 1))
