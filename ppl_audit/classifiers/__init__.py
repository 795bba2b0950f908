"""Classifiers under audit: the contract, the black-box wrapper, the built-in CNN."""

from ppl_audit.classifiers.base import CallableClassifier, Classifier, as_classifier, check_probabilities
from ppl_audit.classifiers.cnn import PatchCNN, TorchClassifier
from ppl_audit.classifiers.house_rocket import load_house_rocket_classifier, train_house_rocket_classifier

__all__ = [
    "CallableClassifier",
    "Classifier",
    "PatchCNN",
    "TorchClassifier",
    "as_classifier",
    "check_probabilities",
    "load_house_rocket_classifier",
    "train_house_rocket_classifier",
]
