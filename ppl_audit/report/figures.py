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
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import MaxNLocator, NullLocator

from ppl_audit.errors import InvalidInputError
from ppl_audit.report.model import Figure

DATA_DECIMALS = 4  # figure data is for redrawing; 4 decimals keep the JSON small
DPI = 100
SYMLOG_SPAN = 2.0  # value_histograms draws on a signed log axis when the largest score is > 100x the median


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
    """A grid of grey images ``(n, 1, H, W)`` with a label (one or more lines) above each.

    Examples
    --------
    >>> fig = image_grid("g", "t", "c", torch.zeros(2, 1, 8, 8), ["a", "b"])
    >>> fig.png[:4]
    b'\\x89PNG'
    """
    n = images.shape[0]
    cols = min(columns, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    lines = max((str(label).count("\n") + 1 for label in labels[:n]), default=1)  # room for multi-line labels
    fig = MplFigure(figsize=(1.3 * cols, (1.3 + 0.15 * lines) * rows + 0.4))
    for i in range(rows * cols):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_axis_off()
        if i < n:
            ax.imshow(images[i, 0].detach().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(labels[i], fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return Figure(name, title, caption, png_bytes(fig), data or {})


PAIR_PANEL_INCHES = 2.8  # side of one panel of the latent pairs' corner plot
PAIR_PANEL_INCHES_MANY = 2.3  # ... with 4 or more columns, so that 6 latents (5 columns) fit 1,300 px


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
    easier to read and work for any number of latents. The panels form a
    corner plot: pair ``(i, j)`` sits in column ``i`` and row ``j - 1``, so each
    column shares its x latent and each row its y latent, and every latent
    appears (6 latents: 15 panels on a 5 x 5 grid).

    Parameters
    ----------
    name, title, caption : str
    latent_names : sequence of str
        ``D`` names, one per column of the latents.
    prior_latents : torch.Tensor, (N, D)
    prior_score : torch.Tensor, (N,)
        The score the prior dots are coloured by, on ``[0, 1]``.
    sample_latents : torch.Tensor, (n, D)
    score_label : str
        The colour bar's label, for example ``"P(house)"``.
    pairs : sequence of (int, int), optional
        Pairs ``(i, j)`` with ``i < j`` to draw; default every pair.

    Returns
    -------
    Figure
        ``data`` holds the names, the pairs drawn, the score's label and the latents and scores.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> fig = latent_pairs("p", "t", "c", ["a", "b", "c", "d"], torch.rand(20, 4, generator=g),
    ...                    torch.rand(20, generator=g), torch.rand(5, 4, generator=g), score_label="P(x)")
    >>> len(fig.data["pairs"]), sorted({i for p in fig.data["pairs"] for i in p})
    (6, [0, 1, 2, 3])
    """
    d = prior_latents.shape[1]
    if d < 2:
        raise InvalidInputError(f"latent pairs need at least 2 latents, got {d}")
    pairs = [(int(i), int(j)) for i, j in pairs] if pairs is not None else [
        (i, j) for i in range(d) for j in range(i + 1, d)]
    if not pairs or any(not 0 <= i < j < d for i, j in pairs):
        raise InvalidInputError(f"pairs must be (i, j) with 0 <= i < j < {d}, got {pairs}")
    cols = sorted({i for i, _ in pairs})
    rows = sorted({j for _, j in pairs})
    side = PAIR_PANEL_INCHES if len(cols) < 4 else PAIR_PANEL_INCHES_MANY  # 5 columns stay under 1,300 px
    # Fixed margins in inches (constrained layout took half the drawing time on 15 panels): room for
    # the outer tick labels and latent names, the title above, the colour bar's column on the right.
    left, right, bottom, top, gap = 0.7, 1.1, 0.6, 0.45, 0.12
    width, height = side * len(cols) + left + right, side * len(rows) + bottom + top
    fig = MplFigure(figsize=(width, height))
    grid = fig.add_gridspec(len(rows), len(cols), left=left / width, right=1 - right / width,
                            bottom=bottom / height, top=1 - top / height, wspace=gap, hspace=gap)
    pl, ps, sl = (t.detach().cpu().numpy() for t in (prior_latents, prior_score, sample_latents))
    both = np.concatenate([pl, sl])
    low, high = both.min(axis=0), both.max(axis=0)
    pad = 0.04 * np.where(high > low, high - low, 1.0)
    limits = np.stack([low - pad, high + pad], axis=1)  # one range per latent, shared by its row and column
    mappable = None
    panels = []
    for i, j in pairs:
        r, c = rows.index(j), cols.index(i)
        ax = fig.add_subplot(grid[r, c])
        mappable = ax.scatter(pl[:, i], pl[:, j], c=ps, cmap="coolwarm", vmin=0, vmax=1, s=4, alpha=0.6,
                              linewidths=0)
        ax.scatter(sl[:, i], sl[:, j], c="black", s=6, marker="x", linewidths=0.6, label="level-set samples")
        ax.set_xlim(*limits[i])
        ax.set_ylim(*limits[j])
        # Ticks and names on the outer edge only, as in a corner plot: the bottom panel of a column, the first
        # of a row (inner panels have none, which also halves the drawing time of 15 panels).
        on_bottom = r == len(rows) - 1 or (i, rows[r + 1]) not in pairs
        on_left = c == 0 or (cols[c - 1], j) not in pairs
        for shown, axis, label in ((on_bottom, ax.xaxis, latent_names[i]), (on_left, ax.yaxis, latent_names[j])):
            if shown:
                axis.set_major_locator(MaxNLocator(nbins=4))
                axis.set_label_text(label, fontsize=9)
            else:
                axis.set_major_locator(NullLocator())
        ax.tick_params(labelsize=7)
        panels.append(ax)
    handles, labels = panels[0].get_legend_handles_labels()
    if (cols[-1], rows[0]) in pairs:  # no empty corner: the legend goes in the first panel
        panels[0].legend(handles, labels, loc="upper right", fontsize=7)
    else:  # the empty top-right corner of the grid holds it
        corner = fig.add_subplot(grid[0, -1])
        corner.set_axis_off()
        corner.legend(handles, labels, loc="upper right", fontsize=8, markerscale=1.5)
    bar_height = min(side * len(rows), 4.0) / height
    bar = fig.add_axes(((width - right + 0.2) / width, 1 - top / height - bar_height, 0.15 / width, bar_height))
    fig.colorbar(mappable, cax=bar, label=score_label)
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
    target: float | None = None,
) -> Figure:
    """Density histograms of one score for several groups, on ``[0, 1]``.

    Parameters
    ----------
    name, title, caption : str
    series : dict of str to torch.Tensor
        Each group's scores (1-D).
    xlabel : str
        The score's name, for example ``"P(house)"``; say the class, so that the histogram and
        the figures beside it use one class convention.
    band : (float, float), optional
        A band to shade (for example the ambiguous band).
    bins : int, default 40
    target : float, optional
        The score the samples aim at, drawn as a dashed red line.

    Returns
    -------
    Figure
        ``data``: ``bin_edges``, ``counts`` per group, ``xlabel``, ``band`` and ``target``.

    Examples
    --------
    >>> fig = score_histogram("h", "t", "c", {"a": torch.tensor([0.1, 0.9])}, xlabel="P(house)", target=0.5)
    >>> fig.data["counts"]["a"][0], fig.data["xlabel"], fig.data["target"]
    (0, 'P(house)', 0.5)
    """
    fig = MplFigure(figsize=(6.0, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    edges = np.linspace(0.0, 1.0, bins + 1)
    data = {"bin_edges": np.round(edges, DATA_DECIMALS).tolist(), "counts": {}, "xlabel": xlabel,
            "band": None if band is None else [float(b) for b in band],
            "target": None if target is None else float(target)}
    for label, values in series.items():
        v = values.detach().cpu().numpy()
        counts, _ = np.histogram(v, bins=edges)
        data["counts"][label] = counts.tolist()
        # one step patch per group: hist's bar per bin cost 0.1 s a group in matplotlib's artists
        density = counts / max(counts.sum(), 1) / np.diff(edges)
        ax.stairs(density, edges, fill=True, alpha=0.55, label=f"{label} (n={len(v)})")
    if band is not None:
        ax.axvspan(*band, color="grey", alpha=0.15, label=f"band {band[0]:.2f}-{band[1]:.2f}")
    if target is not None:
        ax.axvline(target, color="tab:red", linestyle="--", linewidth=1, label=f"target {xlabel} = {target:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    # fixed margins (inches: log tick labels and the y label on the left, the title on top): a layout engine
    # draws the figure once more to measure it, half of this figure's time
    fig.subplots_adjust(left=0.8 / 6.0, right=1 - 0.15 / 6.0, bottom=0.55 / 3.4, top=1 - 0.35 / 3.4)
    return Figure(name, title, caption, png_bytes(fig), data)


VLINE_STYLES = ("--", ":", "-.")  # line_plot's vertical lines: one style per label


def line_plot(
    name: str,
    title: str,
    caption: str,
    series: dict[str, Sequence[float]],
    *,
    xlabel: str,
    ylabel: str,
    vline: float | None = None,
    vlines: dict[str, Sequence[float]] | None = None,
) -> Figure:
    """Lines over a step index (for example acceptance rate per MCMC step), with labelled vertical lines.

    Parameters
    ----------
    name, title, caption : str
    series : dict of str to sequence of float
        Each line's values at steps ``0, 1, ...``.
    xlabel, ylabel : str
    vline : float, optional
        Shorthand for ``vlines={"end of warm-up": [vline]}``.
    vlines : dict of str to sequence of float, optional
        Vertical lines at these steps, one legend entry (and line style) per label: where a phase
        ends, for example ``{"kept draws start": [155]}``.

    Returns
    -------
    Figure
        ``data``: ``series`` and ``vlines`` (label to steps), as drawn.

    Examples
    --------
    >>> fig = line_plot("a", "t", "c", {"acc": [0.5, 0.4, 0.3]}, xlabel="step", ylabel="acceptance", vline=1)
    >>> fig.data["vlines"]
    {'end of warm-up': [1.0]}
    """
    marks = dict(vlines or {})
    if vline is not None:
        marks.setdefault("end of warm-up", [vline])
    marks = {label: [float(x) for x in xs] for label, xs in marks.items() if len(xs)}
    fig = MplFigure(figsize=(8.0 if marks else 6.0, 3.0))
    ax = fig.add_subplot(1, 1, 1)
    for label, ys in series.items():
        ax.plot(np.arange(len(ys)), ys, label=label, linewidth=1)
    for k, (label, xs) in enumerate(marks.items()):
        for n, x in enumerate(xs):
            ax.axvline(x, color="black" if k == 0 else "grey", linestyle=VLINE_STYLES[k % len(VLINE_STYLES)],
                       linewidth=0.9, label=label if n == 0 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if marks:  # outside, on the right: the lines' labels are long and the curve runs across the whole panel
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    data = {"series": {k: rounded(v) for k, v in series.items()}, "vlines": marks}
    return Figure(name, title, caption, png_bytes(fig), data)


def tempering_plot(
    name: str,
    title: str,
    caption: str,
    schedules: Sequence[Sequence[float]],
    run_groups: Sequence[int],
    ess_per_stage: Sequence[Sequence[float]],
    *,
    group_label: str = "round",
) -> Figure:
    """Every SMC run's tempering schedule (left) and the ESS fraction per stage (right).

    Each run is one thin line, coloured by its group (the round it ran in), so that all of them
    are drawn however many there are; the legend counts the runs of each group.

    Parameters
    ----------
    name, title, caption : str
    schedules : sequence of sequence of float
        One schedule per run: its inverse temperatures ``beta`` from 0 to 1, stage by stage.
    run_groups : sequence of int
        The group (round) of every run, ``0, 1, ...``.
    ess_per_stage : sequence of sequence of float
        Per group: the mean ESS fraction of its runs' particles before each resampling.
    group_label : str, default "round"

    Returns
    -------
    Figure
        ``data``: ``schedules``, ``run_groups``, ``ess_per_stage`` and ``group_label``, as drawn.

    Examples
    --------
    >>> fig = tempering_plot("t", "t", "c", [[0.0, 0.5, 1.0], [0.0, 0.4, 1.0]], [0, 0], [[0.6, 0.7]])
    >>> len(fig.data["schedules"]), fig.data["run_groups"]
    (2, [0, 0])
    """
    if len(run_groups) != len(schedules):
        raise InvalidInputError(f"tempering_plot needs one group per run, got {len(run_groups)} for "
                                f"{len(schedules)} runs")
    groups = sorted(set(int(g) for g in run_groups))
    fig = MplFigure(figsize=(9.0, 3.4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.83, wspace=0.25)  # fixed: quicker than a layout engine
    left, right = fig.subplots(1, 2)
    for g in groups:
        runs = [i for i, rg in enumerate(run_groups) if int(rg) == g]
        for n, i in enumerate(runs):
            left.plot(np.arange(len(schedules[i])), schedules[i], color=f"C{g}", alpha=0.5, linewidth=0.8,
                      label=f"{group_label} {g + 1}: {len(runs)} runs" if n == 0 else None)
    for g, ess in enumerate(ess_per_stage):
        right.plot(np.arange(1, len(ess) + 1), ess, color=f"C{g}", marker="o", markersize=3, linewidth=1,
                   label=f"{group_label} {g + 1}")
    left.set_xlabel("stage")
    left.set_ylabel("inverse temperature beta")
    left.set_title(f"every run's schedule ({len(schedules)} runs)", fontsize=9)
    right.set_xlabel("stage")
    right.set_ylabel("ESS fraction before resampling")
    right.set_ylim(0, 1.05)
    right.set_title("mean over the runs still tempering", fontsize=9)
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # stages are whole numbers
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    data = {"group_label": group_label, "schedules": [rounded(s) for s in schedules],
            "run_groups": [int(g) for g in run_groups], "ess_per_stage": [rounded(e) for e in ess_per_stage]}
    return Figure(name, title, caption, png_bytes(fig), data)


def xy_plot(
    name: str,
    title: str,
    caption: str,
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    step: bool = True,
) -> Figure:
    """Curves given as ``{label: (xs, ys)}`` (for example risk against coverage), drawn as steps by default.

    Examples
    --------
    >>> fig = xy_plot("rc", "t", "c", {"a": ([0.5, 1.0], [0.0, 0.1])}, xlabel="coverage", ylabel="risk")
    >>> fig.data["series"]["a"]["y"]
    [0.0, 0.1]
    """
    fig = MplFigure(figsize=(6.0, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    for label, (xs, ys) in series.items():
        if step:
            ax.step(xs, ys, where="post", label=label, linewidth=1)
        else:
            ax.plot(xs, ys, label=label, linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    data = {"series": {k: {"x": rounded(xs), "y": rounded(ys)} for k, (xs, ys) in series.items()}}
    return Figure(name, title, caption, png_bytes(fig), data)


def principal_components(x: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PCA of the rows of ``x`` ``(N, D)`` by SVD of the centred data (``torch.linalg``).

    Parameters
    ----------
    x : torch.Tensor, (N, D)
    k : int
        Components kept, ``1 <= k <= D``.

    Returns
    -------
    mean : torch.Tensor, (D,)
    components : torch.Tensor, (k, D)
        Orthonormal directions of largest variance, each signed so that its
        largest-magnitude loading is positive (deterministic output).
    explained : torch.Tensor, (k,)
        Share of the total variance along each component.

    Examples
    --------
    >>> x = torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
    >>> mean, comps, explained = principal_components(x, 1)
    >>> comps.tolist(), round(float(explained[0]), 2)
    ([[1.0, 0.0]], 0.8)
    """
    if x.ndim != 2 or not 1 <= k <= x.shape[1]:
        raise ValueError(f"x must be (N, D) with 1 <= k <= D, got shape {tuple(x.shape)} and k={k}")
    x = x.detach().to(torch.float64).cpu()
    mean = x.mean(0)
    _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    comps = vh[:k]
    idx = comps.abs().argmax(1)
    comps = comps * torch.sign(comps.gather(1, idx.unsqueeze(1)))
    var = s**2
    explained = var[:k] / var.sum().clamp(min=torch.finfo(var.dtype).tiny)
    return mean, comps, explained


def latent_embedding(
    name: str,
    title: str,
    caption: str,
    prior_latents: torch.Tensor,
    prior_class: torch.Tensor,
    sample_latents: torch.Tensor,
    class_names: Sequence[str],
) -> Figure:
    """Level-set samples (black) over prior samples coloured by predicted class, in 2-D PCA coordinates.

    The components are fitted to prior and level-set latents together, so the
    axes show where both spread (the level-set paper's Figure 4).

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> fig = latent_embedding("e", "t", "c", torch.randn(50, 5, generator=g), torch.arange(50) % 10,
    ...                        torch.randn(10, 5, generator=g), [str(d) for d in range(10)])
    >>> fig.data["explained_variance_ratio"][0] > 0
    True
    """
    both = torch.cat([prior_latents, sample_latents]).detach().cpu()
    mean, comps, explained = principal_components(both, 2)
    project = lambda z: ((z.detach().cpu().to(torch.float64) - mean) @ comps.T).numpy()  # noqa: E731
    pp, sp = project(prior_latents), project(sample_latents)
    pc = prior_class.detach().cpu().numpy()
    fig = MplFigure(figsize=(6.4, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    palette = "tab10" if len(class_names) <= 10 else "tab20"
    cmap = colormaps[palette]
    for c, label in enumerate(class_names):
        mask = pc == c
        if mask.any():
            ax.scatter(pp[mask, 0], pp[mask, 1], color=cmap(c % cmap.N), s=5, alpha=0.55, linewidths=0,
                       label=f"prior, class {label}")
    ax.scatter(sp[:, 0], sp[:, 1], c="black", s=9, marker="x", linewidths=0.7, label="level-set samples")
    ax.set_xlabel(f"PC 1 ({100 * float(explained[0]):.0f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * float(explained[1]):.0f}% of variance)")
    ax.legend(fontsize=6, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    data = {
        "class_names": list(class_names),
        "pca_mean": rounded(mean),
        "pca_components": rounded(comps),
        "explained_variance_ratio": rounded(explained),
        "prior_embedding": rounded(pp),
        "prior_class": pc.astype(int).tolist(),
        "sample_embedding": rounded(sp),
    }
    return Figure(name, title, caption, png_bytes(fig), data)


def class_profile(
    name: str,
    title: str,
    caption: str,
    class_names: Sequence[str],
    probs: torch.Tensor,
    target: Sequence[float],
) -> Figure:
    """Per class: the samples' mean prediction with its 5-95% range, and the target (red bars).

    Examples
    --------
    >>> fig = class_profile("p", "t", "c", ["a", "b"], torch.tensor([[0.4, 0.6], [0.5, 0.5]]), [0.5, 0.5])
    >>> fig.data["mean"]
    [0.45, 0.55]
    """
    p = probs.detach().cpu().to(torch.float64)
    mean = p.mean(0)
    lo, hi = torch.quantile(p, 0.05, dim=0), torch.quantile(p, 0.95, dim=0)
    x = np.arange(len(class_names))
    fig = MplFigure(figsize=(max(4.0, 0.55 * len(class_names) + 1.5) + 2.0, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(x, mean.numpy(), width=0.6, color="tab:blue", alpha=0.7, label=f"mean prediction (n={p.shape[0]})")
    ax.errorbar(x, mean.numpy(), yerr=np.stack([(mean - lo).numpy(), (hi - mean).numpy()]), fmt="none",
                ecolor="black", capsize=3, linewidth=0.8, label="5-95% of samples")
    ax.scatter(x, list(target), marker="_", s=400, color="tab:red", linewidths=2, label="target", zorder=3)
    ax.set_xticks(x, list(class_names))
    ax.set_xlabel("class")
    ax.set_ylabel("probability")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    data = {"class_names": list(class_names), "target": [float(t) for t in target], "mean": rounded(mean),
            "q05": rounded(lo), "q95": rounded(hi)}
    return Figure(name, title, caption, png_bytes(fig), data)


def errorbar_plot(
    name: str,
    title: str,
    caption: str,
    x: Sequence[float],
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    reference: dict[str, Sequence[float]] | None = None,
) -> Figure:
    """Lines with error bars over a shared ``x`` (means and standard deviations), plus reference markers.

    ``series`` maps a label to ``(means, stds)``; ``reference`` maps a label to
    values drawn as hollow markers (a paper's figures beside ours).

    Examples
    --------
    >>> fig = errorbar_plot("a", "t", "c", [0.5, 0.9], {"ours": ([80, 85], [1, 2])}, xlabel="tau",
    ...                     ylabel="%", reference={"paper": [75, 86]})
    >>> fig.data["x"], fig.data["reference"]["paper"]
    ([0.5, 0.9], [75.0, 86.0])
    """
    fig = MplFigure(figsize=(6.0, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    xs = np.asarray(x, dtype=float)
    for label, (means, stds) in series.items():
        ax.errorbar(xs, np.asarray(means, dtype=float), yerr=np.asarray(stds, dtype=float), label=label,
                    marker="o", markersize=3, linewidth=1, capsize=3)
    for label, values in (reference or {}).items():
        ax.plot(xs, np.asarray(values, dtype=float), linestyle="none", marker="s", markerfacecolor="none",
                color="black", label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    data = {"x": rounded(xs), "series": {k: {"mean": rounded(m), "std": rounded(s)} for k, (m, s) in series.items()},
            "reference": {k: rounded(v) for k, v in (reference or {}).items()}}
    return Figure(name, title, caption, png_bytes(fig), data)


def rate_plot(
    name: str,
    title: str,
    caption: str,
    labels: Sequence[str],
    rates: Sequence[float | None],
    intervals: Sequence[tuple[float, float]],
    *,
    xlabel: str,
    ylabel: str,
) -> Figure:
    """Rates on a log scale, one per label: a point with its interval, or a downward triangle at an upper bound.

    ``rates[i]`` is ``None`` where only the bound ``intervals[i][1]`` is known.

    Examples
    --------
    >>> fig = rate_plot("r", "t", "c", ["a", "b"], [1e-3, None], [(5e-4, 2e-3), (0.0, 1e-6)], xlabel="k", ylabel="rate")
    >>> fig.data["rate"], fig.data["upper_bound_only"]
    ([0.001, None], [False, True])
    """
    fig = MplFigure(figsize=(6.0, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    floor = min([v for lo_hi in intervals for v in lo_hi if v and v > 0] or [1e-12])
    for i, (rate, (low, high)) in enumerate(zip(rates, intervals)):
        if rate is None:
            ax.plot([i], [max(high, floor)], marker="v", color="grey", linestyle="none")
        else:
            ax.errorbar([i], [rate], yerr=[[rate - max(low, floor / 10)], [high - rate]], marker="o", color="C0",
                        capsize=3, linestyle="none")
    ax.set_yscale("log")
    ax.set_xticks(range(len(labels)), [str(label) for label in labels])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    data = {"labels": [str(label) for label in labels], "rate": [None if r is None else float(r) for r in rates],
            "low": [float(lo) for lo, _ in intervals], "high": [float(hi) for _, hi in intervals],
            "upper_bound_only": [r is None for r in rates]}
    return Figure(name, title, caption, png_bytes(fig), data)


def value_histograms(
    name: str,
    title: str,
    caption: str,
    series: dict[str, torch.Tensor],
    *,
    xlabel: str,
    bins: int = 50,
    clip_quantiles: tuple[float, float] = (0.005, 0.995),
    symlog: bool | None = None,
) -> Figure:
    """Density histograms of one unbounded score for several groups on shared bins.

    The bins span the ``clip_quantiles`` of all values pooled (extreme tails
    would flatten every other group); values outside are counted in the end
    bins, and the counts in ``data`` say how many were clipped. With
    ``symlog`` the values are drawn as ``sign(s) log10(1 + |s|)``, which keeps
    groups orders of magnitude apart readable on one axis; ``None`` (default)
    turns it on when the pooled values span more than ``SYMLOG_SPAN`` decades.

    Examples
    --------
    >>> fig = value_histograms("h", "t", "c", {"a": torch.randn(100), "b": torch.randn(50) + 3}, xlabel="x")
    >>> sorted(fig.data["counts"]), sum(fig.data["counts"]["b"])
    (['a', 'b'], 50)
    """
    arrays = {k: v.detach().cpu().double().numpy().ravel() for k, v in series.items()}
    pooled = np.concatenate(list(arrays.values()))
    if symlog is None:
        magnitude = np.abs(pooled[np.isfinite(pooled)])
        symlog = bool(len(magnitude)) and np.log10(1 + magnitude.max()) - np.log10(1 + np.median(magnitude)) > SYMLOG_SPAN
    if symlog:
        arrays = {k: np.sign(v) * np.log10(1 + np.abs(v)) for k, v in arrays.items()}
        pooled = np.concatenate(list(arrays.values()))
        xlabel = f"sign(s) log10(1 + |s|), s = {xlabel}"
    low, high = np.quantile(pooled, clip_quantiles) if len(pooled) else (0.0, 1.0)
    if not high > low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    fig = MplFigure(figsize=(6.5, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    data = {"bin_edges": np.round(edges, DATA_DECIMALS).tolist(), "counts": {}, "clipped": {}}
    data["symlog"] = symlog
    for label, v in arrays.items():
        clipped = np.clip(v, low, high)
        counts, _ = np.histogram(clipped, bins=edges)
        data["counts"][label] = counts.tolist()
        data["clipped"][label] = int(((v < low) | (v > high)).sum())
        ax.hist(clipped, bins=edges, density=True, alpha=0.5, label=f"{label} (n={len(v)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(fontsize=6, ncol=2)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return Figure(name, title, caption, png_bytes(fig), data)


MONTAGE_GAP = 2  # pixels of white between tiles of a montage
MONTAGE_DPI_SCALE = 0.045  # inches per montage pixel: 28-pixel digits come out ~1.3 cm wide at 100 dpi


def montage(images: torch.Tensor, columns: int) -> torch.Tensor:
    """Tile ``(N, 1, H, W)`` images row by row into one ``(rows*(H+g)-g, columns*(W+g)-g)`` image.

    One picture instead of ``N`` matplotlib axes: a 64-image grid renders in
    a tenth of the time. Gaps are white (1.0) so that black digits stay apart.

    Examples
    --------
    >>> montage(torch.zeros(5, 1, 4, 4), columns=3).shape
    torch.Size([10, 16])
    """
    n, _, h, w = images.shape
    rows = max(1, math.ceil(n / columns))
    g = MONTAGE_GAP
    canvas = torch.ones(rows * (h + g) - g, columns * (w + g) - g)
    for i in range(n):
        r, c = divmod(i, columns)
        canvas[r * (h + g): r * (h + g) + h, c * (w + g): c * (w + g) + w] = images[i, 0]
    return canvas


def montage_figure(name: str, title: str, caption: str, images: torch.Tensor, columns: int, *,
                   row_labels=None, column_labels=None, data=None) -> Figure:
    """:func:`montage` of ``images`` as one report figure, with optional row and column labels.

    Examples
    --------
    >>> montage_figure("grid", "Grid", "Zeros.", torch.zeros(4, 1, 6, 6), 2).name
    'grid'
    """
    canvas = montage(images.detach().cpu().clamp(0, 1), columns)
    height, width = canvas.shape
    fig = MplFigure(figsize=(width * MONTAGE_DPI_SCALE + 1.2, height * MONTAGE_DPI_SCALE + 0.8))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(canvas.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    tile_h, tile_w = images.shape[2] + MONTAGE_GAP, images.shape[3] + MONTAGE_GAP
    ax.set_xticks([c * tile_w + (tile_w - MONTAGE_GAP) / 2 for c in range(len(column_labels or []))],
                  column_labels or [], fontsize=7)
    ax.set_yticks([r * tile_h + (tile_h - MONTAGE_GAP) / 2 for r in range(len(row_labels or []))],
                  row_labels or [], fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return Figure(name, title, caption, png_bytes(fig), data or {})


def explanation_figure(images: torch.Tensor, generations: torch.Tensor, distances: torch.Tensor, *,
                       class_names, true_labels=None, name: str = "explanation", title: str | None = None):
    """The paper's Figure 6: each test image beside every class's closest generation and its distance.

    Parameters
    ----------
    images : torch.Tensor
        ``(n, 1, 28, 28)`` test images (one row each).
    generations : torch.Tensor
        ``(n, C, 1, 28, 28)``: :meth:`ppl_audit.classifiers.synthesis.SynthesisClassifier.generations`.
    distances : torch.Tensor
        ``(n, C)``.
    class_names : sequence of str
    true_labels : sequence of int or None, optional
        Written beside each row (``None`` entries: out-of-distribution).

    Returns
    -------
    ppl_audit.report.Figure
        The winning class's tile is framed; tiles are titled with their distances.

    Examples
    --------
    >>> fig = explanation_figure(torch.rand(1, 1, 28, 28), torch.rand(1, 2, 1, 28, 28), torch.tensor([[3.0, 5.0]]),
    ...                          class_names=("a", "b"))
    >>> fig.name, fig.data["distances"]
    ('explanation', [[3.0, 5.0]])
    """
    from matplotlib.patches import Rectangle

    n, c = distances.shape
    if images.shape[0] != n or generations.shape[:2] != (n, c):
        raise InvalidInputError(f"explanation needs matching images {tuple(images.shape)}, generations "
                                f"{tuple(generations.shape)} and distances {tuple(distances.shape)}")
    fig = MplFigure(figsize=(1.0 * (c + 1) + 0.6, 1.15 * n + 0.5))
    axes = fig.subplots(n, c + 1, squeeze=False)
    best = distances.argmin(1)
    for i in range(n):
        truth = None if true_labels is None else true_labels[i]
        row_title = "input" if truth is None else f"input (true {class_names[truth]})"
        if true_labels is not None and truth is None:
            row_title = "input (OoD)"
        axes[i, 0].imshow(images[i, 0].detach().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_title(row_title, fontsize=6)
        for k in range(c):
            ax = axes[i, k + 1]
            ax.imshow(generations[i, k, 0].detach().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{class_names[k]}: {float(distances[i, k]):.2f}", fontsize=6,
                         fontweight="bold" if k == int(best[i]) else "normal")
            if k == int(best[i]):
                ax.add_patch(Rectangle((-0.5, -0.5), 28, 28, fill=False, edgecolor="red", linewidth=2))
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    title = title or "Classification by synthesis: each class's closest generation and its L2 distance"
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    caption = ("Each row: a test image, then the image each class's generator makes that is closest to it "
               "(after the latent search), titled with the class and its L2 distance; the framed tile is the "
               "prediction. A large distance in every column is the classifier saying it does not know.")
    return Figure(name, title, caption, png_bytes(fig),
                  {"distances": rounded(distances), "predicted": best.tolist(),
                   "true_labels": None if true_labels is None else list(true_labels)})


__all__ = [
    "DATA_DECIMALS",
    "DPI",
    "MONTAGE_DPI_SCALE",
    "MONTAGE_GAP",
    "PAIR_PANEL_INCHES",
    "PAIR_PANEL_INCHES_MANY",
    "SYMLOG_SPAN",
    "VLINE_STYLES",
    "class_profile",
    "errorbar_plot",
    "explanation_figure",
    "image_grid",
    "latent_embedding",
    "latent_pairs",
    "line_plot",
    "montage",
    "montage_figure",
    "png_bytes",
    "principal_components",
    "rounded",
    "score_histogram",
    "tempering_plot",
    "value_histograms",
    "xy_plot",
]
