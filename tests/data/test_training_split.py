"""A card may train and test on one split without overlap (``[data] test_start``): notMNIST has only its test
split staged, so ``notmnist-vae`` trains on its first 8,000 letters and is tested on the last 2,000."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ppl_audit.errors import InvalidInputError
from ppl_audit.training.loop import DataConfig, load_training_data

FIXTURE_DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"  # 100 MNIST test digits


def test_test_images_start_where_asked_and_never_overlap_training():
    data = DataConfig(train_split="test", test_split="test", num_train=60, test_start=60, num_test=30)
    train, test = load_training_data(data, FIXTURE_DATA)
    everything, _ = load_training_data(DataConfig(train_split="test", num_train=100), FIXTURE_DATA)
    assert len(train) == 60 and len(test) == 30
    assert torch.equal(test.images, everything.images[60:90]) and torch.equal(test.labels, everything.labels[60:90])


@pytest.mark.parametrize("fields, message", [
    (dict(test_start=-1), "test_start must be a non-negative integer"),
    (dict(test_start=True), "test_start must be a non-negative integer"),
    (dict(train_split="test", num_train=60, test_start=30), r"at least num_train \(60\)"),
    (dict(train_split="test", test_start=30), r"at least num_train \(None\)"),
])
def test_bad_starts_are_named(fields, message):
    with pytest.raises(InvalidInputError, match=message):
        DataConfig(**fields)


def test_a_start_past_the_split_is_named():
    with pytest.raises(InvalidInputError, match="test_start = 500 leaves no test images"):
        load_training_data(DataConfig(train_split="test", num_train=10, test_start=500), FIXTURE_DATA)
