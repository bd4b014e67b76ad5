"""Derived DICOM series (MedSRLib.io.dicom_writer): read back with SimpleITK and pydicom, geometry and
voxels equal to the NIfTI output, tags a PACS needs, and ``dciodvfy`` (dicom3tools) without errors.

The CT cases run on the shipped example (``medsr example ct-abdomen``: real JPEG 2000 CT, anonymised
with empty UIDs), so they need no ../shared; the MR DICOM with full UIDs and the sagittal NIfTI need
../shared/data. The model is bicubic (no weights, fast): the writer does not depend on the network.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from conftest import shared_path
from MedSRLib.cli import main
from MedSRLib.errors import OutputPathError, UnsupportedImageError
from MedSRLib.examples import example_path
from MedSRLib.io import read_volume, write_volume
from MedSRLib.io.dicom import find_series
from MedSRLib.io.dicom_writer import (
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    DerivedSeriesDescription,
    write_dicom_series,
)
from MedSRLib.pipeline import super_resolve
from MedSRLib.volume import Volume

DCIODVFY = shutil.which("dciodvfy")


@pytest.fixture(scope="module")
def ct_run(tmp_path_factory):
    """The CT example super-resolved x2 (bicubic), written as NIfTI and as a DICOM series."""
    folder = tmp_path_factory.mktemp("ct")
    source = example_path("ct-abdomen")
    volume = read_volume(source)
    result = super_resolve(volume, model="bicubic", scale=2)
    nifti = write_volume(result, folder / "ct_x2.nii.gz")
    dicom = write_dicom_series(result, folder / "ct_x2_dicom", inputs=[source])
    return source, result, nifti, dicom


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm"))


def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    ids = reader.GetGDCMSeriesIDs(str(folder))
    assert len(ids) == 1
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    return reader.Execute()


def _dciodvfy_errors(path: Path) -> list[str]:
    proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


def test_ct_series_reads_back_equal_to_nifti_output(ct_run):
    """SimpleITK (GDCM) reads the series back with the NIfTI output's voxels (HU, int16) and geometry."""
    _, result, nifti, dicom = ct_run
    expected = sitk.ReadImage(str(nifti))
    image = _sitk_series(dicom)
    assert image.GetSize() == expected.GetSize() == (1024, 1024, 12)
    np.testing.assert_allclose(image.GetSpacing(), expected.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), expected.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(image.GetDirection(), expected.GetDirection(), atol=1e-6)
    got = sitk.GetArrayFromImage(image)
    np.testing.assert_array_equal(got, sitk.GetArrayFromImage(expected))
    assert got.min() < -1000 and got.max() > 1000  # HU range survived (air and bone)
    # MedSRLib's own reader agrees too
    again = read_volume(dicom)
    np.testing.assert_array_equal(again.array, result.array)
    assert again.modality == "CT"


def test_ct_series_tags_for_a_pacs(ct_run):
    source, result, _, dicom = ct_run
    files = _files(dicom)
    assert len(files) == 12
    src = [pydicom.dcmread(p, stop_before_pixels=True) for p in find_series(source).files]
    out = [pydicom.dcmread(p) for p in files]
    sop_uids = {str(ds.SOPInstanceUID) for ds in out}
    assert len(sop_uids) == 12
    series_uids = {str(ds.SeriesInstanceUID) for ds in out}
    assert len(series_uids) == 1 and series_uids != {""}
    study_uids = {str(ds.StudyInstanceUID) for ds in out}
    assert len(study_uids) == 1 and "" not in study_uids  # source study UID is empty: a new one is made
    for ds in out:
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == CT_IMAGE_STORAGE and ds.Modality == "CT"
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert "MedSR" in ds.SeriesDescription and "bicubic" in ds.SeriesDescription and "x2" in ds.SeriesDescription
        assert "x2" in ds.DerivationDescription and "bicubic" in ds.DerivationDescription
        assert "(axial images)" in ds.DerivationDescription
        assert (ds.Rows, ds.Columns) == (1024, 1024)
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.48828125, 0.48828125])
        assert float(ds.SpacingBetweenSlices) == pytest.approx(2.0)
        assert float(ds.SliceThickness) == pytest.approx(float(src[0].SliceThickness))  # in-plane SR keeps it
        assert ds.PatientName == src[0].PatientName and ds.StudyDate == src[0].StudyDate
    # one source image per output slice, by the file meta UID (the data sets' SOPInstanceUIDs are empty)
    for ds, s in zip(sorted(out, key=lambda d: float(d.ImagePositionPatient[2])), src):
        ref = ds.SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == s.file_meta.MediaStorageSOPInstanceUID
        assert ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
        assert float(ds.ImagePositionPatient[2]) == pytest.approx(float(s.ImagePositionPatient[2]))
    # HU survive the stored values and rescale, slice by slice
    first = sorted(out, key=lambda d: int(d.InstanceNumber))[0]
    hu = first.pixel_array.astype(np.float64) * float(first.RescaleSlope) + float(first.RescaleIntercept)
    np.testing.assert_array_equal(hu, result.array[0])


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy not installed (Debian package dicom3tools; .ci/run installs it)")
def test_ct_series_passes_dciodvfy(ct_run):
    files = _files(ct_run[3])
    for path in (files[0], files[-1]):
        assert _dciodvfy_errors(path) == [], path


def test_mr_dicom_keeps_patient_study_and_references_source(tmp_path):
    """Real MR DICOM with full UIDs: Patient/Study/FrameOfReference kept, ReferencedSeriesSequence names
    the source series and all its instances, each slice's SourceImageSequence its own source slice."""
    series = shared_path("mr-volumes", "dcm_qa_decubitus_HFS_t1_fl2d_sag")
    volume = read_volume(series)
    result = super_resolve(volume, model="bicubic", scale=2)
    folder = write_dicom_series(result, tmp_path / "t1_x2", inputs=[series])
    nifti = write_volume(result, tmp_path / "t1_x2.nii.gz")
    src = [pydicom.dcmread(p, stop_before_pixels=True) for p in find_series(series).files]
    out = sorted((pydicom.dcmread(p) for p in _files(folder)), key=lambda d: int(d.InstanceNumber))
    assert len(out) == len(src) == 35
    for key in ("PatientName", "PatientID", "StudyInstanceUID", "FrameOfReferenceUID", "StudyDate", "ScanningSequence"):
        assert out[0][key].value == src[0][key].value, key
    assert out[0].SeriesInstanceUID != src[0].SeriesInstanceUID
    assert {d.SOPInstanceUID for d in out}.isdisjoint({d.SOPInstanceUID for d in src})
    assert out[0].SOPClassUID == MR_IMAGE_STORAGE and "RescaleSlope" not in out[0]  # uint16 stored as is
    assert int(out[0].SeriesNumber) == int(src[0].SeriesNumber) + 1000
    ref_series = out[0].ReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == src[0].SeriesInstanceUID
    assert [r.ReferencedSOPInstanceUID for r in ref_series.ReferencedInstanceSequence] == [s.SOPInstanceUID for s in src]
    for o, s in zip(out, src):
        assert o.SourceImageSequence[0].ReferencedSOPInstanceUID == s.SOPInstanceUID
        np.testing.assert_allclose([float(v) for v in o.ImageOrientationPatient],
                                   [float(v) for v in s.ImageOrientationPatient], atol=1e-6)
    image = _sitk_series(folder)
    expected = sitk.ReadImage(str(nifti))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(expected))
    np.testing.assert_allclose(image.GetOrigin(), expected.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), expected.GetDirection(), atol=1e-6)
    if DCIODVFY is not None:
        assert _dciodvfy_errors(_files(folder)[0]) == []


def _same_voxels_in_space(dicom_folder: Path, nifti: Path) -> None:
    """Every voxel of the NIfTI output sits at the same LPS point with the same value in the series
    (nearest-neighbour resampling of the series onto the NIfTI grid is exact, none falls outside)."""
    image = _sitk_series(dicom_folder)
    expected = sitk.ReadImage(str(nifti))
    outside = -12345
    resampled = sitk.Resample(sitk.Cast(image, sitk.sitkFloat64), expected, sitk.Transform(), sitk.sitkNearestNeighbor,
                              outside)
    got = sitk.GetArrayFromImage(resampled)
    assert not np.any(got == outside)
    np.testing.assert_array_equal(got, sitk.GetArrayFromImage(expected).astype(np.float64))


def test_nifti_input_gets_new_patient_and_study_and_exact_geometry(tmp_path):
    """The oblique LAS thick-slice MR example (NIfTI, no DICOM source): a valid series with a new
    Patient and Study, voxels at the NIfTI output's points."""
    source = example_path("mr-neck")
    result = super_resolve(read_volume(source), model="bicubic", scale=2)
    nifti = write_volume(result, tmp_path / "neck_x2.nii.gz")
    folder = write_dicom_series(result, tmp_path / "neck_dicom", inputs=[source])
    out = [pydicom.dcmread(p) for p in _files(folder)]
    assert len(out) == 11
    assert out[0].PatientName == "MedSR^Anonymous" and out[0].PatientID.startswith("MEDSR-")
    assert out[0].StudyInstanceUID and out[0].FrameOfReferenceUID
    assert "SourceImageSequence" not in out[0] and "ReferencedSeriesSequence" not in out[0]
    assert out[0].ScanningSequence == "RM" and list(out[0].ImageType)[:2] == ["DERIVED", "SECONDARY"]
    _same_voxels_in_space(folder, nifti)
    if DCIODVFY is not None:
        assert _dciodvfy_errors(_files(folder)[0]) == []


def test_slice_axis_across_the_first_array_axis(tmp_path):
    """The sagittal T1 NIfTI has its thick axis as numpy axis 2 (x): the series is cut into sagittal
    images (the super-resolved planes), and its voxels still sit at the NIfTI output's points."""
    source = shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz")
    result = super_resolve(read_volume(source), model="bicubic", scale=2)
    assert result.metadata["medsr"]["slice_axis"] == 2
    nifti = write_volume(result, tmp_path / "t1_x2.nii.gz")
    folder = write_dicom_series(result, tmp_path / "t1_dicom")
    out = [pydicom.dcmread(p, stop_before_pixels=True) for p in _files(folder)]
    assert len(out) == result.shape[2] == 35
    assert (out[0].Rows, out[0].Columns) == result.shape[:2] == (512, 512)
    assert float(out[0].SpacingBetweenSlices) == pytest.approx(4.8)
    _same_voxels_in_space(folder, nifti)


def test_float_output_is_quantised_within_half_a_step(tmp_path):
    volume = read_volume(example_path("ct-abdomen"))
    result = super_resolve(volume, model="bicubic", scale=2, output_dtype="float32")
    assert np.any(np.mod(result.array, 1) != 0)
    folder = write_dicom_series(result, tmp_path / "f")
    back = read_volume(folder)
    ds = pydicom.dcmread(_files(folder)[0], stop_before_pixels=True)
    step = float(ds.RescaleSlope)
    assert step < 0.1 and "quantised" in ds.DerivationDescription
    assert np.max(np.abs(back.array.astype(np.float64) - result.array)) <= step / 2 + 1e-3


def test_bad_outputs_and_inputs_are_refused_before_writing(tmp_path, ct_run):
    _, result, _, dicom = ct_run
    with pytest.raises(OutputPathError, match="not empty"):
        write_dicom_series(result, dicom)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputPathError, match="is a file"):
        write_dicom_series(result, tmp_path / "file")
    with pytest.raises(OutputPathError, match="does not exist"):
        write_dicom_series(result, tmp_path / "no" / "such")
    with pytest.raises(OutputPathError, match="inside the input"):
        write_dicom_series(result, dicom / "sub", inputs=[dicom])
    unknown = Volume(result.array[:2], result.spacing, result.origin, result.direction, modality=None,
                     metadata=result.metadata)
    with pytest.raises(UnsupportedImageError, match="modality"):
        write_dicom_series(unknown, tmp_path / "m")
    plain = Volume(result.array[:2], result.spacing, result.origin, result.direction, modality="CT")
    with pytest.raises(UnsupportedImageError, match="description"):
        write_dicom_series(plain, tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing else was written
    named = write_dicom_series(plain, tmp_path / "d", description=DerivedSeriesDescription("mymodel", 3))
    assert pydicom.dcmread(_files(named)[0]).SeriesDescription == "MedSR mymodel x3"


def test_cli_output_format_dicom(tmp_path, capsys):
    source = example_path("ct-abdomen")
    out = tmp_path / "ct_x2"
    code = main(["run", str(source), str(out), "--model", "bicubic", "--scale", "2", "--output-format", "dicom",
                 "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"wrote {out}" in captured.out and "(z,y,x)" in captured.out
    assert len(_files(out)) == 12
    code = main(["run", str(source), str(out), "--model", "bicubic", "--scale", "2", "--output-format", "dicom"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("medsr: error: DICOM output folder") and err.count("\n") == 1
