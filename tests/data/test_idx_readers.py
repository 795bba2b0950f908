import gzip
import re
import struct

import numpy as np
import pytest

from ppl_audit.data import (
    DataFileError,
    DataNotFoundError,
    idx_bytes,
    npz_keys,
    parse_idx,
    read_idx,
    read_npz,
    write_idx,
)
from ppl_audit.errors import PplAuditError


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-128, 0, 127], dtype=np.int8),
        np.array([[-300, 2], [3, 32000]], dtype=np.int16),
        np.array([-(2**31), 2**31 - 1], dtype=np.int32),
        np.array([0.5, -1e30], dtype=np.float32),
        np.array([[np.pi]], dtype=np.float64),
    ],
    ids=["uint8-3d", "int8", "int16", "int32", "float32", "float64"],
)
def test_idx_round_trip(tmp_path, array, suffix):
    path = write_idx(tmp_path / f"a-idx{array.ndim}{suffix}", array)
    back = read_idx(path)
    assert back.dtype == array.dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable  # safe for torch.from_numpy


def test_idx_header_is_big_endian_mnist_style(tmp_path):
    raw = write_idx(tmp_path / "x-idx3-ubyte", np.zeros((2, 28, 28), np.uint8)).read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x03"  # the MNIST image magic number 2051
    assert struct.unpack(">3I", raw[4:16]) == (2, 28, 28)
    assert len(raw) == 16 + 2 * 28 * 28


def test_gzip_is_detected_from_content_not_name(tmp_path):
    array = np.arange(5, dtype=np.uint8)
    raw_named_gz = tmp_path / "raw.gz"
    raw_named_gz.write_bytes(idx_bytes(array))
    gz_named_raw = tmp_path / "compressed-idx1-ubyte"
    gz_named_raw.write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(raw_named_gz), array)
    np.testing.assert_array_equal(read_idx(gz_named_raw), array)


def test_write_idx_gz_is_reproducible(tmp_path):
    array = np.arange(100, dtype=np.uint8)
    a = write_idx(tmp_path / "a.gz", array).read_bytes()
    b = write_idx(tmp_path / "b.gz", array).read_bytes()
    assert a[4:8] == b"\x00\x00\x00\x00"  # mtime 0
    assert gzip.decompress(a) == gzip.decompress(b) == idx_bytes(array)


def _header(code=0x08, dims=(3,)):
    return struct.pack(">HBB", 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "shorter than the 4-byte magic number"),
        (b"\x00\x00", "shorter than the 4-byte magic number"),
        (b"\x01\x00\x08\x01" + b"\x00" * 8, "does not start with two zero bytes"),
        (b"<html>not data</html>", "does not start with two zero bytes"),
        (_header(code=0x0A) + b"abc", "unknown IDX data type code 0x0a"),
        (b"\x00\x00\x08\x00", "0 dimensions"),
        (b"\x00\x00\x08\x03" + b"\x00" * 6, "truncated IDX header: 3 dimension"),
        (_header(dims=(3,)) + b"ab", "truncated: the header declares shape (3,) of uint8 = 3 data bytes, but 2"),
        (_header(dims=(2, 2)) + b"abcde", "has trailing bytes"),
        (_header(code=0x0C, dims=(2,)) + b"\x00" * 7, "int32 = 8 data bytes, but 7"),
    ],
)
def test_malformed_idx_names_file_and_problem(tmp_path, content, message):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataFileError, match=re.escape(message)) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, PplAuditError) and isinstance(info.value, ValueError)


def test_truncated_gzip_names_file(tmp_path):
    full = write_idx(tmp_path / "full.gz", np.arange(1000, dtype=np.int32)).read_bytes()
    path = tmp_path / "cut-idx1-ubyte.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataFileError, match="corrupt or truncated gzip") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip_names_file(tmp_path):
    full = bytearray(write_idx(tmp_path / "full.gz", np.arange(1000, dtype=np.int32)).read_bytes())
    full[-8] ^= 0xFF  # break the CRC32 trailer
    path = tmp_path / "crc.gz"
    path.write_bytes(bytes(full))
    with pytest.raises(DataFileError, match=r"crc\.gz: corrupt or truncated gzip"):
        read_idx(path)


def test_gzip_of_a_truncated_idx_reports_the_payload(tmp_path):
    path = tmp_path / "short-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((10, 28, 28), np.uint8))[:-1]))
    with pytest.raises(DataFileError, match=r"truncated: .*\(10, 28, 28\) of uint8 = 7840 data bytes, but 7839"):
        read_idx(path)


def test_missing_idx_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist") as info:
        read_idx(tmp_path / "nope.gz")
    assert isinstance(info.value, FileNotFoundError)


def test_folder_is_not_an_idx_file(tmp_path):
    with pytest.raises(DataFileError, match="not a regular file"):
        read_idx(tmp_path)


def test_idx_bytes_rejects_what_idx_cannot_hold():
    with pytest.raises(DataFileError, match="cannot hold dtype"):
        idx_bytes(np.zeros(3, dtype=np.uint16))
    with pytest.raises(DataFileError, match="at least one dimension"):
        idx_bytes(np.uint8(3))


def test_parse_idx_known_answer():
    arr = parse_idx(bytes([0, 0, 0x0B, 2, 0, 0, 0, 1, 0, 0, 0, 2, 0x01, 0x00, 0xFF, 0xFF]))
    assert arr.dtype == np.int16 and arr.tolist() == [[256, -1]]


# --- npz -------------------------------------------------------------------


def test_read_npz(tmp_path):
    path = tmp_path / "a.npz"
    np.savez_compressed(path, images=np.ones((2, 28, 28), np.uint8), names=np.array(["a", "b"]))
    assert npz_keys(path) == ("images", "names")
    assert read_npz(path, "images").shape == (2, 28, 28)
    assert read_npz(path, "names").tolist() == ["a", "b"]


def test_npz_missing_key_lists_keys(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, np.zeros(3))
    with pytest.raises(DataFileError, match=r"no array named 'images'; the archive holds \['arr_0'\]"):
        read_npz(path, "images")


def test_npz_refuses_pickled_objects(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataFileError, match="without unpickling"):
        read_npz(path, "obj")


@pytest.mark.parametrize("content", [b"", b"not a zip at all", b"PK\x03\x04 truncated zip"])
def test_npz_not_an_archive(tmp_path, content):
    path = tmp_path / "junk.npz"
    path.write_bytes(content)
    with pytest.raises(DataFileError, match=r"junk\.npz: not (an|a readable) \.npz archive"):
        read_npz(path, "arr_0")


def test_truncated_npz(tmp_path):
    path = tmp_path / "cut.npz"
    np.savez_compressed(path, images=np.arange(10000, dtype=np.int32))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataFileError, match=r"cut\.npz"):
        read_npz(path, "images")


def test_single_npy_is_not_an_archive(tmp_path):
    path = tmp_path / "one.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.zeros(3))
    with pytest.raises(DataFileError, match="single .npy array"):
        read_npz(path, "arr_0")


def test_missing_npz(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        read_npz(tmp_path / "nope.npz", "arr_0")
