"""write_volume round trips (dtype and geometry kept), check_output_path refusals, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import shared_path

from MedSRLib.errors import OutputPathError, UnsupportedImageError
from MedSRLib.geometry import volume_from_sitk, volume_to_sitk
from MedSRLib.io import check_output_path, read_volume, write_volume
from MedSRLib.volume import Volume

ENDINGS = [".nii.gz", ".nii", ".nrrd", ".mha"]


def crop(volume: Volume, size: int = 40) -> Volume:
    image = volume_to_sitk(volume)
    start = [max(0, (n - size) // 2) for n in image.GetSize()]
    return volume_from_sitk(image[start[0]:start[0] + size, start[1]:start[1] + size, start[2]:start[2] + size])


def assert_same(a: Volume, b: Volume, *, atol: float = 1e-4) -> None:
    assert b.array.dtype == a.array.dtype
    np.testing.assert_array_equal(b.array, a.array)
    np.testing.assert_allclose(b.spacing, a.spacing, rtol=1e-6)
    np.testing.assert_allclose(b.origin, a.origin, atol=atol)
    np.testing.assert_allclose(b.direction, a.direction, atol=atol)


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize(
    "parts",
    [("totalseg-ct", "example_ct_dicom"), ("mr-volumes", "dcm_qa_decubitus_HFS_t1_fl2d_sag"),
     ("mr-volumes", "dipy", "aniso_vox.nii.gz")],
    ids=["ct-int16", "sagittal-uint16", "oblique-int16"],
)
def test_round_trip_keeps_voxels_dtype_and_geometry(tmp_path, parts, ending):
    volume = crop(read_volume(shared_path(*parts)))
    written = write_volume(volume, tmp_path / f"out{ending}", inputs=[shared_path(*parts)])
    assert written == (tmp_path / f"out{ending}").resolve() and written.is_file()
    assert_same(volume, read_volume(written))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"out{ending}"]  # no temporary left behind


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int32, np.float32, np.float64])
def test_dtypes_and_oblique_geometry_survive_nrrd_and_nifti(tmp_path, dtype):
    rng = np.random.default_rng(3)
    angle = np.deg2rad(17.0)
    direction = np.array([[np.cos(angle), 0, np.sin(angle)], [0, -1, 0], [np.sin(angle), 0, -np.cos(angle)]])
    array = (rng.random((3, 5, 7)) * 100).astype(dtype)
    volume = Volume(array=array, spacing=(0.3, 0.45, 2.5), origin=(-12.25, 40.5, 3.125), direction=direction)
    for ending in (".nrrd", ".nii.gz"):
        assert_same(volume, read_volume(write_volume(volume, tmp_path / f"v{ending}")))


def test_bool_and_float16_are_stored_as_uint8_and_float32(tmp_path):
    base = dict(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=np.eye(3))
    mask = Volume(array=np.eye(4, dtype=bool)[None], **base)
    assert read_volume(write_volume(mask, tmp_path / "m.nrrd")).array.dtype == np.uint8
    half = Volume(array=np.full((1, 2, 2), 1.5, np.float16), **base)
    back = read_volume(write_volume(half, tmp_path / "h.nii"))
    assert back.array.dtype == np.float32 and float(back.array[0, 0, 0]) == 1.5
    with pytest.raises(UnsupportedImageError, match="complex"):
        write_volume(Volume(array=np.zeros((1, 2, 2), np.complex64), **base), tmp_path / "c.nrrd")
    assert not (tmp_path / "c.nrrd").exists()


@pytest.mark.parametrize("name", ["out.png", "out.dcm", "out.nhdr", "out.mhd", "out", ".nii.gz", "out.nii.gz.bak"])
def test_unsupported_output_endings(tmp_path, name):
    with pytest.raises(OutputPathError) as err:
        check_output_path(tmp_path / name)
    assert ".nii.gz" in str(err.value) and "\n" not in str(err.value)


def test_output_folder_must_exist_and_be_writable(tmp_path):
    with pytest.raises(OutputPathError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "out.nii.gz")
    (tmp_path / "dir.nii.gz").mkdir()
    with pytest.raises(OutputPathError, match="existing folder"):
        check_output_path(tmp_path / "dir.nii.gz")
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputPathError, match="not writable"):
            check_output_path(locked / "out.nrrd")
    assert check_output_path(tmp_path / "ok.NRRD") == (tmp_path / "ok.NRRD").resolve()


@pytest.mark.parametrize("name", ["UP.NII.GZ", "UP.NRRD", "UP.MHA", "UP.NII"])
def test_upper_case_endings_write_and_read_back(tmp_path, name):
    volume = Volume(array=np.arange(24, dtype=np.int16).reshape(2, 3, 4), spacing=(1, 2, 3), origin=(0, 0, 0),
                    direction=np.eye(3))
    assert_same(volume, read_volume(write_volume(volume, tmp_path / name)))
    with pytest.raises(OutputPathError, match="mixed-case"):
        check_output_path(tmp_path / "mixed.Nii.gz")  # the NIfTI library refuses to read such names


def test_output_equal_to_an_input_is_refused_and_nothing_is_written(tmp_path):
    source = shared_path("totalseg-ct", "example_ct_sm.nii.gz")
    copy = tmp_path / "in.nii.gz"
    copy.write_bytes(source.read_bytes())
    before = copy.read_bytes()
    volume = read_volume(copy)
    link = tmp_path / "link.nii.gz"
    link.symlink_to(copy)
    relative = Path(os.path.relpath(copy))
    for target in (copy, link, relative, tmp_path / "." / "in.nii.gz"):
        with pytest.raises(OutputPathError, match="input"):
            write_volume(volume.with_array(volume.array * 0), target, inputs=[copy])
    with pytest.raises(OutputPathError):
        write_volume(volume, copy, inputs=[link])  # the input given through a symlink
    assert copy.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz", "link.nii.gz"]


def test_output_inside_an_input_dicom_folder_is_refused(tmp_path):
    folder = shared_path("totalseg-ct", "example_ct_dicom")
    with pytest.raises(OutputPathError, match="inside the input folder"):
        check_output_path(folder / "sr.nii.gz", inputs=[folder])
    assert check_output_path(tmp_path / "sr.nii.gz", inputs=[folder]) == (tmp_path / "sr.nii.gz").resolve()


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    volume = Volume(array=np.ones((2, 3, 4), np.int16), spacing=(1, 1, 1), origin=(0, 0, 0), direction=np.eye(3))
    target = tmp_path / "out.nrrd"
    target.write_bytes(b"previous result")

    def failing_write(image, name, *args, **kwargs):
        Path(name).write_bytes(b"half a file")  # a partial temporary file, then the failure
        raise RuntimeError("ITK ERROR: NrrdImageIO(0x1): No space left on device")

    monkeypatch.setattr(sitk, "WriteImage", failing_write)
    with pytest.raises(OutputPathError, match="No space left"):
        write_volume(volume, target, overwrite=True)
    assert target.read_bytes() == b"previous result"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nrrd"]


def test_an_existing_non_input_file_is_replaced(tmp_path):
    volume = Volume(array=np.full((2, 3, 4), 7, np.int16), spacing=(1, 1, 1), origin=(0, 0, 0), direction=np.eye(3))
    target = tmp_path / "out.mha"
    target.write_bytes(b"old")
    write_volume(volume, target, overwrite=True)
    np.testing.assert_array_equal(read_volume(target).array, volume.array)
