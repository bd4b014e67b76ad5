"""Issue 15 items 2, 3, 4, 8, 10, 13, 14 (reading side): wrong placements and unknown content are refused by name.

Real files where the failure came from a real file (pydicom's test files ship in the pydicom wheel;
../shared/data for the real DICOM series), small generated files otherwise.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from MedSRLib import errors
from MedSRLib.errors import DicomSeriesError, GeometryError, InputFileError
from MedSRLib.geometry import ijk_to_ras_matrix
from MedSRLib.io import read_volume, write_volume

from conftest import shared_path

nib = pytest.importorskip("nibabel", reason="nibabel (test extra) checks the NIfTI reading against a second reader")


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# ---------------------------------------------------------------------------------------------- item 2
def _mha_with_direction(path: Path, matrix: str) -> Path:
    data = np.arange(4 * 5 * 6, dtype=np.int16).tobytes()
    header = (f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
              f"TransformMatrix = {matrix}\nOffset = 0 0 0\nElementSpacing = 1 1 2\nDimSize = 6 5 4\n"
              "ElementType = MET_SHORT\nElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + data)
    return path


@pytest.mark.parametrize("matrix", ["1 0 0 0.5 1 0 0 0 1", "2 0 0 0 1 0 0 0 1"], ids=["sheared", "scaled"])
def test_sheared_or_scaled_direction_in_mha_or_nrrd_is_refused(tmp_path, matrix):
    source = _mha_with_direction(tmp_path / "oblique.mha", matrix)
    with pytest.raises(GeometryError, match="sheared or scaled direction") as err:
        read_volume(source)
    assert "oblique.mha" in one_line(err)
    nrrd = tmp_path / "oblique.nrrd"
    (tmp_path / "raw.raw").write_bytes(np.zeros(8, np.int16).tobytes())
    nrrd.write_text("NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: 2 2 2\n"
                    "space directions: (1,0,0) (0.5,1,0) (0,0,1)\nencoding: raw\nendian: little\n"
                    "space origin: (0,0,0)\ndata file: raw.raw\n")
    with pytest.raises(GeometryError, match="sheared or scaled direction"):
        read_volume(nrrd)


# ---------------------------------------------------------------------------------------------- item 3
def test_a_far_slice_in_a_real_pydicom_series_is_refused_with_its_position():
    folder = Path(get_testdata_file("77654033/CT2/17106")).parent  # pydicom's dicomdirtests/77654033/CT2
    with pytest.raises(DicomSeriesError, match="not evenly spaced") as err:
        read_volume(folder)
    text = one_line(err)
    assert "17106 at -99.48 mm" in text and "103.02" in text


def test_one_missing_slice_of_a_real_series_is_refused(tmp_path):
    files = sorted(shared_path("mr-volumes", "dcm_qa_decubitus_HFS_t1_fl2d_sag").iterdir())
    for path in files[:17] + files[18:]:
        (tmp_path / path.name).symlink_to(path)
    with pytest.raises(DicomSeriesError, match="not evenly spaced") as err:
        read_volume(tmp_path)
    assert files[16].name in one_line(err) and files[18].name in str(err.value)


# ---------------------------------------------------------------------------------------------- item 4
def _nifti(path: Path, *, pixdim=None, qform=None, sform=None, sform_code: int = 1) -> Path:
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(6, 5, 4)
    img = nib.Nifti1Image(data, None)
    if sform is not None:
        img.set_sform(sform, code=sform_code)
    if qform is not None:
        img.set_qform(qform, code=1)
    nib.save(img, str(path))
    if pixdim is not None:  # nibabel refuses to write these: patch the header bytes (pixdim[1..3] at byte 80)
        raw = bytearray(path.read_bytes())
        raw[80:92] = np.asarray(pixdim, dtype="<f4").tobytes()
        path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("pixdim", [(1.0, -2.0, 3.0), (1.0, float("nan"), 3.0), (0.0, 2.0, 3.0)])
def test_invalid_nifti_pixdim_is_refused(tmp_path, pixdim):
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    path = _nifti(tmp_path / "bad.nii", qform=affine, pixdim=pixdim)
    with pytest.raises(GeometryError, match="pixdim") as err:
        read_volume(path)
    assert "bad.nii" in one_line(err)


@pytest.mark.parametrize("sform_code", [1, 2], ids=["scanner-sform-ITK-uses-it", "aligned-sform-ITK-uses-qform"])
def test_flip_only_sform_qform_disagreement_is_refused_not_called_sheared(tmp_path, sform_code):
    qform = np.diag([1.0, 2.0, 3.0, 1.0])
    sform = np.diag([-1.0, 2.0, 3.0, 1.0])
    sform[0, 3] = 3.0
    path = _nifti(tmp_path / "flip.nii.gz", qform=qform, sform=sform, sform_code=sform_code)
    header = nib.load(str(path)).header
    assert header["sform_code"] > 0 and header["qform_code"] > 0
    try:
        with __import__("warnings").catch_warnings():
            __import__("warnings").simplefilter("error")  # no "sheared (gantry tilt?)" warning either
            volume = read_volume(path)
    except GeometryError as exc:
        assert "sheared" not in str(exc) and "disagree" in str(exc) and "axis i flipped" in str(exc)
    else:  # ITK chose the sform (nibabel's choice): the geometry must then be nibabel's
        np.testing.assert_allclose(ijk_to_ras_matrix(volume), nib.load(str(path)).affine, atol=1e-4)


def test_accepted_nifti_geometry_matches_nibabel(tmp_path):
    affine = np.array([[0, 0, 2.5, -10], [-0.8, 0, 0, 20], [0, 0.9, 0, 5], [0, 0, 0, 1.0]])
    path = _nifti(tmp_path / "ok.nii.gz", qform=affine, sform=affine)
    volume = read_volume(path)
    np.testing.assert_allclose(ijk_to_ras_matrix(volume), nib.load(str(path)).affine, atol=1e-4)
    real = shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz")
    np.testing.assert_allclose(ijk_to_ras_matrix(read_volume(real)), nib.load(str(real)).affine, atol=1e-3)


# ---------------------------------------------------------------------------------------------- item 8
@pytest.mark.parametrize("name, modality", [("liver_1frame.dcm", "SEG"), ("rtdose_1frame.dcm", "RTDOSE"),
                                            ("image_dfl.dcm", "OT"), ("examples_palette.dcm", "US")])
def test_non_ct_mr_dicom_is_refused_unless_modality_says(tmp_path, name, modality):
    copy = tmp_path / name
    shutil.copy(get_testdata_file(name), copy)
    with pytest.raises(errors.ModalityError, match=f"Modality is {modality}") as err:
        read_volume(copy)
    assert "--modality" in one_line(err)
    if modality == "SEG":
        volume = read_volume(copy, modality="MR")  # said what to treat it as: read
        assert volume.modality == "MR" and volume.metadata["treated_as"] == "MR"


def test_nifti_label_map_is_refused_unless_modality_says(tmp_path):
    img = nib.Nifti1Image(np.zeros((4, 5, 6), np.uint8), np.eye(4))
    img.header.set_intent("label")
    nib.save(img, str(tmp_path / "labels.nii.gz"))
    with pytest.raises(errors.ModalityError, match="label map"):
        read_volume(tmp_path / "labels.nii.gz")
    assert read_volume(tmp_path / "labels.nii.gz", modality="CT").modality == "CT"


def test_real_ct_and_mr_dicom_still_read():
    assert read_volume(get_testdata_file("CT_small.dcm")).modality == "CT"
    assert read_volume(get_testdata_file("MR_small.dcm")).modality == "MR"


# ---------------------------------------------------------------------------------------------- item 10
@pytest.mark.parametrize("encoding", ["gzip", "raw"])
def test_a_tiny_nrrd_claiming_gigabytes_is_refused_before_reading(tmp_path, encoding):
    import resource
    import time

    payload = gzip.compress(b"\0" * 4000) if encoding == "gzip" else b"\0" * 4000
    path = tmp_path / "huge.nrrd"
    path.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 20000 20000 4\nencoding: " + encoding.encode()
                     + b"\nendian: little\n\n" + payload)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(InputFileError, match="truncated") as err:
        read_volume(path)
    assert "20000x20000x4" in one_line(err)
    assert time.perf_counter() - start < 2.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing allocated


def test_a_volume_larger_than_memory_is_refused_with_both_numbers(tmp_path, monkeypatch):
    from MedSRLib import safety

    path = tmp_path / "v.nrrd"
    write_volume(__import__("MedSRLib.volume", fromlist=["Volume"]).Volume(
        array=np.zeros((8, 64, 64), np.int16), spacing=(1, 1, 1), origin=(0, 0, 0), direction=np.eye(3)), path)
    monkeypatch.setattr(safety, "available_memory_bytes", lambda: 10_000)
    with pytest.raises(errors.ResourceError, match="needs about .* GiB of memory but .* GiB is available") as err:
        read_volume(path)
    assert "v.nrrd" in one_line(err)


# ---------------------------------------------------------------------------------------------- 13, 14
def test_library_boundary_names_the_bad_value(tmp_path, monkeypatch):
    monkeypatch.chdir(shared_path("totalseg-ct", "example_ct_dicom"))  # a readable DICOM folder as cwd
    with pytest.raises(InputFileError, match="empty"):
        read_volume("")
    with pytest.raises(errors.OptionError, match="modality .* got 1"):
        read_volume(get_testdata_file("CT_small.dcm"), modality=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="input path"):
        read_volume(3)  # type: ignore[arg-type]


def test_complex_mha_is_not_called_rgb_only(tmp_path):
    image = sitk.GetImageFromArray((np.ones((2, 3, 4)) + 1j).astype(np.complex64))
    sitk.WriteImage(image, str(tmp_path / "c.mha"))
    from MedSRLib.errors import UnsupportedImageError

    with pytest.raises(UnsupportedImageError, match="complex") as err:
        read_volume(tmp_path / "c.mha")
    one_line(err)


def test_a_dicom_file_without_preamble_is_described_not_its_folder(tmp_path):
    copy = tmp_path / "ExplVR_LitEndNoMeta.dcm"  # pydicom's real file: no preamble, an RT plan
    shutil.copy(get_testdata_file("ExplVR_LitEndNoMeta.dcm"), copy)
    with pytest.raises(DicomSeriesError) as err:
        read_volume(copy)
    text = one_line(err)
    assert "no DICOM image files in" not in text and "ExplVR_LitEndNoMeta.dcm" in text
    assert "no DICOM preamble" in text and "RTPLAN" in text


def test_an_intact_named_dicom_file_is_read_alone_when_its_siblings_break_the_series():
    """pydicom's test folder holds MR_small.dcm beside copies of it in other transfer syntaxes."""
    with pytest.warns(RuntimeWarning, match="read MR_small.dcm alone"):
        volume = read_volume(get_testdata_file("MR_small.dcm"))
    assert volume.shape == (1, 64, 64) and volume.modality == "MR" and volume.metadata["read_alone"] is True


def test_a_nan_spacing_is_a_geometry_error_without_the_truncation_hint(tmp_path):
    path = _mha_with_direction(tmp_path / "nan.mha", "1 0 0 0 1 0 0 0 1")
    path.write_bytes(path.read_bytes().replace(b"ElementSpacing = 1 1 2", b"ElementSpacing = 1 nan 2"))
    with pytest.raises((GeometryError, InputFileError)) as err:
        read_volume(path)
    assert "truncated" not in one_line(err) and "spacing" in str(err.value).lower()


def test_garbage_files_get_one_line_without_their_bytes(tmp_path, capfd):
    rng = np.random.default_rng(7)
    junk = bytes(rng.integers(33, 127, 300, dtype=np.uint8))  # printable garbage: ITK quotes the first line
    for name in ("junk.nrrd", "junk.mha"):
        (tmp_path / name).write_bytes(junk)
        with pytest.raises(InputFileError) as err:
            read_volume(tmp_path / name)
        text = one_line(err)
        assert junk[:20].decode() not in text and junk[:8].decode() not in text
    assert capfd.readouterr().err == ""  # MetaIO's own multi-line prints are not shown


def test_a_sheared_volume_is_written_exactly_or_refused(tmp_path):
    sheared = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    from MedSRLib.volume import Volume

    volume = Volume(array=np.arange(60, dtype=np.int16).reshape(3, 4, 5), spacing=(1, 1, 2), origin=(1, 2, 3),
                    direction=sheared)
    with pytest.raises(GeometryError, match="NIfTI cannot hold") as err:
        write_volume(volume, tmp_path / "s.nii.gz")
    one_line(err)
    assert not (tmp_path / "s.nii.gz").exists()
    write_volume(volume, tmp_path / "s.mha")  # MetaImage holds it exactly
    image = sitk.ReadImage(str(tmp_path / "s.mha"))
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), sheared)
