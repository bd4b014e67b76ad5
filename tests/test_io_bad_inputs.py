"""read_volume on bad inputs: a specific MedSRError with a one-line message, inputs untouched."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import shared_path

from MedSRLib.errors import DicomSeriesError, GeometryError, InputFileError, MedSRError, UnsupportedImageError
from MedSRLib.io import list_dicom_series, read_volume


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


def test_4d_nifti_is_unsupported_and_untouched():
    path = shared_path("extras", "nibabel", "example4d.nii.gz")
    before = digest(path)
    with pytest.raises(UnsupportedImageError) as err:
        read_volume(path)
    assert "128x96x24x2" in one_line(err) and "one time point" in one_line(err)
    assert digest(path) == before


def test_sheared_affine_that_itk_refuses_is_a_geometry_error():
    with pytest.raises(GeometryError) as err:
        read_volume(shared_path("extras", "dipy", "S0_10slices.nii.gz"))
    assert "sheared" in one_line(err) and "resample" in one_line(err)


def test_sheared_sform_with_a_qform_warns_and_uses_the_qform():
    with pytest.warns(RuntimeWarning, match="qform"):
        volume = read_volume(shared_path("extras", "niivue", "shear.nii.gz"))
    assert volume.metadata["nifti_sform_ignored"] is True
    assert volume.metadata["rescale"] == {"slope": pytest.approx(7.1098, rel=1e-5), "intercept": -1024.0}
    assert volume.metadata["original_dtype"] == "uint8" and volume.array.dtype == np.float32
    assert float(volume.array.min()) == pytest.approx(-1024.0)


def test_missing_file_and_folder():
    with pytest.raises(InputFileError) as err:
        read_volume("/nonexistent/scan.nii.gz")
    assert "not found" in one_line(err)
    with pytest.raises(InputFileError):
        list_dicom_series("/nonexistent/folder")


@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated_nifti_gz_and_nii_are_refused(tmp_path, keep):
    source = shared_path("totalseg-ct", "example_ct_sm.nii.gz")
    data = source.read_bytes()
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputFileError) as err:
        read_volume(truncated)  # ITK alone would zero-fill silently
    assert "truncated" in one_line(err)
    raw = gzip.decompress(data)
    plain = tmp_path / "cut.nii"
    plain.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(InputFileError, match="truncated"):
        read_volume(plain)
    complete = tmp_path / "whole.nii"
    complete.write_bytes(raw)
    assert read_volume(complete).shape == (30, 101, 122)


def test_truncated_nrrd_and_mha(tmp_path):
    image = sitk.GetImageFromArray(np.arange(20 * 30 * 40, dtype=np.int16).reshape(20, 30, 40))
    for name in ("v.nrrd", "v.mha"):
        sitk.WriteImage(image, str(tmp_path / name))
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) * 2 // 3])
        with pytest.raises(InputFileError) as err:
            read_volume(tmp_path / name)
        one_line(err)


def test_truncated_file_inside_a_dicom_series(tmp_path):
    source = shared_path("mr-volumes", "vs-seg_VS-SEG-001_t1_3slices")
    for path in sorted(source.iterdir()):
        shutil.copyfile(path, tmp_path / path.name)
    victim = sorted(tmp_path.iterdir())[1]
    victim.write_bytes(victim.read_bytes()[:-20000])
    with pytest.raises(InputFileError) as err:
        read_volume(tmp_path)
    assert "complete" in one_line(err)


@pytest.mark.parametrize("name, content", [("junk.nii", b"\0" * 400), ("notes.txt", b"hello"), ("x.nrrd", b"NRRD0004\nbad")])
def test_unreadable_files(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputFileError) as err:
        read_volume(path)
    one_line(err)


def test_empty_folder_and_folder_without_dicom(tmp_path):
    with pytest.raises(DicomSeriesError) as err:
        read_volume(tmp_path)
    assert "no DICOM" in one_line(err)
    (tmp_path / "readme.txt").write_text("not an image")
    shutil.copyfile(shared_path("totalseg-ct", "example_ct_sm.nii.gz"), tmp_path / "ct.nii.gz")
    with pytest.raises(DicomSeriesError, match="no DICOM"):
        read_volume(tmp_path)
    assert isinstance(DicomSeriesError("x"), InputFileError)  # callers may catch either


def test_rgb_vector_and_complex_images_are_unsupported(tmp_path):
    with pytest.raises(UnsupportedImageError, match="3 components"):
        read_volume(shared_path("covid-ct", "Images-processed", "CT_COVID", "2020.03.01.20029769-p21-73_1%2.png"))
    vector = sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.float32), isVector=True)
    sitk.WriteImage(vector, str(tmp_path / "vec.nrrd"))
    with pytest.raises(UnsupportedImageError, match="components"):
        read_volume(tmp_path / "vec.nrrd")
    complex_image = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.complex64))
    sitk.WriteImage(complex_image, str(tmp_path / "c.nii"))
    with pytest.raises(UnsupportedImageError, match="complex"):
        read_volume(tmp_path / "c.nii")


def test_trailing_singleton_fourth_dimension_is_squeezed_and_2d_is_one_slice(tmp_path):
    array = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.5, 0.7, 2.0))
    image.SetOrigin((1.0, 2.0, 3.0))
    sitk.WriteImage(sitk.JoinSeries(image), str(tmp_path / "v4.nrrd"))  # NRRD keeps the 4th axis of size 1
    volume = read_volume(tmp_path / "v4.nrrd")
    np.testing.assert_array_equal(volume.array, array)
    np.testing.assert_allclose(volume.spacing, (0.5, 0.7, 2.0), rtol=1e-6)
    np.testing.assert_allclose(volume.origin, (1.0, 2.0, 3.0), atol=1e-5)
    assert volume.metadata["squeezed_4d"] is True
    png = shared_path("covid-ct", "Images-processed", "CT_COVID", "2020.03.13.20035212-p23-158.png")
    flat = read_volume(png)
    assert flat.shape == (1, 305, 498) and flat.metadata["image_2d"] is True and flat.array.dtype == np.uint8


def test_bad_arguments():
    path = shared_path("totalseg-ct", "example_ct_sm.nii.gz")
    with pytest.raises(InputFileError, match="DICOM input only"):
        read_volume(path, series_uid="1.2.3")
    with pytest.raises(ValueError, match="modality"):
        read_volume(path, modality="PET")
    single = sorted(shared_path("mr-volumes", "vs-seg_VS-SEG-001_t1_3slices").iterdir())[0]
    with pytest.raises(DicomSeriesError, match="belongs to series"):
        read_volume(single, series_uid="1.2.3")
    assert issubclass(UnsupportedImageError, MedSRError) and issubclass(GeometryError, MedSRError)


def test_duplicate_slice_positions_and_missing_slices(tmp_path):
    files = sorted(shared_path("mr-volumes", "dcm_qa_decubitus_HFS_t1_fl2d_sag").iterdir())
    twice = tmp_path / "twice"
    twice.mkdir()
    for i, path in enumerate(files[:3] + files[1:2]):  # one slice stored twice (as echoes or phases would be)
        (twice / f"{i}.dcm").symlink_to(path)
    with pytest.raises(DicomSeriesError, match="same slice position"):
        read_volume(twice)
    gap = tmp_path / "gap"
    gap.mkdir()
    for path in files[:5] + files[6:10]:  # slice 5 missing
        (gap / path.name).symlink_to(path)
    with pytest.raises(DicomSeriesError, match="not evenly spaced") as err:  # issue 15 item 3: refused, not misplaced
        read_volume(gap)
    assert files[4].name in str(err.value) and files[6].name in str(err.value)
