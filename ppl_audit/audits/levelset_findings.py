"""What a level-set audit found, read off its samples: ranked samples, the world's own labels, the verdict.

* Samples are ranked by their closeness to the target: the mean absolute
  deviation of their prediction from it per class (the per-sample term of the
  paper's Delta), distinct samples only.
* On a labelled world (a prior with ``class_posterior``, such as house/rocket
  or the MNIST class mixture), each sample's true class is known: samples the
  classifier calls the target's class with confidence while the world says
  they are another class are confidently-wrong inputs, an audit finding.
* The verdict: one row per world and target (what was found, the key figure,
  whether the sampler converged), a headline, and three images that show it.
"""

from __future__ import annotations

import csv
import io
from typing import Any, Callable, Sequence

import torch

from ppl_audit.diagnostics import NESTED_RHAT_THRESHOLD, RHAT_THRESHOLD, beyond
from ppl_audit.metrics import AMBIGUOUS_BAND, first_of_each_distinct
from ppl_audit.report import DataFile, Highlight, Verdict, VerdictRow
from ppl_audit.report.galleries import single_image
from ppl_audit.report.model import MAX_HIGHLIGHTS

CONFIDENT_TARGET = 0.9  # a target whose top class has at least this probability asks for confident inputs
# A many-class level set "reaches" its target when its samples stray under 5 points of probability per class
# on average (two-class targets are read by the ambiguous band instead).
REACHED_DELTA = 0.05
CSV_DIGITS = 6  # significant digits in a samples CSV: more than the figures show, less than float noise


def target_key(world_name: str, target_name: str) -> str:
    """Name of a target's section, and prefix of its figures' and files' names."""
    return f"{world_name}_{target_name}".replace("-", "_")


def top_class(probabilities: Sequence[float]) -> int:
    """The target's top class (the first on ties)."""
    return int(torch.argmax(torch.tensor(probabilities)))


def is_confident(probabilities: Sequence[float]) -> bool:
    return max(probabilities) >= CONFIDENT_TARGET


def distance_to_target(probs: torch.Tensor, target: Sequence[float]) -> torch.Tensor:
    """``(n,)`` mean absolute deviation of each prediction from the target per class.

    Examples
    --------
    >>> distance_to_target(torch.tensor([[0.5, 0.5], [0.75, 0.25]]), [0.5, 0.5]).tolist()
    [0.0, 0.25]
    """
    t = torch.as_tensor(target, dtype=probs.dtype, device=probs.device)
    return (probs - t).abs().mean(-1)


def ranked_distinct(latents: torch.Tensor, probs: torch.Tensor, target: Sequence[float]) -> torch.Tensor:
    """Indices of the distinct samples, the closest to the target first (ties by index).

    Examples
    --------
    >>> z = torch.tensor([[0.0], [1.0], [0.0], [2.0]])
    >>> p = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.9, 0.1], [0.6, 0.4]])
    >>> ranked_distinct(z, p, [0.5, 0.5]).tolist()
    [1, 3, 0]
    """
    first = first_of_each_distinct(latents.detach().cpu()).sort().values
    distance = distance_to_target(probs.detach().cpu()[first], target)
    return first[torch.sort(distance, stable=True).indices]  # stable: ties keep index order


def world_label_shares(world, class_names: Sequence[str], target: Sequence[float],
                       latents: torch.Tensor) -> torch.Tensor | None:
    """``(n,)`` ``P(top class | z)`` of each sample under the world's own labels, on the CPU.

    ``None`` for an unlabelled prior (no ``class_posterior``), or one whose classes do not include the
    target's top class by name.
    """
    names = list(getattr(world, "class_names", None) or [])
    name = class_names[top_class(target)]
    if not hasattr(world, "class_posterior") or name not in names:
        return None
    with torch.no_grad():
        return world.class_posterior(latents)[:, names.index(name)].detach().cpu().double()


def contradicted(shares: torch.Tensor) -> torch.Tensor:
    """``(n,)`` bool: the samples the world's labels give under half to the target's top class."""
    return shares < 0.5


def world_label_metrics(shares: torch.Tensor | None) -> dict[str, Any]:
    """``world_label_share`` (the mean of :func:`world_label_shares`) and ``world_label_contradictions``
    (samples the world gives under half to the top class); both ``None`` without labels.

    Examples
    --------
    >>> world_label_metrics(torch.tensor([1.0, 0.25, 0.75], dtype=torch.float64))
    {'world_label_share': 0.6666666666666666, 'world_label_contradictions': 1}
    """
    if shares is None:
        return {"world_label_share": None, "world_label_contradictions": None}
    return {"world_label_share": float(shares.double().mean()),
            "world_label_contradictions": int(contradicted(shares).sum())}


def contradiction_note(m: dict[str, Any], class_names: Sequence[str], target: Sequence[float]) -> str | None:
    """A sentence where a confident level set holds samples of another class by the world's labels."""
    count = m.get("world_label_contradictions")
    if not count or not is_confident(target):
        return None
    name = class_names[top_class(target)]
    return (f"Finding: {count} of {m['num_samples']} samples ({count / m['num_samples']:.1%}) conditioned on "
            f"'{name}' with P({name}) about {max(target):g} are another class by the world's own labels (red "
            f"labels in the gallery): inputs the classifier confidently calls '{name}' that are not.")


def samples_csv(key: str, world_name: str, target_name: str, latent_names: Sequence[str],
                class_names: Sequence[str], latents: torch.Tensor, probs: torch.Tensor,
                target: Sequence[float]) -> DataFile:
    """Every kept sample as a CSV row: its rank by closeness to the target, latents, class probabilities."""
    distance = distance_to_target(probs.detach().cpu(), target)
    order = torch.sort(distance, stable=True).indices.tolist()  # stable: ties keep sample order
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rank", "sample", "distance_to_target", *latent_names, *(f"p_{c}" for c in class_names)])
    z, p = latents.detach().cpu().tolist(), probs.detach().cpu().tolist()
    for rank, i in enumerate(order, start=1):
        values = [float(distance[i]), *z[i], *p[i]]
        writer.writerow([rank, i, *(f"{v:.{CSV_DIGITS}g}" for v in values)])
    return DataFile(f"{key}_samples", f"samples of '{target_name}' on {world_name} (CSV)", out.getvalue())


# --------------------------------------------------------------------------- verdict


def _in_band(target: Sequence[float]) -> bool:
    """A two-class target inside the ambiguous band: its samples are read by the band, not by Delta."""
    return len(target) == 2 and min(target) >= AMBIGUOUS_BAND[0]


def reached(m: dict[str, Any], target: Sequence[float]) -> bool:
    """Whether a non-confident level set found inputs at its target: a sample in the ambiguous band for a
    50/50 target, else samples within :data:`REACHED_DELTA` of the target per class on average."""
    if _in_band(target):
        return round(m["fraction_in_ambiguous_band"] * m["num_samples"]) >= 1
    return m["delta"] <= REACHED_DELTA


def finding(m: dict[str, Any], class_names: Sequence[str], target: Sequence[float]) -> str:
    """What the level set shows, in words."""
    name = class_names[top_class(target)]
    if is_confident(target):
        text = f"mean P({name}) {m['mean_confidence']:.3f}, lowest {m['min_confidence']:.3f}"
        count = m.get("world_label_contradictions")
        if count:
            text += f"; {count} of {m['num_samples']} samples are not '{name}' by the world's labels"
        return text
    stray = f"the samples stray {m['delta']:.3f} per class from the target on average"
    if _in_band(target):  # either class's probability reads the same on a 50/50 target
        band = f"both classes' probabilities within {AMBIGUOUS_BAND[0]}-{AMBIGUOUS_BAND[1]}"
        return (f"ambiguous inputs found: {m['fraction_in_ambiguous_band']:.0%} of samples have {band}"
                if reached(m, target) else f"no ambiguous inputs: no sample has {band}")
    if reached(m, target):
        return f"inputs at the target found: {stray}"
    return f"loosely matched: {stray} (over {REACHED_DELTA}; a higher concentration asks for closer matches)"


def key_figure(m: dict[str, Any]) -> str:
    """Delta, beside the paper's where there is one."""
    if m.get("paper_delta") is not None:
        return f"Delta {100 * m['delta']:.2f}% (paper {100 * m['paper_delta']:.2f}%)"
    return f"Delta {m['delta']:.4f}"


def trust(diagnostics: dict[str, Any]) -> str:
    """Converged or not, with the statistic that decided it."""
    nested = diagnostics.get("nested_rhat_max")
    figure = (f"nested R-hat {beyond(nested, NESTED_RHAT_THRESHOLD)}" if nested is not None else
              f"split R-hat {beyond(diagnostics['rhat_max'], RHAT_THRESHOLD)}")
    if diagnostics["converged"]:
        return f"converged ({figure})"
    failed = (diagnostics.get("smc") or {}).get("failed") or []
    smc = f"; {len(failed)} SMC check{'s' if len(failed) > 1 else ''} failed" if failed else ""
    return f"not converged ({figure}{smc})"


def row(world_name: str, target_name: str, target: Sequence[float], m: dict[str, Any],
        diagnostics: dict[str, Any], class_names: Sequence[str]) -> VerdictRow:
    """One world and target's line of the verdict."""
    return VerdictRow(item=f"{world_name}: {target_name}", finding=finding(m, class_names, target),
                      key_figure=key_figure(m), trusted=bool(diagnostics["converged"]), trust=trust(diagnostics),
                      section=target_key(world_name, target_name))


def headline(rows: Sequence[VerdictRow], ambiguous: Sequence[bool | None], contradictions: int) -> str:
    """``"5 of 8 level sets did not converge ...; ambiguous inputs found on 2 of 4 ambiguous targets."``

    ``ambiguous`` holds, per row, ``None`` for a confident target, else whether its inputs were found
    (:func:`reached`).
    """
    bad = sum(not r.trusted for r in rows)
    if len(rows) == 1:
        text = ("The level set converged" if not bad else
                "The level set did not converge: its samples cannot be trusted yet")
    else:
        text = (f"All {len(rows)} level sets converged" if not bad else
                f"{bad} of {len(rows)} level sets did not converge: their samples cannot be trusted yet")
    found = [a for a in ambiguous if a is not None]
    if len(found) == 1:
        text += "; ambiguous inputs found" if found[0] else "; no ambiguous inputs found"
    elif found:
        text += f"; ambiguous inputs found on {sum(found)} of {len(found)} ambiguous targets"
    if contradictions:
        text += f"; {contradictions} confident samples are another class by the world's labels"
    return text + "."


def highlight(key: str, item: str, image: torch.Tensor, label: str, why: str) -> Highlight:
    """A verdict image: one sample, large, linked to its target's section."""
    return Highlight(single_image(f"verdict_{key}", item, why, image, label, data={"label": label}), key)


def pick_highlights(candidates: Sequence[tuple[float, Callable[[], Highlight]]]) -> list[Highlight]:
    """The :data:`~ppl_audit.report.model.MAX_HIGHLIGHTS` candidates of lowest priority (ties: first
    given first), drawn only once chosen: rendering an image costs more than ranking it.

    Examples
    --------
    >>> pick_highlights([(1, lambda: "b"), (0, lambda: "a"), (2, lambda: "c"), (0, lambda: "d")])
    ['a', 'd', 'b']
    """
    order = sorted(range(len(candidates)), key=lambda i: (candidates[i][0], i))
    return [candidates[i][1]() for i in order[:MAX_HIGHLIGHTS]]


def verdict(rows: list[VerdictRow], ambiguous: list[bool | None], contradictions: int, audited: dict[str, Any],
            highlights: list[Highlight]) -> Verdict:
    """The level-set audit's verdict (see :func:`headline` for ``ambiguous``)."""
    return Verdict(headline=headline(rows, ambiguous, contradictions), audited=audited, rows=rows,
                   highlights=highlights)


__all__ = [
    "CONFIDENT_TARGET", "REACHED_DELTA", "contradicted", "contradiction_note", "distance_to_target", "finding",
    "headline", "highlight", "is_confident", "key_figure", "pick_highlights", "ranked_distinct", "reached", "row",
    "samples_csv", "target_key", "top_class", "trust", "verdict", "world_label_metrics", "world_label_shares",
]
