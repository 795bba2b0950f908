"""Ranked galleries drawn as one mosaic a half: every tile where it belongs, every label above its tile."""

from __future__ import annotations

import numpy as np
import torch

from ppl_audit.report import figures, galleries
from tests.figure_checks import capture_figures, visible_texts

RED, GREY = "#cf222e", "#59636e"


def _levels(n: int, channels: int = 1, side: int = 8) -> torch.Tensor:
    """``n`` flat images, image ``i`` at grey level ``(i + 1) / (n + 1)``: no tile is white like the gaps."""
    return (torch.arange(1, n + 1, dtype=torch.float32) / (n + 1)).view(n, 1, 1, 1).expand(n, channels, side, side)


def _drawn(monkeypatch, *args, **kwargs):
    drawn = capture_figures(monkeypatch)
    monkeypatch.setattr(galleries, "png_bytes", figures.png_bytes)  # the gallery module's own name for it
    figure = galleries.ranked_gallery("g", "t", "c", *args, **kwargs)
    fig = drawn[-1]
    fig.canvas.draw()
    return figure, fig


def test_each_tile_shows_its_image_in_rank_order(monkeypatch):
    images = _levels(6)
    _, fig = _drawn(monkeypatch, images, [f"#{i + 1}" for i in range(6)], _levels(2), ["p", "q"], columns=4)
    samples, prior = (ax.get_images()[0].get_array() for ax in fig.axes)
    # rank order runs along the rows: the levels seen left to right, top to bottom, are the images' own
    levels = [float(v) for v in np.unique(samples[..., 0]) if v < 1.0]
    assert np.allclose(sorted(levels), images[:, 0, 0, 0].numpy())
    first_row = samples[samples.shape[0] // 4, :, 0]  # a pixel row through the first row of tiles
    seen = [v for k, v in enumerate(first_row) if v < 1.0 and (k == 0 or first_row[k - 1] != v)]
    assert np.allclose(seen, images[:4, 0, 0, 0].numpy())
    assert samples.shape == prior.shape  # both halves have the same rows, the shorter padded with white


def test_labels_sit_above_their_tiles_in_their_colours(monkeypatch):
    labels = [f"#{i + 1} P(house)=0.50{i}" for i in range(5)]
    _, fig = _drawn(monkeypatch, _levels(5), labels, _levels(3), ["a", "b", "c"], flagged=[True, False, False, True,
                                                                                            False], columns=4)
    samples_ax, prior_ax = fig.axes
    texts = samples_ax.texts
    assert [t.get_text() for t in texts] == labels
    assert [t.get_color() for t in texts] == [RED, "black", "black", RED, "black"]
    assert [t.get_color() for t in prior_ax.texts] == [GREY] * 3
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts]
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            assert not boxes[a].overlaps(boxes[b]), (labels[a], labels[b])
    image = samples_ax.get_images()[0]
    top_row_label, second_row_label = texts[0].get_position()[1], texts[4].get_position()[1]
    assert 0 < top_row_label < second_row_label < image.get_array().shape[0]


def test_colour_and_odd_channel_images_and_an_empty_half(monkeypatch):
    for channels in (3, 4):
        figure, fig = _drawn(monkeypatch, _levels(2, channels), ["a", "b"], _levels(1, channels), ["p"])
        assert figure.png[:4] == b"\x89PNG" and len(fig.axes) == 2
    figure, fig = _drawn(monkeypatch, _levels(0), [], _levels(3), ["p", "q", "r"])
    assert len(fig.axes[0].texts) == 0 and len(fig.axes[1].texts) == 3


def test_the_figure_grows_with_the_rows_only(monkeypatch):
    sizes = [tuple(_drawn(monkeypatch, _levels(n), [str(i) for i in range(n)], _levels(1), ["p"])[1]
                   .get_size_inches()) for n in (4, 8, 16)]
    assert sizes[0][0] == sizes[1][0] == sizes[2][0]
    assert sizes[0][1] < sizes[1][1] < sizes[2][1]


def test_score_histogram_keeps_every_text_inside_the_figure(monkeypatch):
    drawn = capture_figures(monkeypatch)
    figures.score_histogram("h", "house-rocket-circle: P(house) of samples vs prior, target 'ambiguous-tight'", "c",
                            {"level-set samples": torch.full((50,), 0.5), "prior": torch.rand(500) ** 4},
                            xlabel="P(house)", band=(0.4, 0.6), target=0.5)
    fig = drawn[-1]
    fig.canvas.draw()
    renderer, frame = fig.canvas.get_renderer(), fig.bbox
    for text in visible_texts(fig):
        box = text.get_window_extent(renderer)
        inside = frame.x0 - 1 <= box.x0 and box.x1 <= frame.x1 + 1 and frame.y0 - 1 <= box.y0 <= box.y1 <= frame.y1 + 1
        assert inside, text.get_text()
