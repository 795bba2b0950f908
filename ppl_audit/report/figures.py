"""Figures for reports, drawn with matplotlib's object API (no pyplot state).

Each function returns a :class:`~ppl_audit.report.model.Figure`: the PNG and
the JSON-safe data it was drawn from, rounded to ``DATA_DECIMALS``.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from ppl_audit.report.model import Figure

DATA_DECIMALS = 4  # figure data is for redrawing; 4 decimals keep the JSON small
DPI = 100


def png_bytes(fig, dpi: int = DPI) -> bytes:
    """Render a matplotlib figure to PNG bytes (no timestamp metadata)."""
    if fig.canvas is None or not hasattr(fig.canvas, "print_png"):
        FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def rounded(x) -> list:
    """``x`` (tensor or array) as nested lists rounded to ``DATA_DECIMALS``."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return np.round(arr.astype(np.float64), DATA_DECIMALS).tolist()


def image_grid(
    name: str,
    title: str,
    caption: str,
    images: torch.Tensor,
    labels: Sequence[str],
    *,
    data: dict | None = None,
    columns: int = 8,
) -> Figure:
    """A grid of grey images ``(n, 1, H, W)`` with a label under each.

    Examples
    --------
    >>> fig = image_grid("g", "t", "c", torch.zeros(2, 1, 8, 8), ["a", "b"])
    >>> fig.png[:4]
    b'\\x89PNG'
    """
    n = images.shape[0]
    cols = min(columns, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig = MplFigure(figsize=(1.3 * cols, 1.45 * rows + 0.4))
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_axis_off()
        if i < n:
            ax.imshow(images[i, 0].detach().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(labels[i], fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return Figure(name, title, caption, png_bytes(fig), data or {})


def latent_pairs(
    name: str,
    title: str,
    caption: str,
    latent_names: Sequence[str],
    prior_latents: torch.Tensor,
    prior_score: torch.Tensor,
    sample_latents: torch.Tensor,
    *,
    score_label: str,
    pairs: Sequence[tuple[int, int]] | None = None,
) -> Figure:
    """Posterior samples (black) over prior samples coloured by a score, one panel per latent pair.

    The level-set paper's Figure 3 shows the same in 3-D; pairwise panels are
    easier to read and work for any number of latents.
    """
    d = prior_latents.shape[1]
    pairs = list(pairs) if pairs is not None else [(i, j) for i in range(min(d, 3)) for j in range(i + 1, min(d, 3))]
    fig = MplFigure(figsize=(4.2 * len(pairs), 3.9))
    pl, ps, sl = (t.detach().cpu().numpy() for t in (prior_latents, prior_score, sample_latents))
    mappable = None
    for k, (i, j) in enumerate(pairs):
        ax = fig.add_subplot(1, len(pairs), k + 1)
        mappable = ax.scatter(pl[:, i], pl[:, j], c=ps, cmap="coolwarm", vmin=0, vmax=1, s=5, alpha=0.6, linewidths=0)
        ax.scatter(sl[:, i], sl[:, j], c="black", s=7, marker="x", linewidths=0.7, label="level-set samples")
        ax.set_xlabel(latent_names[i])
        ax.set_ylabel(latent_names[j])
    fig.axes[0].legend(loc="upper right", fontsize=7)
    if mappable is not None:
        fig.colorbar(mappable, ax=fig.axes, label=score_label, shrink=0.85)
    fig.suptitle(title, fontsize=10)
    data = {
        "latent_names": list(latent_names),
        "pairs": [list(p) for p in pairs],
        "score_label": score_label,
        "prior_latents": rounded(prior_latents),
        "prior_score": rounded(prior_score),
        "sample_latents": rounded(sample_latents),
    }
    return Figure(name, title, caption, png_bytes(fig), data)


def score_histogram(
    name: str,
    title: str,
    caption: str,
    series: dict[str, torch.Tensor],
    *,
    xlabel: str,
    band: tuple[float, float] | None = None,
    bins: int = 40,
) -> Figure:
    """Density histograms of one score for several groups, on ``[0, 1]``."""
    fig = MplFigure(figsize=(6.0, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    data = {"bin_edges": np.round(edges, DATA_DECIMALS).tolist(), "counts": {}}
    for label, values in series.items():
        v = values.detach().cpu().numpy()
        counts, _ = np.histogram(v, bins=edges)
        data["counts"][label] = counts.tolist()
        ax.hist(v, bins=edges, density=True, alpha=0.55, label=f"{label} (n={len(v)})")
    if band is not None:
        ax.axvspan(*band, color="grey", alpha=0.15, label=f"band {band[0]:.2f}-{band[1]:.2f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return Figure(name, title, caption, png_bytes(fig), data)


def line_plot(
    name: str,
    title: str,
    caption: str,
    series: dict[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    vline: float | None = None,
) -> Figure:
    """Lines over a step index (for example acceptance rate per MCMC step)."""
    fig = MplFigure(figsize=(6.0, 3.0))
    ax = fig.add_subplot(1, 1, 1)
    for label, ys in series.items():
        ax.plot(np.arange(len(ys)), ys, label=label, linewidth=1)
    if vline is not None:
        ax.axvline(vline, color="grey", linestyle="--", linewidth=0.8, label="end of warm-up")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    data = {"series": {k: rounded(v) for k, v in series.items()}, "vline": vline}
    return Figure(name, title, caption, png_bytes(fig), data)
