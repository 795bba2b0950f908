"""SDIM's reject option (Zhang et al.) as a detector: the predicted class's threshold minus its log-likelihood.

The classifier and its per-class thresholds live in :mod:`ppl_audit.classifiers.sdim`; this is the score
that the selective audit compares with the other rejection rules.
"""

from __future__ import annotations

import torch

from ppl_audit.classifiers.sdim import SDIMClassifier, SelectivePrediction, check_percentile
from ppl_audit.detectors.base import Detector, check_scores


class SDIMDetector(Detector):
    """SDIM's reject option as a detector: ``score = t_{pred} - max_c log p(f(x) | c)``.

    A higher score means more reason to reject; ``score > 0`` exactly when the
    classifier rejects ``x`` at that percentile.

    Parameters
    ----------
    classifier : SDIMClassifier
    percentile : int
        1 or 2: which stored thresholds.

    Examples
    --------
    >>> from ppl_audit.classifiers.sdim import SDIM, fit_thresholds
    >>> net = SDIM(channels=(2, 2, 2), representation_dim=3, mi_units=2)
    >>> _ = fit_thresholds(net, torch.rand(20, 1, 28, 28), torch.arange(20) % 10)
    >>> det = SDIMDetector(SDIMClassifier(net), percentile=2)
    >>> x = torch.rand(5, 1, 28, 28)
    >>> bool(torch.equal(det.score(x) > 0, det.rejects(x)))
    True
    """

    name = "sdim"
    score_meaning = "threshold of the predicted class minus its log-likelihood, nats (> 0: rejected)"

    def __init__(self, classifier: SDIMClassifier, percentile: int = 1):
        check_percentile(percentile)
        self.classifier = classifier
        self.percentile = percentile

    def scores_from(self, prediction: SelectivePrediction) -> torch.Tensor:
        """Scores ``(N,)`` from a :meth:`SDIMClassifier.predict` at this detector's percentile."""
        return check_scores(prediction.threshold - prediction.max_log_likelihood, len(prediction.labels), self.name)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Scores ``(N,)``: higher = more reason to reject."""
        return self.scores_from(self.classifier.predict(x, self.percentile))

    def rejects(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean ``(N,)``: rejected at the detector's percentile."""
        return ~self.classifier.predict(x, self.percentile).kept


__all__ = ["SDIMDetector"]
