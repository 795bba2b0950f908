"""The 1-nearest-neighbour baseline of selective classification (Wang et al., "Safer Classification by Synthesis").

Each test image takes the label of its closest training image in pixel space
(Euclidean distance on the flattened ``[0, 1]`` pixels), and its confidence
is the negative of that distance: the same "similarity" the synthesis
classifiers use, so their risk-coverage curves are comparable.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ppl_audit.classifiers.base import Classifier, check_images
from ppl_audit.errors import InvalidInputError

DEFAULT_CHUNK = 1000  # test images per distance pass: 1,000 x 60,000 float32 distances are 240 MB


class NearestNeighbourClassifier(Classifier):
    """1-NN in pixel space; ``predict`` gives labels and ``-distance`` as confidence.

    Parameters
    ----------
    images : torch.Tensor
        Training images ``(M, C, H, W)`` in ``[0, 1]``.
    labels : torch.Tensor
        ``(M,)`` class indices.
    class_names : sequence of str
    chunk : int
        Test images per batched distance computation.

    Examples
    --------
    >>> train = torch.zeros(2, 1, 2, 2); train[1] = 1.0
    >>> clf = NearestNeighbourClassifier(train, torch.tensor([0, 1]), ["dark", "bright"])
    >>> labels, similarity = clf.predict(torch.full((1, 1, 2, 2), 0.9))
    >>> labels.tolist(), round(float(similarity[0]), 4)
    ([1], -0.2)
    """

    differentiable = False

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], *,
                 chunk: int = DEFAULT_CHUNK):
        check_images(images)
        if len(images) == 0:
            raise InvalidInputError("a nearest-neighbour classifier needs at least one training image")
        if labels.shape != (len(images),):
            raise InvalidInputError(f"labels must have shape ({len(images)},), got {tuple(labels.shape)}")
        self.class_names = tuple(class_names)
        if labels.min() < 0 or labels.max() >= len(self.class_names):
            raise InvalidInputError(f"labels must lie in 0..{len(self.class_names) - 1}")
        if not isinstance(chunk, int) or chunk <= 0:
            raise InvalidInputError(f"chunk must be a positive integer, got {chunk!r}")
        self.image_shape = tuple(images.shape[1:])
        self.train = images.flatten(1)
        self.labels = labels
        self.chunk = chunk

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(labels (N,), similarity (N,))``: the nearest training image's label and minus its distance."""
        check_images(x, self.image_shape)
        labels, similarity = [], []
        train = self.train.to(x.device)
        for part in x.flatten(1).split(self.chunk):
            distance, index = torch.cdist(part, train).min(dim=1)
            labels.append(self.labels.to(x.device)[index])
            similarity.append(-distance)
        if not labels:
            return x.new_zeros(0, dtype=torch.long), x.new_zeros(0)
        return torch.cat(labels), torch.cat(similarity)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """One-hot rows of the predicted labels (1-NN has no graded probabilities)."""
        labels, _ = self.predict(x)
        return torch.nn.functional.one_hot(labels, self.num_classes).to(x.dtype)


__all__ = ["NearestNeighbourClassifier"]
