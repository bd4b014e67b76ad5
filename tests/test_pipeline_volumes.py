"""super_resolve on real volumes: placement in space (no half-voxel shift), units, dtype, progress, cancel."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import shared_path
from MedSRLib.errors import CancelledError, ScaleError
from MedSRLib.geometry import resolve_slice_axis, volume_to_sitk
from MedSRLib.io import read_volume
from MedSRLib.engine import EngineOptions
from MedSRLib.pipeline import super_resolve
from MedSRLib.run import RunOptions, run_volume
from MedSRLib.volume import Volume


def estimated_shift_voxels(volume: Volume, result: Volume, slice_axis: int) -> np.ndarray:
    """Resample ``result`` back onto ``volume``'s grid (SimpleITK, linear) and estimate, per in-plane
    numpy axis, the residual shift in input voxels by least squares on the first-order Taylor model
    ``back ~ input + shift * d(input)/dx`` over the interior."""
    back = sitk.Resample(
        volume_to_sitk(result, result.array.astype(np.float32)),
        volume_to_sitk(volume, volume.array.astype(np.float32)),
        sitk.Transform(),
        sitk.sitkLinear,
        0.0,
        sitk.sitkFloat32,
    )
    back_arr = sitk.GetArrayFromImage(back).astype(np.float64)
    ref = volume.array.astype(np.float64)
    interior = [slice(None)] * 3
    for a in range(3):
        if a != slice_axis:
            interior[a] = slice(4, -4)
    residual = (back_arr - ref)[tuple(interior)]
    shifts = []
    for a in range(3):
        if a == slice_axis:
            continue
        grad = np.gradient(ref, axis=a)[tuple(interior)]
        shifts.append(float(np.sum(residual * grad) / np.sum(grad * grad)))
    return np.asarray(shifts)


def shifted(result: Volume, slice_axis: int, fraction: float) -> Volume:
    """``result`` with its origin moved by ``fraction`` of an output voxel along each in-plane axis."""
    origin = np.asarray(result.origin, dtype=np.float64)
    for a in range(3):
        if a == slice_axis:
            continue
        itk_axis = 2 - a
        origin = origin + fraction * result.spacing[itk_axis] * result.direction[:, itk_axis]
    return result.with_array(result.array, origin=tuple(origin))


@pytest.mark.parametrize(
    "relative",
    [
        "mr-volumes/t1_fl2d_sag_RAS.nii.gz",
        "mr-volumes/t1_fl2d_sag_LPS.nii.gz",
        "mr-volumes/t1_fl2d_sag_LAS.nii.gz",
        "mr-volumes/dipy/aniso_vox.nii.gz",
    ],
)
def test_bicubic_x2_output_resampled_back_aligns_with_input(relative: str) -> None:
    volume = read_volume(shared_path(*relative.split("/")))
    result = super_resolve(volume, model="bicubic", scale=2, output_dtype="float32", device="cpu")
    axis = resolve_slice_axis(volume, None)
    shifts = estimated_shift_voxels(volume, result, axis)
    assert np.all(np.abs(shifts) < 0.03), f"residual in-plane shift {shifts} input voxels"
    # The check is sensitive: half an output voxel (a quarter input voxel at x2) shows up clearly.
    wrong = estimated_shift_voxels(volume, shifted(result, axis, 0.5), axis)
    assert np.all(np.abs(np.abs(wrong) - 0.25) < 0.06), f"half-voxel error not detected: {wrong}"


def test_ct_dicom_series_bicubic_x2_keeps_hu_int16_and_aligns() -> None:
    volume = read_volume(shared_path("totalseg-ct", "example_ct_dicom"))
    crop = volume.with_array(np.ascontiguousarray(volume.array[:6, 100:260, 120:300]))
    # the crop changes the origin: voxel (0, 100, 120) moved to index 0
    crop = crop.with_array(crop.array, origin=tuple(volume.index_to_physical(np.array([120, 100, 0]))))
    result = super_resolve(crop, model="bicubic", scale=2, device="cpu")
    assert result.array.dtype == np.int16
    assert result.shape == (6, 320, 360)
    assert result.spacing == pytest.approx((0.9765625 / 2, 0.9765625 / 2, 2.0))
    # origin moves by (1/s - 1)/2 x spacing along each in-plane axis (identity direction here)
    expected = np.asarray(crop.origin) + np.array([-0.25 * 0.9765625, -0.25 * 0.9765625, 0.0])
    assert np.allclose(result.origin, expected, atol=1e-6)
    assert result.array.min() >= -1024 - 150 and result.array.max() <= 1839 + 300  # HU, bicubic overshoot only
    shifts = estimated_shift_voxels(crop, result, 0)
    assert np.all(np.abs(shifts) < 0.03), shifts


def test_input_volume_is_never_modified_and_mr_keeps_units() -> None:
    volume = read_volume(shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz"))
    before = volume.array.copy()
    result = super_resolve(volume, model="nearest", scale=2, device="cpu")
    assert np.array_equal(volume.array, before)
    axis = resolve_slice_axis(volume, None)
    # nearest x2 then taking every second pixel in-plane gives back the input exactly (units kept)
    index = [slice(None)] * 3
    for a in range(3):
        if a != axis:
            index[a] = slice(0, None, 2)
    assert result.array.dtype == volume.array.dtype
    assert np.array_equal(result.array[tuple(index)], volume.array)


def test_progress_reports_every_slice_and_cancel_writes_nothing(tmp_path) -> None:
    source = shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    calls: list[tuple[int, int]] = []
    volume = read_volume(source)
    super_resolve(volume, model="bicubic", scale=2, batch_size=8, device="cpu", progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (35, 35)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert len(calls) >= 35 // 8

    polls = {"n": 0}

    def cancel_after_first_batch() -> bool:
        polls["n"] += 1
        return polls["n"] > 1

    out = tmp_path / "sr.nii.gz"
    with pytest.raises(CancelledError):
        run_volume(source, out, RunOptions(model="bicubic", scale=2, engine=EngineOptions(batch_size=4, device="cpu")),
                   cancel=cancel_after_first_batch)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest


def test_explicit_axis_and_float32_output() -> None:
    volume = read_volume(shared_path("mr-volumes", "t1_fl2d_sag_RAS.nii.gz"))
    result = super_resolve(volume, model="bicubic", scale=3, axis=0, output_dtype="float32", device="cpu")
    assert result.array.dtype == np.float32
    nz, ny, nx = volume.shape
    assert result.shape == (nz, 3 * ny, 3 * nx)
    assert np.isfinite(result.array).all()


def test_unsupported_scale_is_rejected_before_work() -> None:
    volume = Volume(np.zeros((2, 8, 8), np.float32), (1, 1, 1), (0, 0, 0), np.eye(3))
    with pytest.raises(ScaleError, match="bicubic"):
        super_resolve(volume, model="bicubic", scale=1)
