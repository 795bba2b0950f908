import numpy as np
import pytest
import torch

from ppl_audit.classifiers import CallableClassifier, PatchCNN, TorchClassifier, check_probabilities
from ppl_audit.classifiers.base import check_images
from ppl_audit.errors import InvalidInputError, ModelOutputError


def test_callable_classifier_accepts_numpy_and_chunks():
    calls = []

    def fn(x):
        calls.append(len(x))
        return np.tile([0.25, 0.75], (len(x), 1))

    clf = CallableClassifier(fn, ["a", "b"], chunk_size=4)
    out = clf.probs(torch.zeros(10, 1, 8, 8))
    assert out.shape == (10, 2) and calls == [4, 4, 2]
    assert not clf.differentiable


@pytest.mark.parametrize(
    "output,message",
    [
        (torch.tensor([[0.5, float("nan")]]), "NaN"),
        (torch.tensor([[2.0, -1.0]]), "negative"),
        (torch.tensor([[3.0, 1.0]]), "not probabilities"),
        (torch.tensor([0.5, 0.5]), "shape"),
    ],
)
def test_bad_classifier_outputs_are_named(output, message):
    with pytest.raises(ModelOutputError, match=message):
        check_probabilities(output, 1, 2)


def test_torch_classifier_outputs_probabilities():
    clf = TorchClassifier(PatchCNN(2, 64, channels=8, hidden=8), ["rocket", "house"], chunk_size=3)
    p = clf.probs(torch.rand(7, 1, 64, 64))
    assert p.shape == (7, 2)
    assert torch.allclose(p.sum(-1), torch.ones(7))


def test_check_images():
    check_images(torch.rand(2, 1, 64, 64), (1, 64, 64))
    with pytest.raises(InvalidInputError, match="shape"):
        check_images(torch.rand(2, 64, 64), (1, 64, 64))
    with pytest.raises(InvalidInputError, match=r"\[0, 1\]"):
        check_images(torch.full((1, 1, 64, 64), 2.0), (1, 64, 64))
