"""Hostile ``ppl-audit ood`` folders: each is one InvalidInputError line, nothing is allocated or unpickled."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest

from ppl_audit.data.folder import MAX_PICTURE_PIXELS, load_image_folder
from ppl_audit.errors import PplAuditError


def npy_header(shape, dtype="<f8") -> bytes:
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height grey pixels, with one tiny (bomb-like) IDAT."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def one_line_error(folder):
    with pytest.raises(PplAuditError) as info:
        load_image_folder(folder)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    return str(info.value)


def test_zero_byte_npy(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"")
    assert "a.npy: not a readable numpy file" in one_line_error(tmp_path)


def test_truncated_npz(tmp_path):
    buffer = io.BytesIO()
    np.savez(buffer, a=np.zeros((3, 28, 28)))
    (tmp_path / "a.npz").write_bytes(buffer.getvalue()[:200])
    assert "a.npz: not a readable numpy file" in one_line_error(tmp_path)


def test_npy_header_claiming_71_tib_is_refused_before_allocating(tmp_path):
    (tmp_path / "a.npy").write_bytes(npy_header((10**7, 28, 28, 10**4)) + b"\0" * 64)
    assert "627200000000000 bytes of data, more than the 4294967296 read" in one_line_error(tmp_path)


def test_npy_header_claiming_more_than_the_file_holds_is_truncated(tmp_path):
    (tmp_path / "a.npy").write_bytes(npy_header((100, 28, 28)) + b"\0" * 64)
    assert "only 64 follow: the file is truncated" in one_line_error(tmp_path)


def test_object_arrays_are_never_unpickled(tmp_path):
    np.save(tmp_path / "a.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    assert "Python objects" in one_line_error(tmp_path)


def test_upper_case_extensions_are_read(tmp_path):
    np.save(tmp_path / "tmp.npy", np.zeros((2, 28, 28), np.uint8))
    (tmp_path / "tmp.npy").rename(tmp_path / "A.NPY")
    np.savez(tmp_path / "b.npz", x=np.ones((1, 28, 28), np.float32))
    (tmp_path / "b.npz").rename(tmp_path / "B.NPZ")
    images, names = load_image_folder(tmp_path)
    assert names == ["A.NPY[0]", "A.NPY[1]", "B.NPZ:x[0]"] and images.shape == (3, 1, 28, 28)
    assert float(images[2].min()) == 1.0


def test_png_decompression_bomb_is_refused_from_its_header(tmp_path):
    (tmp_path / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    message = one_line_error(tmp_path)
    assert "bomb.png" in message and ("larger than the" in message or "not a readable image" in message)


def test_a_picture_just_above_the_pixel_cap_is_refused_by_size(tmp_path):
    (tmp_path / "big.png").write_bytes(png_header_only(4097, 4096))
    assert f"larger than the {MAX_PICTURE_PIXELS} pixels read" in one_line_error(tmp_path)
