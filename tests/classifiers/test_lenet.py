"""LeNet-5: the network, the shift augmentation, the card and the cached classifier (tiny sizes)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ppl_audit.training import registry
from ppl_audit.cache import load_weights
from ppl_audit.cards import load_card
from ppl_audit.classifiers import MNIST_CLASS_NAMES, LeNet5, TorchClassifier
from ppl_audit.classifiers import lenet
from ppl_audit.data import DataNotFoundError
from ppl_audit.errors import AuditFileError, InvalidInputError
from ppl_audit.training import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


def test_lenet5_shapes_and_parameter_count():
    net = LeNet5()
    assert net(torch.rand(7, 1, 28, 28)).shape == (7, 10)
    # LeCun's layer sizes: 156 + 2,416 + 48,120 + 10,164 + 850 parameters.
    assert sum(p.numel() for p in net.parameters()) == 61_706


def test_random_shift_moves_each_image_by_its_own_offset_within_bounds():
    x = torch.zeros(64, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0
    shifted = lenet.random_shift(x, 2, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape
    assert torch.equal(shifted.sum((1, 2, 3)), torch.ones(64))  # an interior pixel is never lost
    rows, cols = shifted[:, 0].nonzero()[:, 1:].T
    assert rows.min() >= 12 and rows.max() <= 16 and cols.min() >= 12 and cols.max() <= 16
    assert len({(int(r), int(c)) for r, c in zip(rows, cols)}) > 10  # offsets differ between images
    assert lenet.random_shift(x, 0, torch.Generator()) is x


def test_random_shift_equals_a_padded_crop():
    x = torch.rand(1, 1, 28, 28)
    generator = torch.Generator().manual_seed(3)
    dy, dx = torch.randint(0, 5, (2, 1), generator=torch.Generator().manual_seed(3))[:, 0].tolist()
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    assert torch.equal(lenet.random_shift(x, 2, generator), padded[:, :, dy:dy + 28, dx:dx + 28])


@pytest.mark.parametrize("override, message", [
    ({"architecture": {"type": "resnet"}}, "type must be 'lenet5'"),
    ({"architecture": {"conv_channels": [6]}}, "conv_channels must be two positive integers"),
    ({"training": {"epochs": 0}}, "epochs must be a positive integer, got 0"),
    ({"training": {"learning_rate": -1.0}}, "learning_rate must be a number > 0"),
    ({"training": {"augment_shift_pixels": 20}}, "augment_shift_pixels must be an integer in 0..13"),
    ({"training": {"epoch": 3}}, r"unknown key\(s\) \['epoch'\] in \[training\]"),
    ({"data": {"num_train": 0}}, "num_train must be a positive integer"),
])
def test_bad_card_values_are_named(override, message):
    card = load_card("mnist-lenet5").with_overrides(**override)
    with pytest.raises(AuditFileError, match=message):
        lenet.build_lenet(card)


def test_tiny_lenet_is_a_ten_class_torch_classifier(tiny_mnist_card, mnist_fixture_dir, cache_root):
    clf = load_model(tiny_mnist_card("mnist-lenet5"), cache=cache_root, data_dir=mnist_fixture_dir, device="cpu",
                     kind="lenet-classifier").model
    assert isinstance(clf, TorchClassifier)
    assert clf.class_names == MNIST_CLASS_NAMES == tuple("0123456789")
    p = clf.probs(torch.rand(5, 1, 28, 28))
    assert p.shape == (5, 10) and torch.allclose(p.sum(-1), torch.ones(5))
    metrics = clf.info["metrics"]
    assert metrics["num_train"] == 100 and metrics["num_test"] == 100
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_nll_nats"] > 0
    panels = clf.info["history"]["panels"]
    assert set(panels) == {"cross-entropy (nats per image)", "accuracy"}
    assert clf.weights_path.parent == cache_root
    assert set(load_weights(clf.weights_path)[0]) == set(LeNet5().state_dict())


def test_tiny_lenet_cache_round_trip_and_seeded_retraining(tiny_mnist_card, mnist_fixture_dir, cache_root,
                                                             monkeypatch):
    card = tiny_mnist_card("mnist-lenet5")
    first = load_model(card, cache=cache_root, data_dir=mnist_fixture_dir, device="cpu", kind="lenet-classifier").model
    x = torch.rand(4, 1, 28, 28)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again although the weights are cached")

    with monkeypatch.context() as mp:
        mp.setitem(registry._REGISTRY, "lenet-classifier", dataclasses.replace(lenet.TRAINER, train=no_training))
        cached = load_model(card, cache=cache_root, data_dir=None, device="cpu",
                            kind="lenet-classifier").model  # no data needed
    assert torch.equal(cached.probs(x), first.probs(x))
    retrained = load_model(card, cache=cache_root, data_dir=mnist_fixture_dir, device="cpu", retrain=True,
                           kind="lenet-classifier").model
    assert torch.allclose(retrained.probs(x), first.probs(x), atol=1e-6)  # seeded training


def test_loading_refuses_a_card_of_another_kind(cache_root):
    with pytest.raises(InvalidInputError, match="'mnist-vae' is of kind 'vae'"):
        load_model("mnist-vae", cache=cache_root, kind="lenet-classifier").model


def test_missing_data_names_where_it_looked(tiny_mnist_card, tmp_path, monkeypatch):
    monkeypatch.delenv("PPL_AUDIT_DATA", raising=False)
    card = tiny_mnist_card("mnist-lenet5", data={"train_split": "train"})
    with pytest.raises(DataNotFoundError, match=r"train-images-idx3-ubyte\.gz"):
        load_model(card, cache=tmp_path / "cache", data_dir=tmp_path, kind="lenet-classifier").model
    with pytest.raises(DataNotFoundError, match="PPL_AUDIT_DATA"):
        load_model(card, cache=tmp_path / "cache", kind="lenet-classifier").model
    assert not (tmp_path / "cache").exists()  # nothing half-written
