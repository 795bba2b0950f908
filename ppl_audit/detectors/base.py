"""The Detector contract (after pytorch-ood): ``fit(...) -> self``, ``score(x) -> (N,)``.

Higher scores mean more reason to reject (more out-of-distribution, less
certain). Metrics take scores and never guess the sign; a detector whose
natural statistic runs the other way (a certainty, a likelihood) negates or
complements it here, once, and says so in its docstring.
"""

from __future__ import annotations

import torch

from ppl_audit.errors import ModelOutputError


class Detector:
    """Base class: subclasses implement :meth:`score` and, when they learn anything, :meth:`fit`.

    Attributes
    ----------
    name : str
        Short name used in tables and figures.
    score_meaning : str
        One sentence saying what a higher score means, for reports.
    """

    name: str = "detector"
    score_meaning: str = "higher = more reason to reject"

    def fit(self, *args, **kwargs) -> "Detector":
        """Learn what the detector needs (nothing, by default); return ``self``."""
        return self

    def score(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """Scores ``(N,)``: higher = more reason to reject."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x)


def check_scores(scores: torch.Tensor, num_inputs: int, name: str) -> torch.Tensor:
    """Raise :class:`ModelOutputError` unless ``scores`` is ``(N,)`` and finite; return it.

    NaN is never silently dropped: a score that is NaN is a model failure.

    Examples
    --------
    >>> check_scores(torch.tensor([0.1, float("nan")]), 2, "toy")
    Traceback (most recent call last):
    ...
    ppl_audit.errors.ModelOutputError: detector 'toy' returned 1 non-finite score(s) of 2
    """
    if scores.shape != (num_inputs,):
        raise ModelOutputError(f"detector {name!r} returned shape {tuple(scores.shape)}, expected ({num_inputs},)")
    bad = int((~torch.isfinite(scores)).sum())
    if bad:
        raise ModelOutputError(f"detector {name!r} returned {bad} non-finite score(s) of {num_inputs}")
    return scores


__all__ = [
    "Detector",
    "check_scores",
]
