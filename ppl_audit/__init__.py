"""ppl-audit: audit image classifiers with probabilistic programming.

Nothing runs at import time beyond importing torch and pyro.

Examples
--------
>>> import ppl_audit
>>> world = ppl_audit.HouseRocketWorld()
>>> classifier = ppl_audit.load_model("house-rocket-cnn").model  # doctest: +SKIP
>>> res = ppl_audit.sample_level_set(world, classifier, [0.5, 0.5], concentration=10)  # doctest: +SKIP
"""

from ppl_audit._version import __version__
from ppl_audit.classifiers import CallableClassifier, Classifier, TorchClassifier, as_classifier
from ppl_audit.detectors.base import Detector
from ppl_audit.inference.result import SamplingResult
from ppl_audit.levelset import LevelSet
from ppl_audit.priors import ClassMixturePrior, DecoderPrior, HouseRocketWorld, Prior, make_world
from ppl_audit.region_mass import ConfidentRegion, sample_confident_region
from ppl_audit.sampling import LevelSetResult, sample_level_set
from ppl_audit.training import load_model

_LAZY = {"run_audit": "ppl_audit.audits", "load_audit_file": "ppl_audit.audits"}  # the audits import matplotlib


def __getattr__(name: str):
    """Import the audit entry points on first use, so that ``import ppl_audit`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ppl_audit' has no attribute {name!r}")


__all__ = [
    "CallableClassifier",
    "ClassMixturePrior",
    "Classifier",
    "ConfidentRegion",
    "DecoderPrior",
    "Detector",
    "HouseRocketWorld",
    "LevelSet",
    "LevelSetResult",
    "Prior",
    "SamplingResult",
    "TorchClassifier",
    "__version__",
    "as_classifier",
    "load_audit_file",
    "load_model",
    "make_world",
    "run_audit",
    "sample_confident_region",
    "sample_level_set",
]
