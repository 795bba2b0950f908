"""Reject by synthesis distance: the scores of Wang et al.'s generative and hybrid selective classifiers.

The synthesis classifier's confidence is minus the distance from an image to
the closest generation of any class
(:class:`~ppl_audit.classifiers.synthesis.SynthesisClassifier`); the score
here is that distance, so that higher means more reason to reject.
"""

from __future__ import annotations

import torch

from ppl_audit.classifiers.base import Classifier
from ppl_audit.classifiers.synthesis import SearchResult, SynthesisClassifier
from ppl_audit.detectors.base import Detector, check_scores
from ppl_audit.errors import InvalidInputError


class SynthesisDetector(Detector):
    """Reject by the distance to the closest generation of any class (higher = farther = reject).

    ``score(x) = min_c d_c(x)``, minus the synthesis classifier's confidence.
    """

    name = "synthesis distance"
    score_meaning = "L2 distance from the image to the closest generation of any class; higher = reject"

    def __init__(self, classifier: SynthesisClassifier):
        self.classifier = classifier

    def scores_from(self, result: SearchResult) -> torch.Tensor:
        """Scores ``(N,)`` from a search already run."""
        return check_scores(-result.confidence, len(result), self.name)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores_from(self.classifier.search(x))


class HybridDetector(Detector):
    """The hybrid of Wang et al.'s Figure 9a: a CNN labels, the generative classifier decides coverage.

    The score is the synthesis distance (:class:`SynthesisDetector`); the
    label is the CNN's. :meth:`decide` gives both.
    """

    name = "hybrid (synthesis confidence, CNN label)"
    score_meaning = "L2 distance to the closest generation of any class; higher = reject; labels from the CNN"

    def __init__(self, cnn: Classifier, synthesis: SynthesisClassifier):
        if cnn.num_classes and cnn.num_classes != synthesis.num_classes:
            raise InvalidInputError(f"the CNN has {cnn.num_classes} classes but the generative classifier "
                                    f"{synthesis.num_classes}: they must label the same classes")
        self.cnn, self.synthesis = cnn, synthesis

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return SynthesisDetector(self.synthesis).score(x)

    def decide(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(labels, confidence)``, each ``(N,)``: the CNN's argmax and the synthesis confidence."""
        labels = self.cnn.probs(x).argmax(1)
        return labels, self.synthesis.search(x).confidence


__all__ = ["HybridDetector", "SynthesisDetector"]
