"""The multi-threaded gzip behind .nii.gz outputs: one standard member that every reader takes, and a
read-back that catches a short or altered file."""

from __future__ import annotations

import gzip
import os
import zlib

import nibabel as nib
import numpy as np
import pytest

from MedSRLib.errors import OutputPathError
from MedSRLib.io import compress, read_volume, write_volume
from MedSRLib.io.compress import check_gzip_file, gzip_file
from MedSRLib.volume import Volume


@pytest.mark.parametrize("size", [0, 1, 1000, 3 * 4096 + 17])
@pytest.mark.parametrize("threads", [1, 3])
def test_output_is_one_gzip_member_with_the_input_bytes(tmp_path, size, threads):
    data = np.random.default_rng(size).integers(0, 40, size, dtype=np.uint8).tobytes()
    src, dst = tmp_path / "in.bin", tmp_path / "out.gz"
    src.write_bytes(data)
    result = gzip_file(src, dst, level=1, threads=threads, chunk_bytes=4096)
    blob = dst.read_bytes()
    inflater = zlib.decompressobj(31)  # gzip wrapper: checks the CRC-32 and length itself
    assert inflater.decompress(blob) == data
    assert inflater.eof and inflater.unused_data == b""  # one member: nothing after its trailer
    assert gzip.decompress(blob) == data
    assert (result.compressed, result.size, result.crc) == (len(blob), size, zlib.crc32(data))


def test_same_bytes_whatever_the_thread_count(tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(np.random.default_rng(1).integers(0, 9, 50_000, dtype=np.uint8).tobytes())
    gzip_file(src, tmp_path / "a.gz", threads=1, chunk_bytes=8192)
    gzip_file(src, tmp_path / "b.gz", threads=4, chunk_bytes=8192)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


def test_check_catches_a_truncated_or_altered_file(tmp_path):
    src, dst = tmp_path / "in.bin", tmp_path / "out.gz"
    src.write_bytes(bytes(range(256)) * 100)
    result = gzip_file(src, dst)
    check_gzip_file(dst, result)
    blob = dst.read_bytes()
    dst.write_bytes(blob[:-3])
    with pytest.raises(OSError, match="bytes where"):
        check_gzip_file(dst, result)
    dst.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    with pytest.raises(OSError, match="trailer"):
        check_gzip_file(dst, result)


def test_bad_level_is_refused_by_name(tmp_path):
    (tmp_path / "in.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="level"):
        gzip_file(tmp_path / "in.bin", tmp_path / "o.gz", level=12)


def test_written_nii_gz_reads_back_exactly_in_itk_and_nibabel(tmp_path):
    array = np.random.default_rng(3).integers(-1000, 3000, size=(9, 70, 61)).astype(np.int16)
    volume = Volume(array=array, spacing=(0.6, 0.7, 3.0), origin=(4.0, -5.0, 6.0), direction=np.eye(3))
    path = write_volume(volume, tmp_path / "out.nii.gz", threads=2)
    back = read_volume(path)
    assert back.array.dtype == np.int16 and np.array_equal(back.array, array)
    assert np.allclose(back.spacing, volume.spacing) and np.allclose(back.origin, volume.origin)
    assert np.array_equal(np.asarray(nib.load(path).dataobj).T, array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]  # the uncompressed temporary is gone


def test_a_short_compressed_file_is_refused_and_nothing_is_left(tmp_path, monkeypatch):
    volume = Volume(array=np.ones((4, 20, 20), np.float32), spacing=(1, 1, 1), origin=(0, 0, 0), direction=np.eye(3))
    real = compress.gzip_file

    def short(source, target, **kwargs):
        result = real(source, target, **kwargs)
        with open(target, "r+b") as handle:  # what a full disk can leave without an error
            handle.truncate(os.path.getsize(target) - 5)
        return result

    monkeypatch.setattr(compress, "gzip_file", short)
    with pytest.raises(OutputPathError, match="could not write"):
        write_volume(volume, tmp_path / "out.nii.gz")
    assert list(tmp_path.iterdir()) == []
