"""Rejection and out-of-distribution scores behind one contract: higher = more reason to reject."""

from ppl_audit.detectors.base import Detector, check_scores
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

__all__ = [
    "CriticDetector",
    "CriticVarianceDetector",
    "Detector",
    "EnsembleDetector",
    "LogLikelihoodDetector",
    "RateDetector",
    "WAICDetector",
    "check_ensemble_output",
    "check_scores",
    "score_all",
    "waic_per_input",
]
