"""Reject by Bayesian certainty: the score of Cosentino & Zhu's reject option.

The Bayesian LeNet's certainty is the median over ``S`` posterior weight
draws of the predicted class's probability
(:meth:`~ppl_audit.classifiers.bayesian_lenet.BayesianClassifier.predict`).
The score is ``1 - certainty``, so that higher means more reason to reject;
rejecting below a certainty threshold ``tau`` is rejecting scores above
``1 - tau`` (:meth:`CertaintyDetector.rejects`).
"""

from __future__ import annotations

import torch

from ppl_audit.classifiers.bayesian_lenet import (
    DEFAULT_NUM_SAMPLES,
    BayesianClassifier,
    check_num_samples,
    reject,
)
from ppl_audit.detectors.base import Detector, check_scores


class CertaintyDetector(Detector):
    """``score(x) = 1 - certainty(x)`` of a Bayesian classifier.

    Parameters
    ----------
    classifier : BayesianClassifier
    num_samples : int
        ``S``, posterior draws per prediction (the paper's 10).
    seed : int
        Seeds the draws, so that scores are a deterministic function of ``x``.

    Examples
    --------
    >>> from ppl_audit.classifiers.bayesian_lenet import BayesianLeNet
    >>> det = CertaintyDetector(BayesianClassifier(BayesianLeNet(conv_channels=(2, 4), hidden=(8, 8))), 4)
    >>> x = torch.rand(3, 1, 28, 28)
    >>> bool(((det.score(x) >= 0) & (det.score(x) <= 1)).all()), det.rejects(x, 0.0).tolist()
    (True, [False, False, False])
    """

    name = "bnn-certainty"
    score_meaning = "1 - median posterior probability of the predicted class (higher = less certain)"

    def __init__(self, classifier: BayesianClassifier, num_samples: int = DEFAULT_NUM_SAMPLES, *, seed: int = 0):
        self.classifier = classifier
        self.num_samples = check_num_samples(num_samples)
        self.seed = int(seed)

    def certainty(self, x: torch.Tensor) -> torch.Tensor:
        """Certainty ``(N,)`` in ``[0, 1]``."""
        generator = torch.Generator().manual_seed(self.seed)
        return self.classifier.predict(x, self.num_samples, generator=generator).certainty

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``1 - certainty``, ``(N,)``."""
        return check_scores(1 - self.certainty(x), x.shape[0], self.name)

    def rejects(self, x: torch.Tensor, tau: float) -> torch.Tensor:
        """Boolean ``(N,)``: certainty below ``tau``."""
        return reject(self.certainty(x), tau)


__all__ = [
    "CertaintyDetector",
]
