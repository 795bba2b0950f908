"""Real image data and synthetic out-of-distribution images.

* :func:`load_dataset` reads a named dataset (MNIST, Fashion-MNIST, notMNIST,
  Omniglot) from a local data folder (``data_dir=`` / ``--data-dir``, else
  ``$PPL_AUDIT_DATA``) into an :class:`ImageDataset`: float32 images
  ``(N, 1, 28, 28)`` in ``[0, 1]`` and int64 labels. Nothing downloads.
* :func:`read_idx` / :func:`write_idx` / :func:`read_npz` read the files
  themselves, checking every header field.
* :func:`apply_transform` makes OoD batches by name (``uniform-noise``,
  ``gaussian-noise``, ``hflip``, ``vflip``).

Examples
--------
>>> from ppl_audit.data import available_datasets, available_transforms
>>> sorted(available_datasets())
['fashion-mnist', 'mnist', 'notmnist', 'omniglot']
>>> "hflip" in available_transforms()
True
"""

from ppl_audit.data.folder import load_image_folder, load_labelled_arrays
from ppl_audit.data.datasets import (
    DATA_ENV,
    DATASETS,
    DataFile,
    DatasetSpec,
    ImageDataset,
    SplitSpec,
    available_datasets,
    dataset_spec,
    load_dataset,
    resolve_data_dir,
)
from ppl_audit.data.errors import DataFileError, DataNotFoundError
from ppl_audit.data.readers import idx_bytes, npz_keys, parse_idx, read_idx, read_npz, write_idx
from ppl_audit.data.transforms import (
    GAUSSIAN_NOISE_MEAN,
    GAUSSIAN_NOISE_STD,
    TRANSFORMS,
    ImageTransform,
    apply_transform,
    available_transforms,
    gaussian_noise,
    get_transform,
    hflip,
    uniform_noise,
    vflip,
)

__all__ = [
    "load_image_folder",
    "load_labelled_arrays",
    "DATASETS",
    "DATA_ENV",
    "GAUSSIAN_NOISE_MEAN",
    "GAUSSIAN_NOISE_STD",
    "TRANSFORMS",
    "DataFile",
    "DataFileError",
    "DataNotFoundError",
    "DatasetSpec",
    "ImageDataset",
    "ImageTransform",
    "SplitSpec",
    "apply_transform",
    "available_datasets",
    "available_transforms",
    "dataset_spec",
    "gaussian_noise",
    "get_transform",
    "hflip",
    "idx_bytes",
    "load_dataset",
    "npz_keys",
    "parse_idx",
    "read_idx",
    "read_npz",
    "resolve_data_dir",
    "uniform_noise",
    "vflip",
    "write_idx",
]
