"""The OoD audit's presentation: its numbers (:mod:`ppl_audit.audits.ood`) as tables, figures and sections.

:func:`present` turns an :class:`~ppl_audit.audits.ood.OodResults` into the
audit's :class:`~ppl_audit.report.Report`; :func:`present_folder` does the
same for the scores of a folder of images (``ppl-audit ood``). Nothing here
computes a score or draws a random number: the same results give the same
report.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from ppl_audit.audits.ood import (
    COLUMN_MEANINGS,
    FOLDER_GALLERY_COLUMN,
    KIND,
    PAPER_BEST_AUROC,
    ROW_TITLES,
    FolderResults,
    OodResults,
    _percent,
)
from ppl_audit.audits.spec import spec_hash
from ppl_audit.metrics import OOD_POSITIVE_CLASS, OOD_SCORE_SIGN
from ppl_audit.provenance import library_versions
from ppl_audit.audits.verdict import with_verdict
from ppl_audit.report import Report, Section, Table
from ppl_audit.report import figures

FOLDER_TABLE_ROWS = 500  # per-image rows shown in the report (report.json holds every image)
GALLERY_NAME_CHARS = 14  # an image's name under it in the gallery, cut to its last characters
VERSIONS = ("arviz", "numpy", "matplotlib")  # the libraries whose versions the reports' provenance names


def _short_percentile(p: float) -> str:
    """Two decimals, or four where two would round a percentile below 1 up to 1.00."""
    return f"{p:.2f}" if p < 0.995 or p == 1 else f"{p:.4f}"


def _short(name: str) -> str:
    """``name`` cut to its last ``GALLERY_NAME_CHARS`` characters (the end tells files and array rows apart)."""
    return name if len(name) <= GALLERY_NAME_CHARS else "…" + name[-(GALLERY_NAME_CHARS - 1):]


def _group_title(name: str) -> str:
    """A scored group's name in tables and legends: ``"MNIST (in)"`` or the row's title."""
    return "MNIST (in)" if name == "mnist" else ROW_TITLES[name]


# --------------------------------------------------------------------------- the audit


def _metric_table(name: str, title: str, key: str, results, columns, rows, paper=False) -> Table:
    """One metric (%) per row and column with each row's best, and the paper's best AUROC when ``paper``."""
    header = ["dataset", *columns, "best"] + (["paper best"] if paper else [])
    body = []
    for row in rows:
        values = [_percent(results[row][c][key]) for c in columns]
        best = (max if key != "fpr_at_95_tpr" else min)(values)
        body.append([ROW_TITLES[row], *values, best] + ([PAPER_BEST_AUROC[row]] if paper else []))
    return Table(name, title, header, body)


def _table_section(results: OodResults) -> Section:
    """The paper's Table 2 layout: AUROC, average precision and FPR at 95% TPR per row and column."""
    spec, columns = results.spec, results.columns
    spec_rows = spec.rows
    tables = [
        _metric_table("auroc", "AUROC (%) per out-of-distribution set and score (the paper's Table 2)", "auroc",
                      results.metrics, columns, spec_rows, paper=True),
        _metric_table("average_precision", "Average precision (%)", "average_precision", results.metrics, columns,
                      spec_rows),
        _metric_table("fpr_at_95_tpr", "FPR at 95% TPR (%, lower is better)", "fpr_at_95_tpr", results.metrics,
                      columns, spec_rows),
    ]
    warnings = [f"{ROW_TITLES[row]}: our best AUROC {entry['best_auroc_percent']}% ({entry['best_column']}) is "
                f"below the paper's best {PAPER_BEST_AUROC[row]}%"
                for row, entry in results.rows.items() if not entry["at_or_above_paper"]]
    return Section(
        "table_2", "Detection of out-of-distribution sets (Choi & Jang, Table 2 layout)",
        paragraphs=[
            f"In-distribution: {results.num_in} MNIST test digits. Positive class: {OOD_POSITIVE_CLASS}; every "
            f"score reads {OOD_SCORE_SIGN}, so AUROC 50% is chance and below 50% means the score ranks OoD inputs "
            "as more in-distribution than MNIST.",
            *[f"{c}: {COLUMN_MEANINGS[c]}." for c in columns],
            f"Adversarial: {spec.adversarial_steps} FGSM steps of {spec.adversarial_epsilon} from Gaussian noise "
            "N(0.5, 0.25^2) on VAE member 1's likelihood bound.",
            "Every member scores the same images, so an ensemble's mean and variance are per image. The paper's "
            "column is a reference, not a like-for-like figure: the authors' public code draws new random images "
            "for each member before averaging position by position, which with the shipped ensemble reads about 15 "
            "points higher on the flips (benchmarks/ood_misaligned_ensemble.py in the ppl-audit repository).",
        ],
        tables=tables, warnings=warnings,
    )


def _histogram_section(results: OodResults) -> Section:
    """One histogram per column of every group's scores (the paper's Figure 1, right)."""
    hist_figures = []
    for c in results.columns:
        key = c.lower().replace(" ", "_").replace("(", "").replace(")", "").replace("=", "").replace(".", "")
        hist_figures.append(figures.value_histograms(
            f"hist_{key}", f"{c} score per dataset",
            f"Histogram of the {c} score ({COLUMN_MEANINGS[c]}); higher = more out-of-distribution. "
            "Bins span the 0.5-99.5% quantiles of all scores; values outside are counted in the end bins.",
            {_group_title(name): scores[c] for name, scores in results.scores.items()},
            xlabel=f"{c} score"))
    return Section("histograms", "Score histograms (the paper's Figure 1, right)", figures=hist_figures)


def _information_criteria_section(results: OodResults) -> Section:
    """ArviZ's dataset-level WAIC and PSIS-LOO of the VAE ensemble, per input, on every group."""
    ic_rows = []
    for name, ic in results.information_criteria.items():
        n = ic["num_inputs"]
        ic_rows.append([_group_title(name), n, round(ic["elpd_waic"] / n, 3), round(ic["p_waic"] / n, 4),
                        ic["waic_warning"], round(ic["elpd_loo"] / n, 3), ic["pareto_k_over_0_7"],
                        ic["loo_warning"]])
    return Section(
        "information_criteria", "Dataset-level WAIC and PSIS-LOO of the VAE ensemble (ArviZ)",
        paragraphs=["The K VAE members are treated as K posterior draws (one chain) and each input as one "
                    "observation; ArviZ computes elpd_waic and elpd_loo (log scale, per input here) with its own "
                    "p_waic (population variance over members). With only K members PSIS-LOO's Pareto k is "
                    "unreliable (ArviZ flags it), so read the LOO column as indicative."],
        tables=[Table("information_criteria", "Per-input elpd of the VAE ensemble",
                      ["dataset", "inputs", "elpd_waic / input", "p_waic / input", "WAIC warning",
                       "elpd_loo / input", "Pareto k > 0.7", "LOO warning"], ic_rows)],
    )


def _flips_section(by_class: dict[str, dict[str, Any]]) -> Section:
    """The report section splitting the flip rows by the mirrored digit's class."""
    header, body, warnings = ["class"], [], []
    for row, split in by_class.items():
        header += [f"{ROW_TITLES[row]}: digits", f"{ROW_TITLES[row]}: AUROC ({split['column']})",
                   f"{ROW_TITLES[row]}: row without the class"]
    for c in range(len(next(iter(by_class.values()))["classes"])):
        cells = [c]
        for split in by_class.values():
            r = split["classes"][c]
            cells += [r["num_images"], None if r["auroc"] is None else _percent(r["auroc"]),
                      None if r["auroc_without"] is None else _percent(r["auroc_without"])]
        body.append(cells)
    for row, split in by_class.items():
        for r in split["classes"]:
            if r["auroc"] is not None and r["auroc"] < 0.5:
                warnings.append(f"{ROW_TITLES[row]}: mirrored {r['class']}s score as more MNIST-like than the MNIST "
                                f"test digits under {split['column']} (AUROC {_percent(r['auroc'])}%)")
    return Section(
        "flips_by_class", "Flipped digits by class: where the flip rows lose",
        paragraphs=["Each flip row's best column, split by the class of the digit that was mirrored: the AUROC "
                    "of that class's mirrored digits against all MNIST test digits, and the row's AUROC with "
                    "them left out. Below 50% the score ranks those mirror images as more digit-like than the "
                    "test digits themselves; a likelihood does this for simple, thin shapes such as 1s."],
        tables=[Table("flips_by_class", "AUROC (%) of the flip rows by the mirrored digit's class", header, body)],
        warnings=warnings,
    )


def _missed_section(missed: dict[str, dict[str, Any]], images: dict[str, torch.Tensor], num_in: int) -> Section:
    """Image grids of each row's least-flagged inputs, for the rows where one scores at or below a test digit."""
    grids = []
    for row, entry in missed.items():
        if entry["images"][0]["percentile"] >= 1.0:
            continue  # every image of the row scores above every test digit: nothing is missed
        shown = entry["images"]
        labelled = "class" in shown[0]
        labels = [(f"digit {e['class']}" if labelled else f"#{e['index']}") + f": {_short_percentile(e['percentile'])}"
                  for e in shown]
        grids.append(figures.image_grid(
            f"missed_{row.replace('-', '_')}", f"{ROW_TITLES[row]}: the {len(shown)} images {entry['column']} "
            "ranks as most MNIST-like",
            f"Lowest {entry['column']} score first; each label gives the image's percentile among the {num_in} "
            "MNIST test digits" + (" and the class of the mirrored digit." if labelled else
                                   " and its position in the row."),
            images[row][[e["index"] for e in shown]].cpu(), labels,
            data={"row": row, "column": entry["column"], "images": shown}))
    return Section(
        "missed", "The out-of-distribution inputs each row's best score misses",
        paragraphs=["For each row, the images its best column ranks as most MNIST-like, each with its percentile: "
                    "the share of MNIST test digits scoring lower, ties counted half. 0.10 means 90% of the test "
                    "digits look more out-of-distribution than the image. A row's AUROC is the mean of these "
                    "percentiles over all its images, so these are the images that pull it down. Rows in which "
                    "every image scores above every test digit have no grid."
                    + ("" if grids else " Here that is every row.")],
        figures=grids,
    )


def present(results: OodResults) -> Report:
    """The OoD audit's report from its numbers: Table 2, the flips by class, missed inputs, histograms, WAIC/LOO.

    Parameters
    ----------
    results : OodResults
        From :func:`ppl_audit.audits.ood.evaluate`; left unchanged.

    Returns
    -------
    Report

    Examples
    --------
    >>> from ppl_audit.audits.ood import OodAuditSpec, evaluate
    >>> report = present(evaluate(OodAuditSpec(num_out=500), data_dir="/path/to/data"))  # doctest: +SKIP
    """
    table_section = _table_section(results)
    histograms, ic_section = _histogram_section(results), _information_criteria_section(results)
    by_class = results.flips_by_class
    sections = [table_section, *([_flips_section(by_class)] if by_class else []),
                _missed_section(results.least_flagged, results.images, results.num_in), histograms, ic_section]
    met = [r["at_or_above_paper"] for r in results.rows.values()]
    columns = results.columns
    spec_dict = dataclasses.asdict(results.spec)
    return with_verdict(Report(
        kind=KIND,
        title=results.spec.title,
        summary=[f"Best AUROC at or above the paper's best MNIST figure on {sum(met)} of {len(met)} "
                 f"out-of-distribution sets ({results.num_in} MNIST test digits in-distribution; columns "
                 f"{', '.join(columns)})."],
        metrics={"num_in": results.num_in, "columns": list(columns), "positive_class": OOD_POSITIVE_CLASS,
                 "score_sign": OOD_SCORE_SIGN, "rows": results.rows, "rows_at_or_above_paper": int(sum(met)),
                 "rows_compared": len(met), "information_criteria": results.information_criteria,
                 "models": results.models, "least_flagged": results.least_flagged,
                 **({"flips_by_class": by_class} if by_class else {})},
        sections=sections,
        provenance={"seed": results.seed, "spec": spec_dict, "spec_sha256": spec_hash(spec_dict),
                    "versions": library_versions(*VERSIONS), "device": results.device},
        timings={**results.timings, "total_seconds": time.perf_counter() - results.started},
    ))


# --------------------------------------------------------------------------- a folder of images


def _gallery(results: FolderResults):
    """The images ``FOLDER_GALLERY_COLUMN`` ranks as most MNIST-like, each named (and with its percentile)."""
    likest, names, percentiles = results.most_mnist_like, results.names, results.percentiles
    return figures.image_grid(
        "most_mnist_like", f"The {len(likest)} images {FOLDER_GALLERY_COLUMN} ranks as most MNIST-like",
        f"Lowest {FOLDER_GALLERY_COLUMN} score first; each label gives the file"
        + (" and, below it, the image's percentile among the reference digits." if percentiles else "."),
        results.images[likest].cpu(),
        [_short(names[i]) + (f"\n{_short_percentile(percentiles[FOLDER_GALLERY_COLUMN][i])}" if percentiles else "")
         for i in likest],
        data={"column": FOLDER_GALLERY_COLUMN, "images": [names[i] for i in likest]})


def _folder_section(results: FolderResults) -> Section:
    """The per-image table (its first ``FOLDER_TABLE_ROWS`` rows), a histogram per column and the gallery."""
    names, columns, per_image, reference = results.names, results.columns, results.per_image, results.reference
    header = ["image", *[k for k in per_image[0] if k != "image"]]
    table = Table("scores", f"Scores per image (first {min(len(names), FOLDER_TABLE_ROWS)} of {len(names)})",
                  header, [[e[k] for k in header] for e in per_image[:FOLDER_TABLE_ROWS]])
    hist = [figures.value_histograms(
        f"hist_{i + 1}", f"{c} score", f"{COLUMN_MEANINGS[c]}; higher = more out-of-distribution.",
        {"folder": results.scores[c], **({"MNIST test (reference)": reference[c]} if reference is not None else {})},
        xlabel=f"{c} score") for i, c in enumerate(columns)]
    paragraphs = [f"{len(names)} images from {results.folder}; scores read {OOD_SCORE_SIGN}.",
                  *[f"{c}: {COLUMN_MEANINGS[c]}." for c in columns]]
    if reference is not None:
        paragraphs.append(f"Percentiles are against {len(reference[columns[0]])} MNIST test digits scored the "
                          "same way.")
    elif results.reference_note:
        paragraphs.append(results.reference_note)
    return Section("scores", "Scores", paragraphs=paragraphs, tables=[table], figures=[*hist, _gallery(results)])


def present_folder(results: FolderResults) -> Report:
    """The report of a scored folder (``ppl-audit ood``): per-image scores, histograms, the most MNIST-like images.

    Parameters
    ----------
    results : FolderResults
        From :func:`ppl_audit.audits.ood.evaluate_folder`; left unchanged.

    Returns
    -------
    Report

    Examples
    --------
    >>> from ppl_audit.audits.ood import evaluate_folder
    >>> report = present_folder(evaluate_folder("my-digits/", data_dir="/path/to/data"))  # doctest: +SKIP
    """
    spec_dict = results.options
    return with_verdict(Report(
        kind="ood-folder",
        title=f"Out-of-distribution scores of {results.folder}",
        summary=[f"{len(results.names)} images scored by {', '.join(results.columns)}."],
        metrics={"num_images": len(results.names), "columns": list(results.columns), "score_sign": OOD_SCORE_SIGN,
                 "summary": results.summary, "images": results.per_image, "models": results.models},
        sections=[_folder_section(results)],
        provenance={"seed": results.seed, "spec": spec_dict, "spec_sha256": spec_hash(spec_dict),
                    "versions": library_versions(*VERSIONS), "device": results.device},
        timings={"total_seconds": time.perf_counter() - results.started},
    ))


__all__ = ["present", "present_folder"]
