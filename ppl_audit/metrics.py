"""Metrics of level-set samples: average deviation, confidence, distinct samples."""

from __future__ import annotations

import torch

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
