"""The training report of a loaded model: curves, metrics against ``[expected]``, the kind's own sections."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ppl_audit.cards import ModelCard
from ppl_audit.provenance import library_versions
from ppl_audit.training.loader import (
    EXPECTED_MAX_PREFIX,
    EXPECTED_MIN_PREFIX,
    SECONDS_SUFFIX,
    TrainedModel,
    check_expected,
)

if TYPE_CHECKING:
    from ppl_audit.report import Report


def _history_panels(info: Mapping[str, Any]) -> tuple[str, dict[str, dict[str, list]]]:
    history = info.get("history") or {}
    panels = history.get("panels")
    if panels:
        return str(history.get("unit", "epoch")), panels
    # Entries written without curves (older house/rocket cache entries): draw list-valued metrics.
    lists = {k: v for k, v in info.get("metrics", {}).items() if isinstance(v, list) and v}
    return "epoch", {k: {k: v} for k, v in lists.items()}


def _expectation_rows(card: ModelCard, metrics: Mapping[str, Any]) -> list[list[Any]]:
    """``[metric, value, bound, met]`` for every ``[expected] min_KEY`` / ``max_KEY``."""
    rows = []
    for name, bound in card.expected.items():
        for prefix, op, ok in ((EXPECTED_MIN_PREFIX, ">=", float.__ge__), (EXPECTED_MAX_PREFIX, "<=", float.__le__)):
            if name.startswith(prefix):
                key = name[len(prefix):]
                value = metrics.get(key)
                met = isinstance(value, (int, float)) and ok(float(value), float(bound))
                rows.append([key, value, f"{op} {bound}", met])
    return rows


def curve_figures(info: Mapping[str, Any], *, prefix: str = "curve", caption_note: str = "") -> list:
    """One line plot per training-curve panel of a cache sidecar's ``info`` (figures ``PREFIX_1``, ...).

    Examples
    --------
    >>> figs = curve_figures({"history": {"unit": "epoch", "panels": {"loss": {"train": [2.0, 1.0]}}}})
    >>> [f.name for f in figs], figs[0].caption
    (['curve_1'], 'loss per epoch of training.')
    """
    from ppl_audit.report.figures import line_plot

    unit, panels = _history_panels(info)
    return [line_plot(f"{prefix}_{i + 1}", title, f"{title} per {unit} of training{caption_note}.",
                      {k: [float(v) for v in vs] for k, vs in series.items()}, xlabel=unit, ylabel=title)
            for i, (title, series) in enumerate(panels.items())]


def training_report(trained: TrainedModel, *, data_dir=None) -> Report:
    """A report of how a model was trained: curves, metrics against ``[expected]``, trainer sections.

    ``report.json`` holds no wall-clock times (they go to ``timings.json``),
    so the report of a cached model is the same bytes every time.

    Parameters
    ----------
    trained : TrainedModel
        From :func:`load_model`.
    data_dir : path-like, optional
        Data folder for trainer sections that show data (default ``$PPL_AUDIT_DATA``).

    Returns
    -------
    ppl_audit.report.Report
        ``kind="training"``; write it with :func:`ppl_audit.report.write_report`.

    Examples
    --------
    >>> report = training_report(load_model("mnist-gan"))  # doctest: +SKIP
    >>> [s.name for s in report.sections]  # doctest: +SKIP
    ['expectations', 'curves', 'samples', 'latent_traversal']
    """
    from ppl_audit.report import Report, Section, Table, Verdict, VerdictRow

    card, info = trained.card, trained.info
    metrics = dict(info.get("metrics", {}))
    problems = check_expected(card, metrics)
    rows = _expectation_rows(card, metrics)
    expectations = Section(
        "expectations", "Against the card's expectations",
        paragraphs=["Metrics were measured on the held-out split when the weights were trained; the card's "
                    "[expected] table gives the bounds." if rows else "The card's [expected] table sets no bounds."],
        tables=[Table("expectations", "Measured vs expected", ["metric", "value", "expected", "met"], rows)]
        if rows else [],
        warnings=problems,
    )
    figures = curve_figures(info)
    curves = Section("curves", "Training curves", figures=figures,
                     paragraphs=[] if figures else ["No training curves were recorded."])
    sections = [expectations, curves]
    trainer = trained.trainer
    if trainer.report_sections is not None:
        sections += list(trainer.report_sections(trained, data_dir=data_dir))
    headline_key, headline_label = trainer.headline
    value = metrics.get(headline_key, float("nan"))
    met = f"{len(problems)} expectation(s) of the card not met" if problems else "every expectation of the card met"
    verdict = Verdict(
        headline=f"{card.name}: {headline_label} {value:.4f}; {met}.",
        audited={"classifier": None, "source": f"model card {card.name} ({card.kind})", "accuracy": None,
                 "priors": []},
        rows=[VerdictRow(item=card.name, finding=met, key_figure=f"{headline_label} {value:.4f}",
                         trusted=not problems, trust="met its card's expectations" if not problems else
                         "missed its card's expectations (see the warnings)", section="expectations")])
    return Report(
        kind="training",
        verdict=verdict,
        title=f"Training report: {card.name}",
        summary=[card.description or card.name,
                 f"Kind {card.kind!r}, recipe hash {card.recipe_hash}; headline: {trainer.headline[1]} "
                 f"{metrics.get(headline_key, float('nan')):.4f}."],
        metrics={k: v for k, v in metrics.items()
                 if not isinstance(v, (list, dict)) and not k.endswith(SECONDS_SUFFIX)},
        sections=sections,
        provenance={"card": card.name, "card_source": card.source, "kind": card.kind,
                    "recipe_hash": card.recipe_hash, "recipe": card.recipe, "expected": card.expected,
                    "weights_file": trained.weights_path.name, "versions": library_versions()},
        timings={k: float(v) for k, v in metrics.items()
                 if k.endswith(SECONDS_SUFFIX) and isinstance(v, (int, float))},
    )


__all__ = [
    "curve_figures",
    "training_report",
]
