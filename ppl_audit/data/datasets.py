"""Named real datasets read from a local data folder: the registry and its loader.

The data folder has one sub-folder per dataset, laid out as the staged data
the project ships with (its ``README.md`` and each ``PROVENANCE.md`` say where
every file came from)::

    DATA/mnist/train-images-idx3-ubyte.gz      DATA/notmnist/t10k-images-idx3-ubyte.gz
    DATA/mnist/train-labels-idx1-ubyte.gz      DATA/notmnist/t10k-labels-idx1-ubyte.gz
    DATA/mnist/t10k-images-idx3-ubyte.gz       DATA/fashion-mnist/x_test_first2000.npz
    DATA/mnist/t10k-labels-idx1-ubyte.gz       DATA/fashion-mnist/t10k-labels-idx1-ubyte.gz
                                               DATA/omniglot/omniglot_bgsmall_28.npz

An IDX file may also be present uncompressed (the name without ``.gz``).
Each split is read on its own, so a folder may hold only the splits it needs
(the test fixture holds 100 MNIST test images and nothing else).

The folder is ``data_dir`` when given (the command line's ``--data-dir``),
else ``$PPL_AUDIT_DATA``. Nothing is ever downloaded: a missing file raises
:class:`~ppl_audit.data.errors.DataNotFoundError` naming every path tried.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Mapping

import numpy as np
import torch

from ppl_audit.validators import check_images
from ppl_audit.data.errors import DataFileError, DataNotFoundError
from ppl_audit.data.readers import read_idx, read_npz
from ppl_audit.errors import InvalidInputError

DATA_ENV = "PPL_AUDIT_DATA"  # environment variable naming the data folder when no data_dir is given
DATA_DIR_OPTION = "--data-dir"  # the command-line flag that error messages point the user to
PIXEL_MAX = 255  # uint8 pixels are divided by this, so 0 -> 0.0 and 255 -> 1.0 exactly
MNIST_SIDE = 28  # every registered dataset is 28 x 28 grey (MNIST's format)


# ---------------------------------------------------------------------------
# Where the data folder is
# ---------------------------------------------------------------------------
def _how_to_give() -> str:
    return f"pass {DATA_DIR_OPTION} DIR (data_dir=DIR from Python) or set the environment variable {DATA_ENV}=DIR"


def _locate_data_dir(data_dir: str | os.PathLike | None) -> tuple[Path, str]:
    """The data folder and where it came from (for messages)."""
    if data_dir is not None:
        if not str(data_dir).strip():
            raise DataNotFoundError(f"the data folder given is an empty path; {_how_to_give()}")
        path, origin = Path(data_dir).expanduser(), f"data_dir / {DATA_DIR_OPTION}"
    elif os.environ.get(DATA_ENV):
        path, origin = Path(os.environ[DATA_ENV]).expanduser(), f"${DATA_ENV}"
    else:
        raise DataNotFoundError(
            f"no data folder given: {_how_to_give()}; it holds one sub-folder per dataset "
            f"({', '.join(DATASETS)}). Nothing is downloaded."
        )
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "does not exist"
        raise DataNotFoundError(f"data folder {path} (from {origin}) {state}; {_how_to_give()}")
    return path, origin


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder: ``data_dir`` if given, else ``$PPL_AUDIT_DATA``.

    Parameters
    ----------
    data_dir : path-like, optional
        An explicit folder; wins over the environment variable.

    Returns
    -------
    pathlib.Path
        An existing folder (``~`` expanded).

    Raises
    ------
    DataNotFoundError
        Neither is given (the message says how to give one), or the folder
        does not exist.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     resolve_data_dir(tmp) == Path(tmp)
    True
    """
    return _locate_data_dir(data_dir)[0]


# ---------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class DataFile:
    """One file of a dataset, relative to the dataset's folder.

    Parameters
    ----------
    name : str
        File name, e.g. ``"t10k-images-idx3-ubyte.gz"`` (IDX; the uncompressed
        name without ``.gz`` is accepted too) or ``"x_test_first2000.npz"``.
    key : str, optional
        The array's name inside an ``.npz`` archive; required for ``.npz``,
        not allowed for IDX.

    Examples
    --------
    >>> [p.name for p in DataFile("t10k-labels-idx1-ubyte.gz").candidates(Path("mnist"))]
    ['t10k-labels-idx1-ubyte.gz', 't10k-labels-idx1-ubyte']
    """

    name: str
    key: str | None = None

    def __post_init__(self):
        parts = PurePosixPath(self.name).parts
        if not self.name or PurePosixPath(self.name).is_absolute() or ".." in parts:
            raise ValueError(f"DataFile.name must be a relative path inside the dataset folder, got {self.name!r}")
        if self.format == "npz" and not self.key:
            raise ValueError(f"DataFile.key is required for the .npz file {self.name!r} (the array's name)")
        if self.format == "idx" and self.key is not None:
            raise ValueError(f"DataFile.key must be None for the IDX file {self.name!r}, got {self.key!r}")

    @property
    def format(self) -> str:
        """``"npz"`` or ``"idx"``."""
        return "npz" if self.name.endswith(".npz") else "idx"

    def candidates(self, folder: Path) -> tuple[Path, ...]:
        """Paths this file may have under ``folder``, in the order they are tried."""
        names = [self.name]
        if self.format == "idx" and self.name.endswith(".gz"):
            names.append(self.name[: -len(".gz")])
        return tuple(folder / n for n in names)

    def read(self, path: Path) -> np.ndarray:
        """Read the array from ``path`` (one of :meth:`candidates`)."""
        return read_npz(path, self.key) if self.format == "npz" else read_idx(path)


@dataclass(frozen=True)
class SplitSpec:
    """The files of one split.

    Parameters
    ----------
    images : tuple of DataFile
        Alternatives, tried in order; the first one present is read.
    labels : tuple of DataFile
        Alternatives for the labels; empty for an unlabelled split.
    labels_may_extend : bool
        The labels file may hold labels for more images than are staged (the
        Fashion-MNIST subset: 10,000 labels, 2,000 images); the first ``N``
        belong to the ``N`` images. Otherwise the counts must be equal.
    description : str
        One line for listings.
    """

    images: tuple[DataFile, ...]
    labels: tuple[DataFile, ...] = ()
    labels_may_extend: bool = False
    description: str = ""

    def __post_init__(self):
        if not self.images:
            raise ValueError("SplitSpec.images needs at least one DataFile")


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: its splits, class names and licence.

    Parameters
    ----------
    name : str
        Registry name, also the sub-folder of the data folder.
    description : str
        One line.
    splits : mapping of str to SplitSpec
        The splits, by name.
    default_split : str
        The split :func:`load_dataset` reads when none is named.
    class_names : tuple of str
        Names of the label values ``0 .. K-1``, when fixed.
    class_names_file : DataFile, optional
        An array of class names stored with the data (Omniglot's 242
        characters); read instead of ``class_names``.
    licence : str
        Licence and citation in one line (details in the folder's PROVENANCE.md).
    image_size : tuple of int
        ``(H, W)`` every image must have.
    """

    name: str
    description: str
    splits: Mapping[str, SplitSpec]
    default_split: str
    class_names: tuple[str, ...] = ()
    class_names_file: DataFile | None = None
    licence: str = ""
    image_size: tuple[int, int] = (MNIST_SIDE, MNIST_SIDE)

    def __post_init__(self):
        object.__setattr__(self, "splits", MappingProxyType(dict(self.splits)))
        if self.default_split not in self.splits:
            raise ValueError(
                f"DatasetSpec.default_split={self.default_split!r} is not one of the splits {list(self.splits)}"
            )


_MNIST_DIGITS = tuple(str(d) for d in range(10))

DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({
    "mnist": DatasetSpec(
        name="mnist",
        description="MNIST handwritten digits, the original LeCun/Cortes IDX files",
        splits={
            "train": SplitSpec(
                images=(DataFile("train-images-idx3-ubyte.gz"),),
                labels=(DataFile("train-labels-idx1-ubyte.gz"),),
                description="60,000 training digits",
            ),
            "test": SplitSpec(
                images=(DataFile("t10k-images-idx3-ubyte.gz"),),
                labels=(DataFile("t10k-labels-idx1-ubyte.gz"),),
                description="10,000 test digits",
            ),
        },
        default_split="test",
        class_names=_MNIST_DIGITS,
        licence="CC BY-SA 3.0, Yann LeCun and Corinna Cortes; cite LeCun et al., Proc. IEEE 86(11), 1998",
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        description="Fashion-MNIST (Zalando) clothing images",
        splits={
            # The full test-image IDX is read when present; the staged data has
            # test images 0-1999 as .npz and all 10,000 original test labels,
            # whose first 2,000 are those images' labels (PROVENANCE.md checks
            # them equal to y_test_first2000.npz, the fallback here).
            "test": SplitSpec(
                images=(DataFile("t10k-images-idx3-ubyte.gz"), DataFile("x_test_first2000.npz", "arr_0")),
                labels=(DataFile("t10k-labels-idx1-ubyte.gz"), DataFile("y_test_first2000.npz", "arr_0")),
                labels_may_extend=True,
                description="test images (the staged subset: the first 2,000 of 10,000) with their labels",
            ),
        },
        default_split="test",
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                     "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        licence="MIT, (c) 2017 Zalando SE; cite Xiao, Rasul, Vollgraf, arXiv:1708.07747",
    ),
    "notmnist": DatasetSpec(
        name="notmnist",
        description="notMNIST letters A-J in MNIST's IDX format (labels 0-9 stand for A-J)",
        splits={
            "test": SplitSpec(
                images=(DataFile("t10k-images-idx3-ubyte.gz"),),
                labels=(DataFile("t10k-labels-idx1-ubyte.gz"),),
                description="10,000 letters, 1,000 per class",
            ),
        },
        default_split="test",
        class_names=tuple("ABCDEFGHIJ"),
        licence="no explicit licence (Bulatov 2011, research/test data); conversion MIT, (c) 2016 David Flanagan",
    ),
    "omniglot": DatasetSpec(
        name="omniglot",
        description="Omniglot characters resized to 28 x 28, white ink on black like MNIST",
        splits={
            "background-small": SplitSpec(
                images=(DataFile("omniglot_bgsmall_28.npz", "images"),),
                labels=(DataFile("omniglot_bgsmall_28.npz", "labels"),),
                description="4,840 images: 242 characters of 8 alphabets x 20 drawers",
            ),
        },
        default_split="background-small",
        class_names_file=DataFile("omniglot_bgsmall_28.npz", "class_names"),
        licence="MIT, (c) 2015 Brenden Lake; cite Lake, Salakhutdinov, Tenenbaum, Science 350(6266), 2015",
    ),
})


def dataset_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name``.

    Raises
    ------
    InvalidInputError
        Unknown name; the message lists the known ones.

    Examples
    --------
    >>> dataset_spec("notmnist").class_names[:3]
    ('A', 'B', 'C')
    """
    if name not in DATASETS:
        raise InvalidInputError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def available_datasets() -> dict[str, tuple[str, ...]]:
    """Every registered dataset name with its splits (whether or not its files are present).

    Examples
    --------
    >>> available_datasets()["mnist"]
    ('train', 'test')
    """
    return {name: tuple(spec.splits) for name, spec in DATASETS.items()}


# ---------------------------------------------------------------------------
# The loaded data
# ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A batch of images with their labels, as loaded from disk.

    Parameters
    ----------
    name : str
        Dataset name (registry name for loaded data).
    split : str
        Split name.
    images : torch.Tensor
        float ``(N, C, H, W)`` in ``[0, 1]``; float32 ``(N, 1, 28, 28)`` for
        every registered dataset.
    labels : torch.Tensor, optional
        int64 ``(N,)``, or ``None`` for unlabelled data.
    class_names : tuple of str
        Names of the label values ``0 .. K-1`` (empty when unknown).
    source : tuple of pathlib.Path
        The files that were read.

    Notes
    -----
    Not a ``torch.utils.data.Dataset``; for mini-batches use
    ``TensorDataset(ds.images, ds.labels)``. Equality is identity (tensors
    have no single truth value).

    Examples
    --------
    >>> ds = ImageDataset("toy", "test", torch.zeros(3, 1, 28, 28), torch.tensor([0, 1, 1]), ("a", "b"))
    >>> len(ds), ds.num_classes
    (3, 2)
    """

    name: str
    split: str
    images: torch.Tensor = field(repr=False)
    labels: torch.Tensor | None = field(default=None, repr=False)
    class_names: tuple[str, ...] = ()
    source: tuple[Path, ...] = ()

    def __post_init__(self):
        check_images(self.images)
        n = self.images.shape[0]
        if self.labels is not None:
            if not isinstance(self.labels, torch.Tensor) or self.labels.dtype != torch.int64:
                got = self.labels.dtype if isinstance(self.labels, torch.Tensor) else type(self.labels).__name__
                raise InvalidInputError(f"ImageDataset.labels must be an int64 tensor or None, got {got}")
            if tuple(self.labels.shape) != (n,):
                raise InvalidInputError(
                    f"ImageDataset.labels must have shape ({n},) to match {n} images, got {tuple(self.labels.shape)}"
                )
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "source", tuple(Path(p) for p in self.source))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.images.shape))
        labels = "None" if self.labels is None else f"{len(self.labels)} labels"
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, images={shape} {self.images.dtype}, "
            f"labels={labels}, classes={len(self.class_names)}, source={[str(p) for p in self.source]})"
        )

    @property
    def num_classes(self) -> int:
        """``K``, the number of class names."""
        return len(self.class_names)

    def to(self, device: str | torch.device) -> "ImageDataset":
        """A copy with images and labels on ``device``."""
        labels = None if self.labels is None else self.labels.to(device)
        return dataclasses.replace(self, images=self.images.to(device), labels=labels)


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------
def _find(files: tuple[DataFile, ...], folder: Path, what: str, root: Path, origin: str) -> tuple[DataFile, Path]:
    tried = []
    for data_file in files:
        for path in data_file.candidates(folder):
            if path.is_file():
                return data_file, path
            tried.append(str(path))
    raise DataNotFoundError(
        f"{what} not found in data folder {root} (from {origin}); looked for: {', '.join(tried)}. "
        f"Nothing is downloaded: put the file there (see the data folder's README.md), "
        f"or {_how_to_give()} for a folder that has it"
    )


def _check_limit(limit) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise InvalidInputError(f"limit must be a positive integer or None, got {limit!r}")
    return int(limit)


def _check_image_array(array: np.ndarray, path: Path, image_size: tuple[int, int]) -> None:
    if array.dtype != np.uint8:
        raise DataFileError(f"{path}: images must be uint8 (0-255), got dtype {array.dtype}")
    if array.ndim != 3 or tuple(array.shape[1:]) != tuple(image_size):
        raise DataFileError(
            f"{path}: images must have shape (N, {image_size[0]}, {image_size[1]}), got {array.shape}"
        )


def _check_label_array(array: np.ndarray, path: Path, num_images: int, images_path: Path,
                       may_extend: bool, num_classes: int) -> np.ndarray:
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise DataFileError(f"{path}: labels must be a 1-d integer array, got shape {array.shape} dtype {array.dtype}")
    if len(array) < num_images or (len(array) > num_images and not may_extend):
        raise DataFileError(
            f"{path}: {len(array)} labels for the {num_images} images in {images_path}; the counts must be equal"
            + (" (or the labels may be more, the first ones matching)" if may_extend else "")
        )
    array = array[:num_images]
    if num_classes and len(array) and (array.min() < 0 or array.max() >= num_classes):
        raise DataFileError(
            f"{path}: labels must lie in 0..{num_classes - 1}, found {int(array.min())}..{int(array.max())}"
        )
    return array


def load_dataset(name: str, split: str | None = None, *, data_dir: str | os.PathLike | None = None,
                 limit: int | None = None) -> ImageDataset:
    """Load a registered dataset's split from the local data folder; never downloads.

    Parameters
    ----------
    name : str
        ``"mnist"``, ``"fashion-mnist"``, ``"notmnist"`` or ``"omniglot"``
        (see :func:`available_datasets`).
    split : str, optional
        Default: the dataset's ``default_split`` (``"test"``, or
        ``"background-small"`` for Omniglot).
    data_dir : path-like, optional
        The data folder; default ``$PPL_AUDIT_DATA``.
    limit : int, optional
        Keep only the first ``limit`` images (in file order, so the same
        images every time); all of them when ``limit`` exceeds the count.
        The whole file is still read and checked (IDX and npz have no index).

    Returns
    -------
    ImageDataset
        float32 images ``(N, 1, 28, 28)`` in ``[0, 1]`` (pixel / 255), int64
        labels ``(N,)``, the class names and the files read.

    Raises
    ------
    InvalidInputError
        Unknown dataset or split, or a bad ``limit``.
    DataNotFoundError
        No data folder given, or a file missing (the message lists every path tried).
    DataFileError
        A file is malformed: the message names it and what is wrong.

    Examples
    --------
    >>> ds = load_dataset("mnist", "test", data_dir="tests/fixtures/data")  # doctest: +SKIP
    >>> ds.images.shape, int(ds.labels[0])  # doctest: +SKIP
    (torch.Size([100, 1, 28, 28]), 7)
    """
    spec = dataset_spec(name)
    split = spec.default_split if split is None else split
    if split not in spec.splits:
        raise InvalidInputError(f"dataset {name!r} has no split {split!r}; its splits: {', '.join(spec.splits)}")
    limit = _check_limit(limit)
    split_spec = spec.splits[split]
    root, origin = _locate_data_dir(data_dir)
    folder = root / spec.name

    images_file, images_path = _find(split_spec.images, folder, f"{name} {split} images", root, origin)
    images = images_file.read(images_path)
    _check_image_array(images, images_path, spec.image_size)
    sources = [images_path]

    class_names = spec.class_names
    if spec.class_names_file is not None:
        names_file, names_path = _find((spec.class_names_file,), folder, f"{name} class names", root, origin)
        stored = names_file.read(names_path)
        if stored.ndim != 1 or stored.dtype.kind != "U":
            raise DataFileError(
                f"{names_path}: class names must be a 1-d string array, got dtype {stored.dtype} shape {stored.shape}"
            )
        class_names = tuple(str(s) for s in stored)
        sources.append(names_path)

    labels = None
    if split_spec.labels:
        labels_file, labels_path = _find(split_spec.labels, folder, f"{name} {split} labels", root, origin)
        labels = _check_label_array(labels_file.read(labels_path), labels_path, len(images), images_path,
                                    split_spec.labels_may_extend, len(class_names))
        sources.append(labels_path)

    keep = len(images) if limit is None else min(limit, len(images))
    x = torch.from_numpy(np.ascontiguousarray(images[:keep])).unsqueeze(1).to(torch.float32).div_(PIXEL_MAX)
    y = None if labels is None else torch.from_numpy(labels[:keep].astype(np.int64))
    return ImageDataset(
        name=name,
        split=split,
        images=x,
        labels=y,
        class_names=class_names,
        source=tuple(dict.fromkeys(sources)),
    )


__all__ = [
    "DATASETS",
    "DATA_DIR_OPTION",
    "DATA_ENV",
    "MNIST_SIDE",
    "PIXEL_MAX",
    "DataFile",
    "DatasetSpec",
    "ImageDataset",
    "SplitSpec",
    "available_datasets",
    "dataset_spec",
    "load_dataset",
    "resolve_data_dir",
]
