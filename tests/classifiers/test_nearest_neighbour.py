"""The 1-NN baseline: known neighbours, chunking, errors."""

from __future__ import annotations

import pytest
import torch

from ppl_audit.classifiers.nearest_neighbour import NearestNeighbourClassifier
from ppl_audit.errors import InvalidInputError


def _train():
    images = torch.stack([torch.full((1, 4, 4), v) for v in (0.0, 0.5, 1.0)])
    return images, torch.tensor([0, 1, 2])


def test_each_image_takes_its_nearest_neighbours_label_and_minus_the_distance():
    images, labels = _train()
    clf = NearestNeighbourClassifier(images, labels, ["a", "b", "c"], chunk=2)
    x = torch.stack([torch.full((1, 4, 4), v) for v in (0.1, 0.45, 0.95, 0.0, 0.7)])
    pred, similarity = clf.predict(x)
    assert pred.tolist() == [0, 1, 2, 0, 1]
    # 16 pixels each off by d: distance 4 d
    assert similarity.tolist() == pytest.approx([-0.4, -0.2, -0.2, 0.0, -0.8])
    assert torch.equal(clf.probs(x).argmax(1), pred)


def test_result_does_not_depend_on_the_chunk_size():
    gen = torch.Generator().manual_seed(0)
    train, labels = torch.rand(50, 1, 4, 4, generator=gen), torch.randint(0, 3, (50,), generator=gen)
    x = torch.rand(17, 1, 4, 4, generator=gen)
    a = NearestNeighbourClassifier(train, labels, "abc", chunk=3).predict(x)
    b = NearestNeighbourClassifier(train, labels, "abc", chunk=100).predict(x)
    assert torch.equal(a[0], b[0]) and torch.allclose(a[1], b[1])


def test_bad_inputs_are_refused():
    images, labels = _train()
    with pytest.raises(InvalidInputError, match="labels must have shape"):
        NearestNeighbourClassifier(images, labels[:2], "abc")
    with pytest.raises(InvalidInputError, match="labels must lie in 0..1"):
        NearestNeighbourClassifier(images, labels, "ab")
    with pytest.raises(InvalidInputError, match="at least one training image"):
        NearestNeighbourClassifier(images[:0], labels[:0], "abc")
    clf = NearestNeighbourClassifier(images, labels, "abc")
    with pytest.raises(InvalidInputError, match="shape"):
        clf.predict(torch.rand(2, 1, 5, 5))
