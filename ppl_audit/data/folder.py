"""Read a folder of images a user wants scored: PNG/JPEG/BMP files and ``.npy`` / ``.npz`` arrays.

Every image becomes a float32 grey image in ``[0, 1]``: 8-bit files are
divided by 255, colour files are converted to grey (ITU-R 601-2 luma, as
Pillow's ``"L"`` mode does), arrays with values above 1 are taken as 0-255.
Images must already have the expected side (28 x 28 for MNIST models):
resizing would change what the detectors measure, so a mismatch is an error
naming the file, never a silent resize.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ppl_audit.data.errors import DataFileError, DataNotFoundError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
ARRAY_SUFFIXES = (".npy", ".npz")
MAX_8BIT = 255.0  # arrays whose maximum exceeds 1 are read as 8-bit grey levels
# Pictures are 28 x 28: 4,096 x 4,096 is ample for any real photo and refuses decompression bombs before decoding.
MAX_PICTURE_PIXELS = 4096 * 4096
MAX_ARRAY_BYTES = 4 * 2**30  # 4 GiB per array file: ~1.4 million float64 28 x 28 images
MAX_NPY_HEADER = 10_000  # numpy's own default limit on an .npy header's length


def _as_grey(array: np.ndarray, source: str, side: int) -> np.ndarray:
    """``(n, side, side)`` float32 in [0, 1] from an ``(side, side)``, ``(n, side, side)`` or ``(n, 1, side, side)`` array."""
    a = np.asarray(array)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1:] != (side, side):
        raise DataFileError(f"{source}: expected {side} x {side} grey images, got an array of shape {array.shape}")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.issubdtype(a.dtype, np.complexfloating):
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
        with Image.open(path) as img:  # reads the header only: the size is known before any pixel is decoded
            if img.width * img.height > MAX_PICTURE_PIXELS:
                raise DataFileError(f"{path}: a {img.width} x {img.height} image is larger than the "
                                    f"{MAX_PICTURE_PIXELS} pixels read (images must be {side} x {side})")
            grey = np.asarray(img.convert("L"), dtype=np.float32) / MAX_8BIT
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError, SyntaxError) as exc:
        raise DataFileError(f"{path}: not a readable image ({str(exc)[:200]})") from None
    if grey.shape != (side, side):
        raise DataFileError(f"{path}: expected a {side} x {side} image, got {grey.shape[1]} x {grey.shape[0]}; "
                            "resize it first (the detectors are defined on the training images' size)")
    return grey[None]


def _check_npy_header(fh, source: str, available: int) -> None:
    """Refuse an ``.npy`` stream whose header's shape x dtype needs more bytes than ``available`` follow it,
    or more than :data:`MAX_ARRAY_BYTES`, before numpy allocates the array."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fh, max_header_size=MAX_NPY_HEADER)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fh, max_header_size=MAX_NPY_HEADER)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    if dtype.hasobject:
        raise ValueError("it holds Python objects, which are never unpickled")
    needed = math.prod(shape) * dtype.itemsize
    if needed > MAX_ARRAY_BYTES:
        raise ValueError(f"its header claims {needed} bytes of data, more than the {MAX_ARRAY_BYTES} read")
    if needed > available - fh.tell():
        raise ValueError(f"its header claims shape {shape} of {dtype} ({needed} bytes) but only "
                         f"{available - fh.tell()} follow: the file is truncated")


def _load_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as fh:
        _check_npy_header(fh, str(path), path.stat().st_size)
    return np.load(path, allow_pickle=False)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:  # sizes come from the zip directory, before any decompression
        members = archive.infolist()
        if sum(m.file_size for m in members) > MAX_ARRAY_BYTES:
            raise ValueError(f"its arrays unpack to more than the {MAX_ARRAY_BYTES} bytes read")
        arrays = {}
        for member in members:
            with archive.open(member) as fh:
                _check_npy_header(fh, f"{path}[{member.filename}]", member.file_size)
            with archive.open(member) as fh:
                arrays[member.filename.removesuffix(".npy")] = np.lib.format.read_array(fh, allow_pickle=False)
    return arrays


def _read_array(path: Path, side: int) -> tuple[np.ndarray, list[str]]:
    try:
        arrays = {"": _load_npy(path)} if path.suffix.lower() == ".npy" else _load_npz(path)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, NotImplementedError) as exc:
        raise DataFileError(f"{path}: not a readable numpy file without pickles ({str(exc)[:200] or type(exc).__name__})") from None
    images, names = [], []
    for key, array in arrays.items():
        grey = _as_grey(array, f"{path}{'[' + key + ']' if key else ''}", side)
        images.append(grey)
        names += [f"{path.name}{':' + key if key else ''}[{i}]" for i in range(len(grey))]
    return (np.concatenate(images) if images else np.zeros((0, side, side), np.float32)), names


def load_labelled_arrays(path: str | os.PathLike, *, side: int = 28,
                         num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled images a user gives: an ``.npz`` with arrays ``images`` and ``labels`` (never unpickled).

    ``images`` as :func:`load_image_folder` reads arrays (``(N, side, side)`` or ``(N, 1, side, side)``,
    values in ``[0, 1]`` or ``[0, 255]``); ``labels`` ``(N,)`` integers in ``0 .. num_classes - 1``.

    Raises
    ------
    DataNotFoundError
        The file does not exist.
    DataFileError
        It is not a pickle-free ``.npz``, lacks either array, or holds values out of range.

    Examples
    --------
    >>> import tempfile
    >>> f = f"{tempfile.mkdtemp()}/test.npz"; np.savez(f, images=np.zeros((3, 28, 28), np.uint8), labels=[0, 1, 9])
    >>> images, labels = load_labelled_arrays(f)
    >>> images.shape, labels.tolist()
    (torch.Size([3, 1, 28, 28]), [0, 1, 9])
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"labelled data {path} does not exist (an .npz with arrays images and labels)")
    try:
        arrays = _load_npz(path)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, NotImplementedError) as exc:
        raise DataFileError(f"{path}: not a readable .npz without pickles ({str(exc)[:200] or type(exc).__name__})"
                            ) from None
    if set(arrays) != {"images", "labels"}:
        raise DataFileError(f"{path}: expected exactly the arrays 'images' and 'labels', got {sorted(arrays)}")
    images = _as_grey(arrays["images"], f"{path}[images]", side)
    labels = np.asarray(arrays["labels"])
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer) or (
            labels.size and (labels.min() < 0 or labels.max() >= num_classes)):
        raise DataFileError(f"{path}[labels]: expected {len(images)} integers in 0..{num_classes - 1}, got "
                            f"shape {labels.shape} of {labels.dtype}")
    if not len(images):
        raise DataFileError(f"{path}: holds no image")
    return torch.from_numpy(images[:, None].copy()), torch.from_numpy(labels.astype(np.int64))


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


__all__ = ["ARRAY_SUFFIXES", "IMAGE_SUFFIXES", "load_image_folder", "load_labelled_arrays"]
