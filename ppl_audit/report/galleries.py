"""Galleries that show a finding: samples ranked beside prior draws, and the verdict's single images.

A gallery is read left to right: the level set's samples, the closest to the
target first, then (to their right) draws from the prior with the same labels,
so that a reader sees at once what conditioning on the prediction changed.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure as MplFigure

from ppl_audit.report.figures import png_bytes
from ppl_audit.report.model import Figure

GALLERY_COLUMNS = 4  # columns of each half of a ranked gallery: two 4-wide halves fit a 1,400-px page
TILE_INCHES = 1.25  # one image and its label
LABEL_BAND = 0.3  # the height of the band above a tile that holds its label, as a share of the tile's
TILE_GAP = 0.08  # white between tiles, as a share of a tile's width
SEPARATOR_INCHES = 0.45  # between the gallery's two halves
HEADER_INCHES = 0.35  # the halves' titles
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


def _cell(h: int, w: int) -> tuple[int, int]:
    """The label band above a ``h x w`` tile and the gap around it, in the tile's pixels."""
    return round(LABEL_BAND * h), max(1, round(TILE_GAP * w))


def _mosaic(images: torch.Tensor, rows: int, columns: int) -> np.ndarray:
    """``images`` ``(n, C, H, W)`` as one RGB array of ``rows x columns`` cells on white, each cell a band
    for its label (``LABEL_BAND`` of a tile's height) above the tile and a gap (``TILE_GAP``) around it.

    Grey images (any image without 3 channels: its first) become equal RGB channels, the ``gray`` colour
    map's own mapping of ``[0, 1]``.
    """
    n, _, h, w = images.shape if images.ndim == 4 else (0, 1, 1, 1)
    band, gap = _cell(h, w)
    cell_h, cell_w = band + h + gap, w + gap
    out = np.ones((rows * cell_h, columns * cell_w, 3), dtype=np.float32)
    tiles = images.detach().cpu().clamp(0, 1).float()
    tiles = tiles if tiles.shape[1] == 3 else tiles[:, :1].expand(-1, 3, -1, -1)  # grey: the first channel
    for i in range(n):
        r, c = divmod(i, columns)
        top, left = r * cell_h + band, c * cell_w + gap // 2
        out[top:top + h, left:left + w] = tiles[i].permute(1, 2, 0).numpy()
    return out


def _tile_grid(fig, box, images: torch.Tensor, labels: Sequence[str], colours: Sequence[str], rows: int,
               columns: int) -> None:
    """Draw :func:`_mosaic` in the figure-fraction ``box`` (left, bottom, width, height), labels above tiles.

    One axes and one image for the whole grid: a subplot per tile made the galleries the slowest figures of
    a report (0.6 s each for 24 tiles, most of it in matplotlib's per-axes layout).
    """
    ax = fig.add_axes(box)
    ax.set_axis_off()
    ax.imshow(_mosaic(images, rows, columns), interpolation="nearest", aspect="auto")
    if images.ndim != 4 or not len(images):
        return
    h, w = images.shape[-2:]
    band, gap = _cell(h, w)
    for i, (label, colour) in enumerate(zip(labels, colours)):
        r, c = divmod(i, columns)
        ax.text(c * (w + gap) + gap / 2 + w / 2, r * (band + h + gap) + band / 2, label, ha="center",
                va="center", fontsize=7.5, color=colour, clip_on=False)


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
    shape = images.shape if n else prior_images.shape
    h, w = (shape[-2], shape[-1]) if len(shape) == 4 else (1, 1)
    band, gap = _cell(h, w)
    cell_aspect = (band + h + gap) / (w + gap)
    half_w, grid_h = TILE_INCHES * columns, TILE_INCHES * cell_aspect * rows
    width, height = 2 * half_w + SEPARATOR_INCHES + 0.2, grid_h + HEADER_INCHES + 0.1
    fig = MplFigure(figsize=(width, height))
    flagged = list(flagged) if flagged is not None else [False] * n
    bottom = 0.1 / height
    _tile_grid(fig, (0.1 / width, bottom, half_w / width, grid_h / height), images, labels,
               ["#cf222e" if f else "black" for f in flagged], rows, columns)
    _tile_grid(fig, ((0.1 + half_w + SEPARATOR_INCHES) / width, bottom, half_w / width, grid_h / height),
               prior_images, prior_labels, ["#59636e"] * m, rows, columns)
    fig.text(0.25, 0.995, "level set: closest to the target first", ha="center", va="top", fontsize=9,
             weight="bold")
    fig.text(0.76, 0.995, "prior draws, for comparison", ha="center", va="top", fontsize=9, color="#59636e")
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
