"""The super-resolved grid, resampled back onto the input grid with SimpleITK, aligns with the input.

Proof at the geometry level for real RAS, LPS and LAS inputs and a real oblique (~35 deg) direction
matrix: fill the grid from :func:`super_resolved_geometry` with a smooth analytic function of the LPS
position, resample it onto the input grid with ``sitk.Resample`` (linear) and compare with the same
function evaluated at the input voxel centres. A half-voxel (or the common quarter-voxel "origin not
moved") error moves every sample by >= 0.25 mm and must fail the same tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import shared_path

from MedSRLib.geometry import (
    field_of_view,
    resolve_slice_axis,
    super_resolved_geometry,
    volume_from_sitk,
    volume_to_sitk,
)
from MedSRLib.io import read_volume
from MedSRLib.volume import Volume

INPUTS = [
    ("mr-volumes", "t1_fl2d_sag_RAS.nii.gz"),
    ("mr-volumes", "t1_fl2d_sag_LPS.nii.gz"),
    ("mr-volumes", "t1_fl2d_sag_LAS.nii.gz"),
    ("mr-volumes", "dipy", "aniso_vox.nii.gz"),
]
CROP = 48  # in-plane voxels kept (centre crop; the geometry of a crop is exact, and the test stays fast)
TOLERANCE = 2e-3  # on a function of amplitude ~3: a 0.25 mm shift gives errors > 2e-2


def smooth(points_lps: np.ndarray, unit: float) -> np.ndarray:
    """A smooth field of the LPS position (mm): wavelengths 40-60 ``unit`` mm, amplitude ~3."""
    x, y, z = (points_lps[..., a] / unit for a in range(3))
    return np.sin(2 * np.pi * x / 47.0) + np.cos(2 * np.pi * (y + 0.5 * z) / 41.0) + np.sin(2 * np.pi * z / 59.0 + 0.3)


def sample(grid, unit: float) -> np.ndarray:
    """``smooth`` at every voxel centre of a grid (Volume or SuperResolvedGrid), shape (z, y, x)."""
    k, j, i = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in grid.shape], indexing="ij")
    ijk = np.stack([i, j, k], axis=-1)
    points = np.asarray(grid.origin) + (ijk * np.asarray(grid.spacing)) @ np.asarray(grid.direction).T
    return smooth(points, unit)


def centre_crop(volume: Volume) -> Volume:
    image = volume_to_sitk(volume)
    size = image.GetSize()
    start = [max(0, (n - CROP) // 2) for n in size]
    stop = [min(n, s + CROP) for n, s in zip(size, start)]
    return volume_from_sitk(image[start[0]:stop[0], start[1]:stop[1], start[2]:stop[2]])


def resample_back(sr: Volume, reference: Volume) -> np.ndarray:
    out = sitk.Resample(
        volume_to_sitk(sr), volume_to_sitk(reference), sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat64,
        True,  # nearest-neighbour extrapolation: a value at a rounding-error edge, never a 0 from outside
    )
    return sitk.GetArrayFromImage(out)


@pytest.mark.parametrize("parts", INPUTS, ids=lambda p: p[-1])
@pytest.mark.parametrize("scale", [2, 3])
def test_super_resolved_grid_resamples_back_onto_the_input_without_shift(parts, scale):
    full = read_volume(shared_path(*parts))
    volume = centre_crop(full)
    axis = resolve_slice_axis(full)
    if parts[-1].startswith("t1_fl2d"):
        assert full.spacing[2 - axis] == pytest.approx(4.8, rel=1e-6)  # the thick axis is chosen by default
    grid = super_resolved_geometry(volume, scale=scale, slice_axis=axis)
    unit = max(s for a, s in enumerate(volume.spacing) if 2 - a != axis)  # wavelengths scale with the voxels
    sr = grid.to_volume(sample(grid, unit))

    expected = sample(volume, unit)
    error = np.abs(resample_back(sr, volume) - expected).max()
    assert error < TOLERANCE

    # the same check catches the same voxels labelled with an origin off by half an output voxel ...
    upsampled = [a for a in range(3) if 2 - a != axis][0]
    shifted_origin = np.asarray(grid.origin) + 0.5 * grid.spacing[upsampled] * grid.direction[:, upsampled]
    shifted = Volume(array=sr.array, spacing=grid.spacing, origin=shifted_origin, direction=grid.direction)
    assert np.abs(resample_back(shifted, volume) - expected).max() > 5 * TOLERANCE
    # ... and the classic bug: keeping the input origin (first voxel centres made to coincide)
    kept = Volume(array=sr.array, spacing=grid.spacing, origin=volume.origin, direction=grid.direction)
    assert np.abs(resample_back(kept, volume) - expected).max() > 5 * TOLERANCE

    # the physical field of view (outer voxel edges) is identical
    for got, want in zip(field_of_view(grid), field_of_view(volume)):
        np.testing.assert_allclose(got, want, atol=1e-9)


def test_real_image_round_trip_through_the_grid_is_closer_than_a_shifted_grid():
    """The input itself, resampled onto the x2 grid and back, beats the same with a half-voxel shift."""
    volume = centre_crop(read_volume(shared_path("mr-volumes", "dipy", "aniso_vox.nii.gz")))
    volume = volume.with_array(volume.array.astype(np.float64))
    axis = resolve_slice_axis(volume)
    grid = super_resolved_geometry(volume, scale=2, slice_axis=axis)
    reference = grid.to_volume(np.zeros(grid.shape))
    up = sitk.Resample(volume_to_sitk(volume), volume_to_sitk(reference), sitk.Transform(), sitk.sitkLinear, 0.0,
                       sitk.sitkFloat64, True)
    good = np.abs(resample_back(volume_from_sitk(up), volume) - volume.array).mean()

    upsampled = [a for a in range(3) if 2 - a != axis][0]
    origin = np.asarray(grid.origin) + 0.5 * volume.spacing[upsampled] * grid.direction[:, upsampled]
    wrong = Volume(array=sitk.GetArrayFromImage(up), spacing=grid.spacing, origin=origin, direction=grid.direction)
    bad = np.abs(resample_back(wrong, volume) - volume.array).mean()
    assert good < 0.6 * bad
