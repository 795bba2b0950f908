"""Rejection and out-of-distribution scores behind one contract: higher = more reason to reject."""

from ppl_audit.detectors.base import Detector, check_scores
from ppl_audit.detectors.baselines import MaxSoftmaxDetector, NearestNeighbourDetector
from ppl_audit.detectors.ood import (
    CriticDetector,
    CriticVarianceDetector,
    EnsembleDetector,
    LogLikelihoodDetector,
    RateDetector,
    WAICDetector,
    check_ensemble_output,
    score_all,
    waic_per_input,
)
from ppl_audit.detectors.sdim import SDIMDetector
from ppl_audit.detectors.synthesis import HybridDetector, SynthesisDetector

__all__ = [
    "CriticDetector",
    "CriticVarianceDetector",
    "Detector",
    "EnsembleDetector",
    "HybridDetector",
    "LogLikelihoodDetector",
    "MaxSoftmaxDetector",
    "NearestNeighbourDetector",
    "RateDetector",
    "SDIMDetector",
    "SynthesisDetector",
    "WAICDetector",
    "check_ensemble_output",
    "check_scores",
    "score_all",
    "waic_per_input",
]
