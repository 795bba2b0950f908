"""What every trainer's loop shares: its data, seeding, minibatches and a stopwatch."""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

from ppl_audit.errors import InvalidInputError
from ppl_audit.training.config import CardConfig, check_field
from ppl_audit.validators import is_int, is_positive_int

EVAL_CHUNK = 1000  # images per evaluation pass: large enough to be fast, small enough for any memory
DEFAULT_TRAIN_SPLIT, DEFAULT_TEST_SPLIT = "train", "test"  # [data] train_split / test_split defaults


@dataclass(frozen=True)
class DataConfig(CardConfig):
    """The ``[data]`` keys shared by the image-dataset trainers.

    Parameters
    ----------
    dataset : str
        Registered dataset name (``ppl_audit.data``), e.g. ``"mnist"``.
    train_split, test_split : str
        Splits to train and evaluate on (tests train on the fixture's test split).
    num_train, num_test : int, optional
        Keep only the first N images of a split (all when absent).
    test_start : int
        Where the test images start in their split. Set it to ``num_train`` when both come from one split
        (notMNIST has only its test split staged), so that the model is never tested on its training images.
    """

    dataset: str = "mnist"
    train_split: str = DEFAULT_TRAIN_SPLIT
    test_split: str = DEFAULT_TEST_SPLIT
    num_train: int | None = None
    num_test: int | None = None
    test_start: int = 0

    TABLES = ("data",)
    POSITIVE_INTEGERS = ()

    def __post_init__(self):
        super().__post_init__()
        for name in ("num_train", "num_test"):
            value = getattr(self, name)
            check_field(value is None or is_positive_int(value), name, value, "a positive integer (or absent: all)")
        check_field(is_int(self.test_start) and self.test_start >= 0, "test_start", self.test_start,
                    "a non-negative integer")
        if self.train_split == self.test_split and self.test_start and (
                self.num_train is None or self.test_start < self.num_train):
            check_field(False, "test_start", self.test_start, f"at least num_train ({self.num_train}) when the "
                        "train and test splits are one, so that no test image was trained on")


def load_training_data(data: DataConfig, data_dir=None, device="cpu"):
    """The train and test :class:`~ppl_audit.data.ImageDataset` of a ``[data]`` table, on ``device``.

    Raises
    ------
    ppl_audit.data.DataNotFoundError
        Missing data folder or files (the message names every path tried).

    Examples
    --------
    >>> train, test = load_training_data(DataConfig(train_split="test", num_train=10),
    ...                                  "tests/fixtures/data")  # doctest: +SKIP
    >>> len(train), len(test)  # doctest: +SKIP
    (10, 100)
    """
    from ppl_audit.data import load_dataset

    train = load_dataset(data.dataset, data.train_split, data_dir=data_dir, limit=data.num_train)
    test = load_dataset(data.dataset, data.test_split, data_dir=data_dir,
                        limit=None if data.num_test is None else data.test_start + data.num_test)
    if data.test_start:
        if data.test_start >= len(test):
            raise InvalidInputError(f"[data] test_start = {data.test_start} leaves no test images: split "
                                    f"{data.test_split!r} of {data.dataset!r} has {len(test)}")
        labels = None if test.labels is None else test.labels[data.test_start:]
        test = dataclasses.replace(test, images=test.images[data.test_start:], labels=labels)
    return train.to(device), test.to(device)


@contextmanager
def seeded(seed: int):
    """Seed torch's global generator inside the block and restore it after (for weight initialisation).

    Examples
    --------
    >>> with seeded(0):
    ...     a = torch.rand(1)
    >>> with seeded(0):
    ...     b = torch.rand(1)
    >>> bool(a == b)
    True
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def minibatches(n: int, batch_size: int, generator: torch.Generator, device) -> Iterator[torch.Tensor]:
    """Shuffled index batches covering ``range(n)`` once (the last one may be short).

    Examples
    --------
    >>> [len(b) for b in minibatches(5, 2, torch.Generator().manual_seed(0), "cpu")]
    [2, 2, 1]
    """
    order = torch.randperm(n, generator=generator).to(device)
    yield from order.split(batch_size)


class Stopwatch:
    """Wall-clock seconds since creation (``float(watch)``).

    Examples
    --------
    >>> float(Stopwatch()) >= 0
    True
    """

    def __init__(self):
        self.start = time.perf_counter()

    def __float__(self) -> float:
        return time.perf_counter() - self.start


__all__ = [
    "DEFAULT_TEST_SPLIT",
    "DEFAULT_TRAIN_SPLIT",
    "EVAL_CHUNK",
    "DataConfig",
    "Stopwatch",
    "load_training_data",
    "minibatches",
    "seeded",
]
