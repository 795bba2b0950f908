"""Read a folder of images a user wants scored: PNG/JPEG/BMP files and ``.npy`` / ``.npz`` arrays.

Every image becomes a float32 grey image in ``[0, 1]``: 8-bit files are
divided by 255, colour files are converted to grey (ITU-R 601-2 luma, as
Pillow's ``"L"`` mode does), arrays with values above 1 are taken as 0-255.
Images must already have the expected side (28 x 28 for MNIST models):
resizing would change what the detectors measure, so a mismatch is an error
naming the file, never a silent resize.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ppl_audit.data.errors import DataFileError, DataNotFoundError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
ARRAY_SUFFIXES = (".npy", ".npz")
MAX_8BIT = 255.0  # arrays whose maximum exceeds 1 are read as 8-bit grey levels


def _as_grey(array: np.ndarray, source: str, side: int) -> np.ndarray:
    """``(n, side, side)`` float32 in [0, 1] from an ``(side, side)``, ``(n, side, side)`` or ``(n, 1, side, side)`` array."""
    a = np.asarray(array)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (side, side):
        raise DataFileError(f"{source}: expected {side} x {side} grey images, got an array of shape {array.shape}")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise DataFileError(f"{source}: expected numbers, got dtype {a.dtype}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise DataFileError(f"{source}: contains NaN or inf")
    if a.size and (a.min() < 0 or a.max() > MAX_8BIT):
        raise DataFileError(f"{source}: values must lie in [0, 1] or [0, 255], got [{a.min():g}, {a.max():g}]")
    if a.size and a.max() > 1:
        a = a / MAX_8BIT
    return a


def _read_picture(path: Path, side: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            grey = np.asarray(img.convert("L"), dtype=np.float32) / MAX_8BIT
    except (UnidentifiedImageError, OSError) as exc:
        raise DataFileError(f"{path}: not a readable image ({exc})") from exc
    if grey.shape != (side, side):
        raise DataFileError(f"{path}: expected a {side} x {side} image, got {grey.shape[1]} x {grey.shape[0]}; "
                            "resize it first (the detectors are defined on the training images' size)")
    return grey[None]


def _read_array(path: Path, side: int) -> tuple[np.ndarray, list[str]]:
    try:
        if path.suffix == ".npy":
            arrays = {"": np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError) as exc:
        raise DataFileError(f"{path}: not a readable numpy file without pickles ({exc})") from exc
    images, names = [], []
    for key, array in arrays.items():
        grey = _as_grey(array, f"{path}{'[' + key + ']' if key else ''}", side)
        images.append(grey)
        names += [f"{path.name}{':' + key if key else ''}[{i}]" for i in range(len(grey))]
    return (np.concatenate(images) if images else np.zeros((0, side, side), np.float32)), names


def load_image_folder(folder: str | os.PathLike, *, side: int = 28) -> tuple[torch.Tensor, list[str]]:
    """All images of a folder (not recursive), sorted by file name.

    Parameters
    ----------
    folder : path-like
    side : int
        The required width and height.

    Returns
    -------
    images : torch.Tensor
        ``(N, 1, side, side)`` float32 in ``[0, 1]``.
    names : list of str
        One per image: the file name, with ``[i]`` for entries of an array file.

    Raises
    ------
    DataNotFoundError
        The folder does not exist or holds no image or array file.
    DataFileError
        A file cannot be read, has the wrong size, or holds values outside ``[0, 255]``.

    Examples
    --------
    >>> import tempfile
    >>> d = tempfile.mkdtemp(); np.save(f"{d}/a.npy", np.zeros((2, 28, 28), np.uint8))
    >>> images, names = load_image_folder(d)
    >>> images.shape, names
    (torch.Size([2, 1, 28, 28]), ['a.npy[0]', 'a.npy[1]'])
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataNotFoundError(f"image folder {root} does not exist")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES + ARRAY_SUFFIXES)
    if not files:
        raise DataNotFoundError(f"image folder {root} holds no image ({', '.join(IMAGE_SUFFIXES)}) or array "
                                f"({', '.join(ARRAY_SUFFIXES)}) file")
    images, names = [], []
    for path in files:
        if path.suffix.lower() in ARRAY_SUFFIXES:
            grey, more = _read_array(path, side)
            images.append(grey)
            names += more
        else:
            images.append(_read_picture(path, side))
            names.append(path.name)
    stacked = np.concatenate(images)
    if len(stacked) == 0:
        raise DataNotFoundError(f"image folder {root}: its array files hold no images")
    return torch.from_numpy(stacked[:, None].copy()), names


__all__ = ["ARRAY_SUFFIXES", "IMAGE_SUFFIXES", "load_image_folder"]
