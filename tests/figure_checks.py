"""Checks on drawn matplotlib figures: capture them as they are rendered, and find overlapping text.

The report's figures come back as PNG bytes; :func:`capture_figures` keeps each figure handed to
``ppl_audit.report.figures.png_bytes`` (ArviZ's plots go through it too), so that a test can read
its axes, titles and legends after drawing.
"""

from __future__ import annotations

import itertools

from matplotlib.backends.backend_agg import FigureCanvasAgg

from ppl_audit.report import figures


def capture_figures(monkeypatch) -> list:
    """Patch ``figures.png_bytes`` to keep every figure it renders; returns the (growing) list."""
    drawn = []
    real = figures.png_bytes

    def keep(fig, dpi=figures.DPI):
        png = real(fig, dpi)
        drawn.append(fig)
        return png

    monkeypatch.setattr(figures, "png_bytes", keep)
    return drawn


def visible_texts(fig) -> list:
    """Every non-empty, visible text of a rendered figure: titles, axis and tick labels, legends, suptitle."""
    texts = [fig._suptitle] if fig._suptitle is not None else []
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        # tick labels of ticks inside the view only: matplotlib keeps (undrawn) ones just outside it
        for labels, limits, coordinate in ((ax.get_xticklabels(), ax.get_xlim(), 0),
                                           (ax.get_yticklabels(), ax.get_ylim(), 1)):
            low, high = sorted(limits)
            texts += [t for t in labels if low <= t.get_position()[coordinate] <= high]
        if ax.get_legend() is not None:
            texts += ax.get_legend().get_texts()
    for legend in fig.legends:
        texts += [*legend.get_texts(), legend.get_title()]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def overlapping_texts(fig, tolerance: float = 1.0) -> list[tuple[str, str]]:
    """Pairs of texts whose rendered boxes overlap by more than ``tolerance`` pixels each way."""
    if not hasattr(fig.canvas, "get_renderer"):  # pyplot's close left a bare canvas: draw on Agg again
        FigureCanvasAgg(fig)
        fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in visible_texts(fig)]
    clashes = []
    for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2):
        width = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
        height = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
        if width > tolerance and height > tolerance:
            clashes.append((a, b))
    return clashes
