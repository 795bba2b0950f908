import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from ppl_audit.data import (
    DATA_ENV,
    DATASETS,
    DataFile,
    DataFileError,
    DataNotFoundError,
    DatasetSpec,
    ImageDataset,
    SplitSpec,
    available_datasets,
    dataset_spec,
    idx_bytes,
    load_dataset,
    resolve_data_dir,
)
from ppl_audit.errors import InvalidInputError, PplAuditError

MNIST_TEST = ("mnist/t10k-images-idx3-ubyte.gz", "mnist/t10k-labels-idx1-ubyte.gz")


# --- where the data folder is ------------------------------------------------


def test_data_env_name():
    assert DATA_ENV == "PPL_AUDIT_DATA"


def test_explicit_data_dir_wins_over_env(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "b"))
    assert resolve_data_dir(tmp_path / "a") == tmp_path / "a"
    assert resolve_data_dir(str(tmp_path / "a")) == tmp_path / "a"


def test_env_var_is_used_when_no_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert resolve_data_dir() == tmp_path


def test_env_var_is_read_at_call_time(tmp_path, monkeypatch, make_data_dir, fake_digits):
    x, y = fake_digits(3)
    root = make_data_dir({MNIST_TEST[0]: x, MNIST_TEST[1]: y})
    monkeypatch.setenv(DATA_ENV, str(root))
    ds = load_dataset("mnist")
    assert len(ds) == 3 and ds.source[0].parent == root / "mnist"


@pytest.mark.usefixtures("no_data_env")
def test_no_data_dir_says_how_to_give_one():
    with pytest.raises(DataNotFoundError) as info:
        resolve_data_dir()
    message = str(info.value)
    assert "--data-dir" in message and "PPL_AUDIT_DATA" in message and "downloaded" in message
    with pytest.raises(DataNotFoundError, match="--data-dir"):
        load_dataset("mnist")


def test_empty_env_var_counts_as_unset(monkeypatch):
    monkeypatch.setenv(DATA_ENV, "")
    with pytest.raises(DataNotFoundError, match="no data folder given"):
        resolve_data_dir()


def test_empty_data_dir_is_not_the_current_folder():
    with pytest.raises(DataNotFoundError, match="empty path"):
        resolve_data_dir("")


def test_missing_data_dir_names_it_and_its_origin(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match=r"nowhere \(from \$PPL_AUDIT_DATA\) does not exist"):
        resolve_data_dir()
    with pytest.raises(DataNotFoundError, match=r"nowhere2 \(from data_dir / --data-dir\) does not exist"):
        resolve_data_dir(tmp_path / "nowhere2")
    (tmp_path / "file").write_text("")
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        resolve_data_dir(tmp_path / "file")


# --- the registry ------------------------------------------------------------


def test_available_datasets():
    assert available_datasets() == {
        "mnist": ("train", "test"),
        "fashion-mnist": ("test",),
        "notmnist": ("test",),
        "omniglot": ("background-small",),
    }
    assert all(spec.name == name for name, spec in DATASETS.items())
    assert dataset_spec("notmnist").class_names == tuple("ABCDEFGHIJ")
    assert dataset_spec("fashion-mnist").class_names[9] == "Ankle boot"
    with pytest.raises(TypeError):
        DATASETS["x"] = DATASETS["mnist"]


def test_unknown_dataset_and_split():
    with pytest.raises(InvalidInputError, match="unknown dataset 'kmnist'; known datasets: mnist, fashion-mnist"):
        load_dataset("kmnist")
    with pytest.raises(InvalidInputError, match="'notmnist' has no split 'train'; its splits: test"):
        load_dataset("notmnist", "train", data_dir=".")


@pytest.mark.parametrize("limit", [0, -1, 2.5, True, "3"])
def test_bad_limit(limit, fixture_data_dir):
    with pytest.raises(InvalidInputError, match="limit must be a positive integer"):
        load_dataset("mnist", data_dir=fixture_data_dir, limit=limit)


def test_spec_validation():
    with pytest.raises(ValueError, match="key is required"):
        DataFile("a.npz")
    with pytest.raises(ValueError, match="key must be None"):
        DataFile("a.gz", "images")
    with pytest.raises(ValueError, match="relative path"):
        DataFile("../a.gz")
    with pytest.raises(ValueError, match="default_split='val'"):
        DatasetSpec("x", "", {"test": SplitSpec((DataFile("a.gz"),))}, "val")


# --- loading -----------------------------------------------------------------


def test_fixture_mnist_test(fixture_data_dir):
    ds = load_dataset("mnist", "test", data_dir=fixture_data_dir)
    assert ds.name == "mnist" and ds.split == "test"
    assert ds.images.shape == (100, 1, 28, 28) and ds.images.dtype == torch.float32
    assert ds.labels.shape == (100,) and ds.labels.dtype == torch.int64
    assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
    assert int(ds.labels[0]) == 7  # the first MNIST test digit is a 7
    assert ds.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert ds.class_names == tuple("0123456789")
    assert [p.name for p in ds.source] == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert "100x1x28x28" in repr(ds)


def test_fixture_has_only_the_test_split(fixture_data_dir):
    with pytest.raises(DataNotFoundError, match="mnist train images not found"):
        load_dataset("mnist", "train", data_dir=fixture_data_dir)


def test_limit_keeps_the_first_images(fixture_data_dir):
    full = load_dataset("mnist", data_dir=fixture_data_dir)
    head = load_dataset("mnist", data_dir=fixture_data_dir, limit=5)
    assert len(head) == 5 and torch.equal(head.images, full.images[:5]) and torch.equal(head.labels, full.labels[:5])
    assert len(load_dataset("mnist", data_dir=fixture_data_dir, limit=10**6)) == 100


def test_pixels_are_divided_by_255(make_data_dir):
    x = np.zeros((1, 28, 28), np.uint8)
    x[0, 0, :4] = [0, 1, 128, 255]
    root = make_data_dir({MNIST_TEST[0]: x, MNIST_TEST[1]: np.array([3], np.uint8)})
    ds = load_dataset("mnist", data_dir=root)
    assert ds.images[0, 0, 0, :4].tolist() == pytest.approx([0.0, 1 / 255, 128 / 255, 1.0])
    assert ds.images[0, 0, 0, 3].item() == 1.0


def test_missing_file_lists_every_place_looked(tmp_path, monkeypatch):
    (tmp_path / "mnist").mkdir()
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("mnist", "train")
    message = str(info.value)
    for name in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"):
        assert str(tmp_path / "mnist" / name) in message
    assert "$PPL_AUDIT_DATA" in message and "--data-dir" in message and "downloaded" in message
    assert isinstance(info.value, PplAuditError) and isinstance(info.value, FileNotFoundError)


def test_missing_labels_file_is_named(make_data_dir, fake_digits):
    x, _ = fake_digits(4)
    root = make_data_dir({MNIST_TEST[0]: x})
    with pytest.raises(DataNotFoundError, match="mnist test labels not found.*t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", data_dir=root)


def test_uncompressed_names_are_accepted(tmp_path, fake_digits):
    x, y = fake_digits(6)
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(x))
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(y))
    ds = load_dataset("mnist", data_dir=tmp_path)
    np.testing.assert_array_equal((ds.images[:, 0] * 255).round().to(torch.uint8).numpy(), x)
    np.testing.assert_array_equal(ds.labels.numpy(), y)
    assert ds.source[0].name == "t10k-images-idx3-ubyte"


def test_gz_name_is_preferred_when_both_exist(tmp_path, fake_digits):
    x, y = fake_digits(6)
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x)))
    (folder / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(x[:2]))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y)))
    assert len(load_dataset("mnist", data_dir=tmp_path)) == 6


def test_label_count_must_match(make_data_dir, fake_digits):
    x, y = fake_digits(5)
    root = make_data_dir({MNIST_TEST[0]: x, MNIST_TEST[1]: y[:4]})
    with pytest.raises(DataFileError, match="4 labels for the 5 images") as info:
        load_dataset("mnist", data_dir=root)
    assert "t10k-labels-idx1-ubyte.gz" in str(info.value)
    root = make_data_dir({MNIST_TEST[1]: np.concatenate([y, y])})
    with pytest.raises(DataFileError, match="10 labels for the 5 images"):
        load_dataset("mnist", data_dir=root)


def test_labels_out_of_range(make_data_dir, fake_digits):
    x, y = fake_digits(3)
    y[1] = 10
    root = make_data_dir({MNIST_TEST[0]: x, MNIST_TEST[1]: y})
    with pytest.raises(DataFileError, match=r"labels must lie in 0\.\.9, found .*\.\.10"):
        load_dataset("mnist", data_dir=root)


@pytest.mark.parametrize(
    "images,message",
    [
        (np.zeros((2, 28, 28), np.int16), "images must be uint8"),
        (np.zeros((2, 32, 32), np.uint8), r"must have shape \(N, 28, 28\), got \(2, 32, 32\)"),
        (np.zeros((2, 784), np.uint8), r"got \(2, 784\)"),
    ],
)
def test_image_files_of_the_wrong_kind(make_data_dir, images, message):
    root = make_data_dir({MNIST_TEST[0]: images, MNIST_TEST[1]: np.zeros(2, np.uint8)})
    with pytest.raises(DataFileError, match=message) as info:
        load_dataset("mnist", data_dir=root)
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)


def test_malformed_file_in_data_dir_is_named(make_data_dir, fake_digits):
    x, y = fake_digits(3)
    root = make_data_dir({MNIST_TEST[0]: idx_bytes(x)[:-10], MNIST_TEST[1]: y})
    with pytest.raises(DataFileError, match=r"t10k-images-idx3-ubyte\.gz: truncated"):
        load_dataset("mnist", data_dir=root)


def test_labels_must_be_integers(make_data_dir, fake_digits):
    x, _ = fake_digits(3)
    root = make_data_dir({MNIST_TEST[0]: x, MNIST_TEST[1]: np.zeros(3, np.float32)})
    with pytest.raises(DataFileError, match="1-d integer array"):
        load_dataset("mnist", data_dir=root)


# --- Fashion-MNIST: a staged subset of images, all the labels ---------------------


def test_fashion_subset_takes_the_first_labels(make_data_dir, fake_digits):
    x, _ = fake_digits(20)
    _, y = fake_digits(50, seed=1)
    root = make_data_dir({
        "fashion-mnist/x_test_first2000.npz": {"arr_0": x},
        "fashion-mnist/t10k-labels-idx1-ubyte.gz": y,
    })
    ds = load_dataset("fashion-mnist", data_dir=root)
    assert len(ds) == 20
    np.testing.assert_array_equal(ds.labels.numpy(), y[:20])
    assert [p.name for p in ds.source] == ["x_test_first2000.npz", "t10k-labels-idx1-ubyte.gz"]


def test_fashion_falls_back_to_the_npz_labels(make_data_dir, fake_digits):
    x, y = fake_digits(20)
    root = make_data_dir({
        "fashion-mnist/x_test_first2000.npz": {"arr_0": x},
        "fashion-mnist/y_test_first2000.npz": {"arr_0": y},
    })
    np.testing.assert_array_equal(load_dataset("fashion-mnist", data_dir=root).labels.numpy(), y)


def test_fashion_prefers_a_full_idx_when_present(make_data_dir, fake_digits):
    x, y = fake_digits(30)
    root = make_data_dir({
        "fashion-mnist/t10k-images-idx3-ubyte.gz": x,
        "fashion-mnist/x_test_first2000.npz": {"arr_0": x[:10]},
        "fashion-mnist/t10k-labels-idx1-ubyte.gz": y,
    })
    assert len(load_dataset("fashion-mnist", data_dir=root)) == 30


def test_fashion_too_few_labels(make_data_dir, fake_digits):
    x, y = fake_digits(20)
    root = make_data_dir({
        "fashion-mnist/x_test_first2000.npz": {"arr_0": x},
        "fashion-mnist/t10k-labels-idx1-ubyte.gz": y[:10],
    })
    with pytest.raises(DataFileError, match="10 labels for the 20 images"):
        load_dataset("fashion-mnist", data_dir=root)


def test_fashion_missing_images_lists_both_alternatives(make_data_dir):
    root = make_data_dir({})
    with pytest.raises(DataNotFoundError) as info:
        load_dataset("fashion-mnist", data_dir=root)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte", "x_test_first2000.npz"):
        assert str(root / "fashion-mnist" / name) in str(info.value)


def test_npz_with_the_wrong_key_is_named(make_data_dir, fake_digits):
    x, y = fake_digits(3)
    root = make_data_dir({
        "fashion-mnist/x_test_first2000.npz": {"images": x},
        "fashion-mnist/t10k-labels-idx1-ubyte.gz": y,
    })
    with pytest.raises(DataFileError, match=r"x_test_first2000\.npz: no array named 'arr_0'"):
        load_dataset("fashion-mnist", data_dir=root)


# --- Omniglot: class names stored with the data -------------------------------------


def test_omniglot_reads_labels_and_class_names(make_data_dir, fake_digits):
    x, _ = fake_digits(4)
    root = make_data_dir({"omniglot/omniglot_bgsmall_28.npz": {
        "images": x,
        "labels": np.array([0, 0, 1, 2], np.int16),
        "class_names": np.array(["Greek/character01", "Greek/character02", "Latin/character01"]),
    }})
    ds = load_dataset("omniglot", data_dir=root)
    assert ds.split == "background-small" and ds.num_classes == 3
    assert ds.labels.tolist() == [0, 0, 1, 2] and ds.labels.dtype == torch.int64
    assert ds.class_names[2] == "Latin/character01"
    assert ds.source == (root / "omniglot" / "omniglot_bgsmall_28.npz",)
    with pytest.raises(InvalidInputError, match="no split 'test'; its splits: background-small"):
        load_dataset("omniglot", "test", data_dir=root)


def test_omniglot_label_beyond_class_names(make_data_dir, fake_digits):
    x, _ = fake_digits(2)
    root = make_data_dir({"omniglot/omniglot_bgsmall_28.npz": {
        "images": x, "labels": np.array([0, 5], np.int16), "class_names": np.array(["a", "b"])}})
    with pytest.raises(DataFileError, match=r"labels must lie in 0\.\.1"):
        load_dataset("omniglot", data_dir=root)


# --- ImageDataset --------------------------------------------------------------


def test_image_dataset_validates():
    with pytest.raises(InvalidInputError, match=r"\[0, 1\]"):
        ImageDataset("x", "test", torch.full((1, 1, 28, 28), 2.0))
    with pytest.raises(InvalidInputError, match="shape"):
        ImageDataset("x", "test", torch.zeros(28, 28))
    with pytest.raises(InvalidInputError, match="int64"):
        ImageDataset("x", "test", torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.int32))
    with pytest.raises(InvalidInputError, match=r"shape \(2,\)"):
        ImageDataset("x", "test", torch.zeros(2, 1, 28, 28), torch.zeros(3, dtype=torch.int64))


def test_image_dataset_is_frozen_and_movable():
    ds = ImageDataset("x", "test", torch.zeros(2, 1, 28, 28), None, source=["a/b.gz"])
    assert ds.source == (Path("a/b.gz"),) and ds.labels is None
    with pytest.raises(AttributeError):
        ds.name = "y"
    moved = ds.to("cpu")
    assert moved is not ds and moved.images.device.type == "cpu" and moved.name == "x"
