"""Readers (and a writer) for the two file formats the staged datasets come in.

* **IDX** (LeCun et al.'s MNIST format): a 4-byte big-endian magic number
  ``0x00 0x00 <dtype code> <number of dimensions>``, one big-endian uint32 per
  dimension, then the payload in C order. Files may be gzip-compressed; that
  is detected from the content (gzip magic bytes), not from the file name.
* **npz** (numpy's zip of ``.npy`` arrays). Archives are opened with
  ``allow_pickle=False``: a data file from someone else must never run code.

Every problem with a file raises :class:`~ppl_audit.data.errors.DataFileError`
(or :class:`~ppl_audit.data.errors.DataNotFoundError` when it is missing)
with a message that names the file and says what is wrong with it.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ppl_audit.data.errors import DataFileError, DataNotFoundError

GZIP_MAGIC = b"\x1f\x8b"  # first two bytes of every gzip stream (RFC 1952)
IDX_MAGIC_SIZE = 4  # 0x00 0x00, dtype code, number of dimensions
IDX_DIM_SIZE = 4  # each dimension is a big-endian uint32
ZIP_MAGIC = b"PK"  # an .npz is a zip archive: local-file or end-of-directory records start "PK"
NPY_MAGIC = b"\x93NUMPY"  # a bare .npy file (one unnamed array)
GZIP_MTIME = 0  # written .gz files carry mtime 0, so the same array gives the same bytes

# IDX data-type codes (third byte of the magic number) -> big-endian numpy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}


def _known_codes() -> str:
    return ", ".join(f"0x{code:02x} {dtype.name}" for code, dtype in IDX_DTYPES.items())


def _read_bytes(path: Path, what: str) -> bytes:
    """The file's bytes, gunzipped when they start with the gzip magic."""
    if not path.exists():
        raise DataNotFoundError(f"{what} {path} does not exist")
    if not path.is_file():
        raise DataFileError(f"{path}: not a regular file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataFileError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if raw[: len(GZIP_MAGIC)] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut stream is an EOFError
        raise DataFileError(f"{path}: corrupt or truncated gzip data ({exc})") from exc


def parse_idx(buf: bytes, path: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file, checking every header field.

    Parameters
    ----------
    buf : bytes
        The whole file.
    path : path-like
        Only used to name the file in error messages.

    Returns
    -------
    numpy.ndarray
        A writable array in native byte order, shaped as the header says.

    Raises
    ------
    DataFileError
        Wrong magic number, unknown dtype code, zero dimensions, a header cut
        short, or a payload whose length differs from what the header implies.

    Examples
    --------
    >>> parse_idx(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 8, 9]))
    array([7, 8, 9], dtype=uint8)
    """
    if len(buf) < IDX_MAGIC_SIZE:
        raise DataFileError(
            f"{path}: not an IDX file: {len(buf)} byte(s), shorter than the {IDX_MAGIC_SIZE}-byte magic number"
        )
    zero, code, ndim = struct.unpack(">HBB", buf[:IDX_MAGIC_SIZE])
    if zero != 0:
        raise DataFileError(
            f"{path}: not an IDX file: magic number 0x{buf[:IDX_MAGIC_SIZE].hex()} does not start with two zero bytes"
        )
    if code not in IDX_DTYPES:
        raise DataFileError(f"{path}: unknown IDX data type code 0x{code:02x}; known codes: {_known_codes()}")
    if ndim == 0:
        raise DataFileError(f"{path}: IDX header declares 0 dimensions")
    header = IDX_MAGIC_SIZE + IDX_DIM_SIZE * ndim
    if len(buf) < header:
        raise DataFileError(
            f"{path}: truncated IDX header: {ndim} dimension(s) need {header} bytes, the file has {len(buf)}"
        )
    dims = struct.unpack(f">{ndim}I", buf[IDX_MAGIC_SIZE:header])
    dtype = IDX_DTYPES[code]
    count = math.prod(dims)
    expected = count * dtype.itemsize
    actual = len(buf) - header
    if actual != expected:
        problem = "truncated" if actual < expected else "has trailing bytes"
        raise DataFileError(
            f"{path}: {problem}: the header declares shape {dims} of {dtype.name} "
            f"= {expected} data bytes, but {actual} follow the header"
        )
    flat = np.frombuffer(buf, dtype=dtype, count=count, offset=header)
    return flat.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not.

    Parameters
    ----------
    path : path-like
        The file. Compression is detected from its first bytes, so a
        ``.gz`` name holding raw IDX (or the reverse) still reads.

    Returns
    -------
    numpy.ndarray
        Shaped and typed as the header says, in native byte order.

    Raises
    ------
    DataNotFoundError
        The file does not exist.
    DataFileError
        Corrupt gzip data or a malformed IDX header or payload (see :func:`parse_idx`).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_idx(Path(tmp) / "x-idx1-ubyte.gz", np.arange(4, dtype=np.uint8))
    ...     read_idx(path)
    array([0, 1, 2, 3], dtype=uint8)
    """
    path = Path(path)
    return parse_idx(_read_bytes(path, "IDX file"), path)


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise an array as IDX bytes (the inverse of :func:`parse_idx`).

    Examples
    --------
    >>> idx_bytes(np.array([1, 2], dtype=np.uint8)).hex()
    '00000801000000020102'
    """
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _IDX_CODES:
        raise DataFileError(
            f"IDX cannot hold dtype {array.dtype}; IDX holds {', '.join(d.name for d in IDX_DTYPES.values())}"
        )
    if array.ndim == 0:
        raise DataFileError("IDX needs at least one dimension, got a 0-d array")
    if any(n >= 2**32 for n in array.shape):
        raise DataFileError(f"IDX dimensions are uint32; shape {array.shape} does not fit")
    code = _IDX_CODES[native]
    head = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    The gzip header carries mtime 0 and the member name without ``.gz``, so
    writing the same array twice gives the same bytes.

    Parameters
    ----------
    path : path-like
        Target file; its folder must exist.
    array : numpy.ndarray
        uint8, int8, int16, int32, float32 or float64, at least 1-d.

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = write_idx(Path(tmp) / "y-idx1-ubyte", np.array([7, 2], dtype=np.uint8))
    ...     path.stat().st_size
    10
    """
    path = Path(path)
    data = idx_bytes(array)
    if path.suffix == ".gz":
        with open(path, "wb") as fh, gzip.GzipFile(
            filename=path.stem, mode="wb", fileobj=fh, compresslevel=9, mtime=GZIP_MTIME
        ) as gz:
            gz.write(data)
    else:
        path.write_bytes(data)
    return path


def npz_keys(path: str | os.PathLike) -> tuple[str, ...]:
    """Names of the arrays in an ``.npz`` archive.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     np.savez(Path(tmp) / "a.npz", images=np.zeros(2), labels=np.ones(2))
    ...     npz_keys(Path(tmp) / "a.npz")
    ('images', 'labels')
    """
    with _open_npz(Path(path)) as archive:
        return tuple(archive.files)


def _open_npz(path: Path):
    if not path.exists():
        raise DataNotFoundError(f"npz file {path} does not exist")
    if not path.is_file():
        raise DataFileError(f"{path}: not a regular file")
    with open(path, "rb") as fh:
        start = fh.read(max(len(NPY_MAGIC), len(ZIP_MAGIC)))
    if start.startswith(NPY_MAGIC):
        raise DataFileError(f"{path}: holds a single .npy array, not an .npz archive of named arrays")
    if not start.startswith(ZIP_MAGIC):
        # Checked here because numpy would fall back to unpickling unknown content.
        raise DataFileError(f"{path}: not an .npz archive (it does not start with the zip signature)")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataFileError(f"{path}: not a readable .npz archive ({exc})") from exc


def read_npz(path: str | os.PathLike, key: str) -> np.ndarray:
    """Read one named array from an ``.npz`` archive, refusing pickled objects.

    Parameters
    ----------
    path : path-like
        The archive (``np.savez`` or ``np.savez_compressed``).
    key : str
        The array's name (``np.savez(path, arr)`` names it ``arr_0``).

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    DataNotFoundError
        The file does not exist.
    DataFileError
        Not an archive, a corrupt member, an object (pickled) array, or no
        array named ``key`` (the message lists the names there are).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     np.savez(Path(tmp) / "a.npz", np.arange(3, dtype=np.uint8))
    ...     read_npz(Path(tmp) / "a.npz", "arr_0")
    array([0, 1, 2], dtype=uint8)
    """
    path = Path(path)
    with _open_npz(path) as archive:
        if key not in archive.files:
            raise DataFileError(f"{path}: no array named {key!r}; the archive holds {list(archive.files)}")
        try:
            return archive[key]
        except ValueError as exc:
            raise DataFileError(f"{path}: array {key!r} cannot be loaded without unpickling ({exc})") from exc
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise DataFileError(f"{path}: array {key!r} is corrupt ({exc})") from exc


__all__ = [
    "GZIP_MAGIC",
    "GZIP_MTIME",
    "IDX_DIM_SIZE",
    "IDX_DTYPES",
    "IDX_MAGIC_SIZE",
    "NPY_MAGIC",
    "ZIP_MAGIC",
    "idx_bytes",
    "npz_keys",
    "parse_idx",
    "read_idx",
    "read_npz",
    "write_idx",
]
