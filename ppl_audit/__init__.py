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
from ppl_audit.classifiers import CallableClassifier, Classifier, TorchClassifier
from ppl_audit.levelset import LevelSet
from ppl_audit.priors import HouseRocketWorld, Prior, make_world
from ppl_audit.sampling import LevelSetResult, sample_level_set
from ppl_audit.training import load_model

__all__ = [
    "CallableClassifier",
    "Classifier",
    "HouseRocketWorld",
    "LevelSet",
    "LevelSetResult",
    "Prior",
    "TorchClassifier",
    "__version__",
    "load_model",
    "make_world",
    "sample_level_set",
]
