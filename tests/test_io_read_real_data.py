"""read_volume / list_dicom_series on the real data of ../shared/data (DICOM series, NIfTI, multi-frame)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import shared_path

from MedSRLib.errors import DicomSeriesError
from MedSRLib.geometry import resolve_slice_axis, volume_to_sitk
from MedSRLib.io import list_dicom_series, read_volume

SAGITTAL_DICOM = ("mr-volumes", "dcm_qa_decubitus_HFS_t1_fl2d_sag")


def test_totalsegmentator_jpeg2000_series_with_empty_uid_reads_in_hu():
    folder = shared_path("totalseg-ct", "example_ct_dicom")
    volume = read_volume(folder)
    assert volume.size == (512, 512, 20) and volume.shape == (20, 512, 512)
    np.testing.assert_allclose(volume.spacing, (0.9765625, 0.9765625, 2.0), rtol=1e-6)  # 2 mm apart, 3 mm thick
    np.testing.assert_allclose(volume.origin, (-249.51, -437.51, -804.5), atol=1e-2)
    np.testing.assert_allclose(volume.direction, np.eye(3), atol=1e-6)
    assert volume.array.dtype == np.int16
    assert (int(volume.array.min()), int(volume.array.max())) == (-1024, 1839)
    assert volume.modality == "CT"
    meta = volume.metadata
    assert meta["series_uid"] == "" and meta["n_files"] == 20 and meta["format"] == "dicom"
    assert meta["rescale"] == {"slope": 1.0, "intercept": -1024.0} and meta["original_dtype"] == "uint16"
    assert meta["transfer_syntax"] == "1.2.840.10008.1.2.4.90"
    json.dumps(meta)  # JSON-able
    # the empty UID is a valid choice; slices are sorted by position (z increasing by 2 mm)
    again = read_volume(folder, series_uid="")
    np.testing.assert_array_equal(again.array, volume.array)
    z = volume.index_to_physical(np.array([[0, 0, k] for k in range(20)]))[:, 2]
    np.testing.assert_allclose(np.diff(z), 2.0, atol=1e-6)
    assert z[-1] == pytest.approx(-766.5, abs=1e-3)
    assert resolve_slice_axis(volume) == 0


def test_a_single_file_reads_its_whole_series():
    folder = shared_path(*SAGITTAL_DICOM)
    one_file = sorted(folder.iterdir())[7]
    assert read_volume(one_file).shape == (35, 256, 256)


def test_sagittal_dicom_series_geometry_and_modality():
    volume = read_volume(shared_path(*SAGITTAL_DICOM), modality="CT")
    assert volume.shape == (35, 256, 256) and volume.array.dtype == np.uint16
    np.testing.assert_allclose(volume.spacing, (1.015625, 1.015625, 4.8), rtol=1e-6)
    np.testing.assert_allclose(volume.origin, (81.6, -130.0, 130.0), atol=1e-3)
    np.testing.assert_allclose(volume.direction.ravel(), (0, 0, -1, 1, 0, 0, 0, -1, 0), atol=1e-6)  # PIR
    assert int(volume.array.max()) == 1948
    assert volume.modality == "MR"  # the DICOM Modality wins over the argument
    assert resolve_slice_axis(volume) == 0 == resolve_slice_axis(volume, "sagittal")
    assert resolve_slice_axis(volume, "axial") == 1


def test_ras_lps_las_niftis_are_the_same_voxels_on_the_dicom_grid():
    dicom = read_volume(shared_path(*SAGITTAL_DICOM))
    reference = volume_to_sitk(dicom)
    for code in ("RAS", "LPS", "LAS"):
        volume = read_volume(shared_path("mr-volumes", f"t1_fl2d_sag_{code}.nii.gz"), modality="mr")
        assert volume.shape == (256, 256, 35) and volume.modality == "MR" and volume.array.dtype == np.int16
        assert resolve_slice_axis(volume) == 2  # the 4.8 mm axis is the first NIfTI axis = numpy axis 2
        assert volume.spacing[0] == pytest.approx(4.8, rel=1e-6)
        moved = sitk.Resample(volume_to_sitk(volume), reference, sitk.Transform(), sitk.sitkNearestNeighbor, -1)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(moved), dicom.array.astype(np.int16))


def test_totalsegmentator_niftis():
    ct = read_volume(shared_path("totalseg-ct", "example_ct.nii.gz"))
    assert ct.size == (122, 101, 112) and ct.array.dtype == np.int32 and ct.modality is None
    assert (int(ct.array.min()), int(ct.array.max())) == (-1207, 3382)
    np.testing.assert_allclose(ct.spacing, (3.0, 3.0, 3.0))
    small = read_volume(shared_path("totalseg-ct", "example_ct_sm.nii.gz"))
    assert small.size == (122, 101, 30) and small.array.dtype == np.int16
    np.testing.assert_array_equal(small.array, ct.array[82:112])  # README: voxels = example_ct[:, :, 82:112]
    mr = read_volume(shared_path("totalseg-ct", "example_mr_sm.nii.gz"), modality="MR")
    assert mr.size == (117, 91, 20) and mr.modality == "MR"
    assert (int(mr.array.min()), int(mr.array.max())) == (-47, 833)


def test_oblique_dipy_volume():
    volume = read_volume(shared_path("mr-volumes", "dipy", "aniso_vox.nii.gz"))
    assert volume.size == (58, 58, 24)
    np.testing.assert_allclose(volume.spacing, (4.0, 4.0, 5.0), rtol=1e-6)
    np.testing.assert_allclose(volume.direction.ravel(), (0.9999, 0.0, 0.0103, -0.006, 0.8141, 0.5807, -0.0084,
                                                          -0.5807, 0.8141), atol=2e-4)
    assert resolve_slice_axis(volume) == 0


def test_enhanced_multiframe_dicom_reads_as_a_volume():
    volume = read_volume(shared_path("extras", "niivue", "enh.dcm"))
    assert volume.size == (64, 64, 6) and volume.array.dtype == np.uint16
    np.testing.assert_allclose(volume.spacing, (3.375, 3.375, 2.4), rtol=1e-6)
    assert int(volume.array.max()) == 1195 and volume.modality == "MR"
    assert resolve_slice_axis(volume) == 0  # the frames are the slices, though they are thinner than the pixels


def test_multi_series_folder_lists_and_requires_a_choice():
    folder = shared_path("extras", "dcm_qa_ts")
    infos = list_dicom_series(folder)
    assert len(infos) == 9
    assert [i.series_number for i in infos] == list(range(1, 10))
    shared_uid = infos[0].series_instance_uid
    assert all(i.series_instance_uid == shared_uid for i in infos)  # one SeriesInstanceUID, nine series
    assert [i.uid for i in infos] == [f"{shared_uid}#{n}" for n in range(1, 10)]
    assert all(i.n_files == 1 and i.size == (384, 384, 1) and i.description == "ax_asc_35sl" for i in infos)
    with pytest.raises(DicomSeriesError) as err:
        read_volume(folder)
    message = str(err.value)
    assert "\n" not in message and "9 DICOM series" in message and "--series-uid" in message
    assert all(i.uid in message for i in infos) and "384x384x1" in message
    with pytest.raises(DicomSeriesError, match="shared by 9 series"):
        read_volume(folder, series_uid=shared_uid)
    with pytest.raises(DicomSeriesError, match="no DICOM series 'nope'"):
        read_volume(folder, series_uid="nope")
    # all nine transfer syntaxes (incl. big endian, RLE, JPEG lossless, JPEG-LS, JPEG 2000) decode identically
    arrays = [read_volume(folder, series_uid=i.uid) for i in infos]
    assert len({v.metadata["transfer_syntax"] for v in arrays}) == 7
    for volume in arrays[1:]:
        np.testing.assert_array_equal(volume.array, arrays[0].array)


def test_folder_with_two_real_series(tmp_path):
    vs_seg = shared_path("mr-volumes", "vs-seg_VS-SEG-001_t1_3slices")
    sagittal = shared_path(*SAGITTAL_DICOM)
    for source in sorted(vs_seg.iterdir()):
        (tmp_path / source.name).symlink_to(source)
    (tmp_path / "sub").mkdir()
    for source in sorted(sagittal.iterdir())[:4]:
        (tmp_path / "sub" / source.name).symlink_to(source)
    infos = list_dicom_series(tmp_path)
    assert sorted(i.n_files for i in infos) == [3, 4]
    assert list_dicom_series(tmp_path, recursive=False)[0].n_files == 3
    with pytest.raises(DicomSeriesError, match="2 DICOM series"):
        read_volume(tmp_path)
    chosen = next(i for i in infos if i.n_files == 3)
    volume = read_volume(tmp_path, series_uid=chosen.uid)
    assert volume.shape == (3, 512, 512) and volume.metadata["series_description"] == "t1_mpr_tra_gk_v4"
    np.testing.assert_allclose(volume.spacing, (0.41015625, 0.41015625, 1.5), rtol=1e-5)
    np.testing.assert_allclose(volume.origin, (-106.327, -123.074, -92.001), atol=1e-3)
