"""Classifiers under audit: the contract, the black-box wrapper, the built-in CNN, MNIST's LeNet-5 and the user's own
models (ONNX, torch.export, entry points)."""

from ppl_audit.classifiers.base import CallableClassifier, Classifier, as_classifier, check_probabilities
from ppl_audit.classifiers.cnn import PatchCNN, TorchClassifier
from ppl_audit.classifiers.external import load_classifier_file, load_prior_file
from ppl_audit.classifiers.house_rocket import train_house_rocket_classifier
from ppl_audit.classifiers.lenet import MNIST_CLASS_NAMES, LeNet5, train_lenet
from ppl_audit.classifiers.nearest_neighbour import NearestNeighbourClassifier

__all__ = [
    "CallableClassifier",
    "Classifier",
    "LeNet5",
    "MNIST_CLASS_NAMES",
    "NearestNeighbourClassifier",
    "PatchCNN",
    "TorchClassifier",
    "as_classifier",
    "check_probabilities",
    "load_classifier_file",
    "load_prior_file",
    "train_house_rocket_classifier",
    "train_lenet",
]
