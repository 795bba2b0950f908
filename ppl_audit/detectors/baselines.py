"""The baselines' reject scores: a classifier's max softmax and the 1-nearest-neighbour distance.

Wang et al. compare the synthesis classifiers with a CNN that abstains at low
maximum softmax probability and with 1-NN that abstains when the nearest
training image is far. Both follow the Detector contract here (higher = more
reason to reject).
"""

from __future__ import annotations

import torch

from ppl_audit.classifiers.base import Classifier, check_probabilities
from ppl_audit.classifiers.nearest_neighbour import NearestNeighbourClassifier
from ppl_audit.detectors.base import Detector, check_scores


class MaxSoftmaxDetector(Detector):
    """``score(x) = 1 - max_k p_k(x)`` of any classifier (Hendrycks & Gimpel's baseline, complemented).

    Examples
    --------
    >>> from ppl_audit.classifiers import CallableClassifier
    >>> clf = CallableClassifier(lambda x: torch.tensor([[0.9, 0.1], [0.5, 0.5]]), ["a", "b"])
    >>> [round(v, 4) for v in MaxSoftmaxDetector(clf).score(torch.zeros(2, 1, 4, 4)).tolist()]
    [0.1, 0.5]
    """

    name = "max softmax"
    score_meaning = "1 - the largest class probability; higher = reject"

    def __init__(self, classifier: Classifier):
        self.classifier = classifier

    def scores_from(self, probs: torch.Tensor) -> torch.Tensor:
        """Scores ``(N,)`` from probabilities already computed."""
        check_probabilities(probs, len(probs))
        return check_scores(1 - probs.max(1).values, len(probs), self.name)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores_from(self.classifier.probs(x))


class NearestNeighbourDetector(Detector):
    """``score(x)`` = L2 distance to the nearest training image (higher = farther = reject).

    Examples
    --------
    >>> train = torch.zeros(2, 1, 2, 2); train[1] = 1.0
    >>> nn = NearestNeighbourClassifier(train, torch.tensor([0, 1]), ["dark", "bright"])
    >>> [round(v, 4) for v in NearestNeighbourDetector(nn).score(torch.full((1, 1, 2, 2), 0.9)).tolist()]
    [0.2]
    """

    name = "1-NN distance"
    score_meaning = "L2 distance to the nearest training image; higher = reject"

    def __init__(self, classifier: NearestNeighbourClassifier):
        self.classifier = classifier

    def scores_from(self, similarity: torch.Tensor) -> torch.Tensor:
        """Scores ``(N,)`` from the similarities of :meth:`NearestNeighbourClassifier.predict`."""
        return check_scores(-similarity, len(similarity), self.name)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores_from(self.classifier.predict(x)[1])


__all__ = ["MaxSoftmaxDetector", "NearestNeighbourDetector"]
