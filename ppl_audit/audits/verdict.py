"""The verdict of an audit family: one row (finding, key figure, trust), what was audited, its images.

The level-set audit writes one row per target
(:mod:`ppl_audit.audits.levelset_findings`); every other audit's report gets
one row for its family from here, and the classifier audit one row per part.
The key figure is the one number each family is read by; trust says, in words,
whether the samplers behind it passed their checks.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ppl_audit.report import Highlight, Report, Verdict, VerdictRow
from ppl_audit.report.model import MAX_HIGHLIGHTS, walk

FINDING_CHARS = 240  # a finding is the summary's first sentence, cut to this
GALLERY_WORDS = ("gallery", "samples", "montage", "finds", "images", "explanations")  # figures of inputs
CLASSIFIER_KEYS = ("classifier", "cnn")  # the spec keys that name the audited classifier
PRIOR_KEYS = ("world", "worlds", "prior", "priors", "novel_prior", "class_vae", "class_gan", "vae_ensemble",
              "gan_ensemble", "gwin")


def _converged(metrics) -> tuple[int, int]:
    """How many ``converged`` flags anywhere in ``metrics`` are true, of how many."""
    if isinstance(metrics, dict):
        pairs = [_converged(v) for k, v in metrics.items() if k != "converged"]
        own = [(int(metrics["converged"]), 1)] if isinstance(metrics.get("converged"), bool) else []
        return sum(p[0] for p in pairs + own), sum(p[1] for p in pairs + own)
    if isinstance(metrics, (list, tuple)):
        pairs = [_converged(v) for v in metrics]
        return sum(p[0] for p in pairs), sum(p[1] for p in pairs)
    return 0, 0


def key_figure(report: Report) -> str:
    """The one number a family's report is read by, in words."""
    m = report.metrics
    if report.kind in ("confidently-wrong", "novel-class"):
        rates = {k: v for k, v in m["rates"].items() if v is not None}
        if not rates:
            return f"every rate below {max(m['upper_bounds'].values()):.1e}"
        worst = max(rates, key=rates.get)
        return f"highest rate {rates[worst]:.1e} (class {worst})"
    if report.kind == "calibration":
        return f"largest |q - p| = {m['max_gap']:.3f}"
    if report.kind == "ood" and "rows_compared" in m:
        return f"AUROC at or above the paper's on {m['rows_at_or_above_paper']} of {m['rows_compared']} sets"
    if report.kind == "gwin":
        return (f"BNN accuracy {m['bnn_accuracy_percent']:.2f}%; rejected-subset accuracy at or above the paper's "
                f"at {m['at_or_above_paper_count']} of {m['paper_comparisons']} thresholds")
    cnn = m.get("methods", {}).get("CNN") if report.kind == "selective" else None
    if cnn:
        return (f"classifier AURC {cnn['aurc']:.4f}; {cnn['ood_at_max_confidence']} out-of-distribution images "
                "at its maximum confidence")
    ok, total = _converged(m)
    return f"{ok} of {total} level sets converged" if total else "-"


def trust(report: Report) -> tuple[bool | None, str]:
    """Whether the family's samplers passed their checks (``None``: nothing sampled), and the same in words."""
    ok, total = _converged(report.metrics)
    if "all_checks_passed" in report.metrics:
        passed = bool(report.metrics["all_checks_passed"])
        return passed, ("trusted: every SMC check passed" if passed else
                        "not trusted: some SMC checks failed (see its warnings)")
    if total:
        return ok == total, ("trusted: every level set converged" if ok == total else
                             f"not trusted: {total - ok} of {total} level sets did not converge")
    return None, "measured on data (no sampler to check)"


def first_sentence(text: str, limit: int = FINDING_CHARS) -> str:
    """The first sentence of ``text``, cut to ``limit`` characters."""
    sentence = re.split(r"(?<=[.:;])\s", text.strip(), maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 1] + "…"


def family_row(report: Report, section: str = "") -> VerdictRow:
    """The family's one row: its kind, the summary's first sentence, its key figure, its trust."""
    trusted, words = trust(report)
    finding = first_sentence(report.summary[0]) if report.summary else ""
    return VerdictRow(item=report.kind, finding=finding, key_figure=key_figure(report), trusted=trusted,
                      trust=words, section=section)


def audited(report: Report) -> dict[str, Any]:
    """What was audited, read off the spec in the provenance: the classifier, its source, its accuracy, the priors."""
    spec = report.provenance.get("spec") if isinstance(report.provenance.get("spec"), dict) else {}
    classifier = next((spec[k] for k in CLASSIFIER_KEYS if spec.get(k)), None)
    priors: list[str] = []
    for key in PRIOR_KEYS:
        value = spec.get(key)
        priors += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)] if value else []
    return {"classifier": classifier, "source": _source(classifier), "accuracy": _accuracy(report.metrics),
            "priors": priors}


def _source(classifier) -> str | None:
    if not classifier:
        return None
    is_file = "/" in str(classifier) or str(classifier).endswith((".onnx", ".pt2")) or ":" in str(classifier)
    return f"{'file' if is_file else 'model card'} {classifier}"


def _accuracy(metrics, depth: int = 2):
    """The first ``test_accuracy`` (or ``classifier_accuracy``) within ``depth`` levels of ``metrics``."""
    if not isinstance(metrics, dict):
        return None
    for key in ("test_accuracy", "classifier_accuracy"):
        if isinstance(metrics.get(key), (int, float)) and not isinstance(metrics.get(key), bool):
            return metrics[key]
    if depth:
        for value in metrics.values():
            found = _accuracy(value, depth - 1)
            if found is not None:
                return found
    return None


def gallery_highlights(report: Report) -> list[Highlight]:
    """Up to :data:`~ppl_audit.report.model.MAX_HIGHLIGHTS` of the report's figures of inputs (galleries
    first, in reading order), else its first figures."""
    found = [(f, s.name) for _, s in walk(report.sections) for f in s.figures]
    galleries = [(f, s) for f, s in found if any(word in f.name for word in GALLERY_WORDS)]
    # a copy under its own name: a figure's name is its file's, and each file is written once
    chosen = (galleries or found)[:MAX_HIGHLIGHTS]
    return [Highlight(dataclasses.replace(f, name=f"verdict_{f.name}"), s) for f, s in chosen]


def family_verdict(report: Report) -> Verdict:
    """One row for the report's family, under a headline that says whether it can be trusted."""
    row = family_row(report, report.sections[0].name if report.sections else "")
    head = {True: "Trusted", False: "Not trusted", None: "Measured on data"}[row.trusted]
    return Verdict(headline=f"{head}: {row.key_figure}.", audited=audited(report), rows=[row],
                   highlights=gallery_highlights(report))


def with_verdict(report: Report) -> Report:
    """``report`` with :func:`family_verdict` as its verdict, unless it has one; returned for chaining."""
    if report.verdict is None:
        report.verdict = family_verdict(report)
    return report


__all__ = ["audited", "family_row", "family_verdict", "first_sentence", "gallery_highlights", "key_figure",
           "trust", "with_verdict"]
