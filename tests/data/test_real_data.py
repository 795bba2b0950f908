"""Known facts about the staged real data (skipped when it is absent; see conftest.py)."""

import numpy as np
import pytest
import torch

from ppl_audit.data import load_dataset, read_idx, read_npz

# Per-digit counts published with MNIST (and checked in mnist/PROVENANCE.md).
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist_dir(real_dataset_dir):
    return real_dataset_dir("mnist")


@pytest.fixture(scope="module")
def mnist_train(mnist_dir):
    return load_dataset("mnist", "train", data_dir=mnist_dir.parent)


@pytest.fixture(scope="module")
def mnist_test(mnist_dir):
    return load_dataset("mnist", "test", data_dir=mnist_dir.parent)


def _check_images(ds, n):
    assert ds.images.shape == (n, 1, 28, 28) and ds.images.dtype == torch.float32
    assert ds.labels.shape == (n,) and ds.labels.dtype == torch.int64
    assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0


def test_mnist_train(mnist_train):
    _check_images(mnist_train, 60000)
    counts = torch.bincount(mnist_train.labels, minlength=10).tolist()
    assert counts == MNIST_TRAIN_COUNTS and sum(counts) == 60000
    # the normalisation constants quoted everywhere: mean 0.1307, std 0.3081
    assert float(mnist_train.images.double().mean()) == pytest.approx(0.1307, abs=5e-5)
    assert float(mnist_train.images.double().std()) == pytest.approx(0.3081, abs=5e-5)
    assert mnist_train.labels[:5].tolist() == [5, 0, 4, 1, 9]


def test_mnist_test(mnist_test):
    _check_images(mnist_test, 10000)
    counts = torch.bincount(mnist_test.labels, minlength=10).tolist()
    assert counts == MNIST_TEST_COUNTS and sum(counts) == 10000
    assert int(mnist_test.labels[0]) == 7
    assert [p.name for p in mnist_test.source] == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_mnist_pixels_are_the_files_bytes_over_255(mnist_dir, mnist_test):
    raw = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    assert raw.shape == (10000, 28, 28) and raw.dtype == np.uint8
    np.testing.assert_array_equal((mnist_test.images[:, 0] * 255).round().to(torch.uint8).numpy(), raw)


def test_fixture_is_the_first_100_mnist_test_images(fixture_data_dir, mnist_test):
    fixture = load_dataset("mnist", "test", data_dir=fixture_data_dir)
    assert torch.equal(fixture.images, mnist_test.images[:100])
    assert torch.equal(fixture.labels, mnist_test.labels[:100])


def test_fashion_mnist_subset(real_dataset_dir):
    folder = real_dataset_dir("fashion-mnist")
    ds = load_dataset("fashion-mnist", data_dir=folder.parent)
    _check_images(ds, 2000)
    all_labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    assert all_labels.shape == (10000,)
    # PROVENANCE: the subset's own label file equals the official labels[0:2000]
    np.testing.assert_array_equal(ds.labels.numpy(), read_npz(folder / "y_test_first2000.npz", "arr_0"))
    np.testing.assert_array_equal(ds.labels.numpy(), all_labels[:2000])
    assert float(ds.images.double().mean()) == pytest.approx(0.2870, abs=5e-4)
    assert ds.class_names[ds.labels[0]] == "Ankle boot"  # Fashion-MNIST test item 0


def test_notmnist(real_dataset_dir):
    ds = load_dataset("notmnist", data_dir=real_dataset_dir("notmnist").parent)
    _check_images(ds, 10000)
    assert torch.bincount(ds.labels, minlength=10).tolist() == [1000] * 10
    assert ds.class_names == tuple("ABCDEFGHIJ")
    assert float(ds.images.double().mean()) == pytest.approx(0.4266, abs=5e-4)


def test_omniglot(real_dataset_dir):
    ds = load_dataset("omniglot", data_dir=real_dataset_dir("omniglot").parent)
    _check_images(ds, 4840)
    assert ds.num_classes == 242 and ds.class_names[0] == "Balinese/character01"
    assert torch.bincount(ds.labels).tolist() == [20] * 242
    assert set(torch.unique(ds.images).tolist()) == {0.0, 1.0}  # binary ink masks


def test_limit_on_real_data(mnist_dir, mnist_test):
    head = load_dataset("mnist", data_dir=mnist_dir.parent, limit=7)
    assert torch.equal(head.images, mnist_test.images[:7])
