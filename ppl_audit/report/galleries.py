"""Galleries that show a finding: samples ranked beside prior draws, and the verdict's single images.

A gallery is read left to right: the level set's samples, the closest to the
target first, then (to their right) draws from the prior with the same labels,
so that a reader sees at once what conditioning on the prediction changed.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from matplotlib.figure import Figure as MplFigure

from ppl_audit.report.figures import png_bytes
from ppl_audit.report.model import Figure

GALLERY_COLUMNS = 4  # columns of each half of a ranked gallery: two 4-wide halves fit a 1,400-px page
TILE_INCHES = 1.25  # one image and its label
HIGHLIGHT_INCHES = 2.6  # a verdict image: large enough to read a digit's stroke


def _show(ax, image: torch.Tensor, label: str, colour: str = "black") -> None:
    """One grey (or RGB) image ``(C, H, W)`` with its label above it."""
    img = image.detach().cpu().clamp(0, 1)
    if img.shape[0] == 3:
        ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
    else:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(label, fontsize=7.5, color=colour)
    ax.set_axis_off()


def ranked_gallery(
    name: str,
    title: str,
    caption: str,
    images: torch.Tensor,
    labels: Sequence[str],
    prior_images: torch.Tensor,
    prior_labels: Sequence[str],
    *,
    flagged: Sequence[bool] | None = None,
    data: dict | None = None,
    columns: int = GALLERY_COLUMNS,
) -> Figure:
    """Level-set samples (already ranked, best first) on the left, prior draws on the right.

    Parameters
    ----------
    name, title, caption : str
    images : torch.Tensor, (n, C, H, W)
        The samples, in rank order.
    labels : sequence of str
        One per sample (``"#1 P(house)=0.501"``).
    prior_images : torch.Tensor, (m, C, H, W)
    prior_labels : sequence of str
    flagged : sequence of bool, optional
        Samples whose label is drawn in red (those that contradict the class they were conditioned on).
    data : dict, optional
        The figure's JSON data.
    columns : int
        Columns of each half.

    Returns
    -------
    Figure

    Examples
    --------
    >>> fig = ranked_gallery("g", "t", "c", torch.zeros(3, 1, 8, 8), ["a", "b", "c"],
    ...                      torch.ones(2, 1, 8, 8), ["p", "q"])
    >>> fig.png[:4]
    b'\\x89PNG'
    """
    n, m = images.shape[0], prior_images.shape[0]
    rows = max(1, math.ceil(max(n, m) / columns))
    fig = MplFigure(figsize=(TILE_INCHES * (2 * columns + 1), TILE_INCHES * rows + 0.7))
    grid = fig.add_gridspec(rows, 2 * columns + 1, width_ratios=[1] * columns + [0.35] + [1] * columns)
    flagged = list(flagged) if flagged is not None else [False] * n
    for i in range(n):
        r, c = divmod(i, columns)
        _show(fig.add_subplot(grid[r, c]), images[i], labels[i], "#cf222e" if flagged[i] else "black")
    for i in range(m):
        r, c = divmod(i, columns)
        _show(fig.add_subplot(grid[r, columns + 1 + c]), prior_images[i], prior_labels[i], "#59636e")
    fig.text(0.25, 0.995, "level set: closest to the target first", ha="center", va="top", fontsize=9,
             weight="bold")
    fig.text(0.76, 0.995, "prior draws, for comparison", ha="center", va="top", fontsize=9, color="#59636e")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return Figure(name, title, caption, png_bytes(fig), data or {})


def single_image(name: str, title: str, caption: str, image: torch.Tensor, label: str, *,
                 data: dict | None = None) -> Figure:
    """One image ``(C, H, W)``, large, with its label: a verdict's highlight.

    Examples
    --------
    >>> single_image("h", "t", "c", torch.zeros(1, 8, 8), "P(house)=0.5").name
    'h'
    """
    fig = MplFigure(figsize=(HIGHLIGHT_INCHES, HIGHLIGHT_INCHES + 0.35))
    _show(fig.add_subplot(1, 1, 1), image, label)
    fig.axes[0].title.set_fontsize(10)
    fig.tight_layout()
    return Figure(name, title, caption, png_bytes(fig), data or {})


__all__ = ["ranked_gallery", "single_image"]
