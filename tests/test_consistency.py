"""Data-consistency check: degrade(SR) vs input on real volumes, flags, difference volume, bad pairs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import shared_path
from MedSRLib.consistency import check_consistency
from MedSRLib.errors import GeometryError, UnsupportedImageError
from MedSRLib.io import read_volume
from MedSRLib.pipeline import super_resolve
from MedSRLib.resize import degrade


@pytest.fixture(scope="module")
def mr_pair():
    volume = read_volume(shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz"))
    return volume, super_resolve(volume, model="bicubic", scale=2, device="cpu")


def test_bicubic_output_is_highly_consistent_with_real_mr_input(mr_pair) -> None:
    volume, sr = mr_pair
    report = check_consistency(volume, sr, scale=2)
    # Measured: PSNR 47.5 dB, SSIM 0.9986 (bicubic up then down is close to, not exactly, the identity).
    assert report.psnr > 38 and report.ssim > 0.98
    assert report.units == "a.u." and report.slice_axis == 2
    assert len(report.slice_psnr) == volume.shape[2]
    assert report.flagged_slices == []
    assert report.reference is not None
    # the int16 SR only differs from the float bicubic reference by rounding
    assert abs(report.psnr - report.reference.psnr) < 1.0
    assert report.p99_abs_diff <= report.max_abs_diff


def test_a_bright_blob_in_one_output_slice_is_flagged_on_exactly_that_slice(mr_pair) -> None:
    volume, sr = mr_pair
    tampered = sr.array.copy()
    k = 17
    yy, xx = np.mgrid[0:512, 0:512]
    blob = ((yy - 300) ** 2 + (xx - 260) ** 2) < 20**2
    tampered[..., k][blob] = np.iinfo(np.int16).max // 4
    report = check_consistency(volume, sr.with_array(tampered), scale=2, reference=False)
    assert report.flagged_slices == [k]
    assert report.worst_slices(1)[0]["index"] == k


def test_difference_volume_has_the_input_geometry_and_units(mr_pair) -> None:
    volume, sr = mr_pair
    report = check_consistency(volume, sr, scale=2, reference=False)
    diff = report.difference
    assert diff is not None
    assert diff.shape == volume.shape and diff.array.dtype == np.float32
    assert diff.spacing == volume.spacing and diff.origin == volume.origin
    assert np.array_equal(diff.direction, volume.direction)
    assert diff.metadata["units"] == "a.u."
    assert float(np.abs(diff.array).max()) == pytest.approx(report.max_abs_diff, rel=1e-5)


def test_ct_consistency_is_in_hu_and_a_perfect_inverse_scores_infinitely() -> None:
    volume = read_volume(shared_path("totalseg-ct", "example_ct_dicom"))
    crop = volume.with_array(np.ascontiguousarray(volume.array[:4, 200:296, 200:296]))
    sr = super_resolve(crop, model="bicubic", scale=2, output_dtype="float32", device="cpu")
    report = check_consistency(crop, sr, scale=2)
    assert report.units == "HU" and report.data_range == pytest.approx(4095.0)
    assert report.psnr > 40
    # an input that IS the degradation of the SR volume: exact consistency
    exact_input = crop.with_array(np.asarray(degrade(np.asarray(sr.array, np.float64), scale=2)), modality="CT")
    perfect = check_consistency(exact_input, sr, scale=2, axis=0, reference=False)
    assert math.isinf(perfect.psnr) and perfect.max_abs_diff == 0.0
    assert perfect.to_json()["psnr"] is None


def test_mismatched_pairs_are_refused(mr_pair) -> None:
    volume, sr = mr_pair
    with pytest.raises(GeometryError, match="scale"):
        check_consistency(volume, sr, scale=3)
    moved = sr.with_array(sr.array, origin=tuple(np.asarray(sr.origin) + [2.0, 0.0, 0.0]))
    with pytest.raises(GeometryError, match="field of view"):
        check_consistency(volume, moved, scale=2)
    flipped = sr.with_array(sr.array, direction=sr.direction @ np.diag([1.0, -1.0, 1.0]))
    with pytest.raises(GeometryError, match="direction"):
        check_consistency(volume, flipped, scale=2)
    bad = sr.array.astype(np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(UnsupportedImageError, match="NaN"):
        check_consistency(volume, sr.with_array(bad), scale=2)
