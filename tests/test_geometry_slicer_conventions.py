"""Slicer IJK-to-RAS conversions against the worked examples of slicer-conventions.md 3.6 (A, B, C)."""

from __future__ import annotations

import numpy as np
import pytest

from MedSRLib.errors import GeometryError
from MedSRLib.geometry import (
    LPS_TO_RAS,
    geometry_from_ijk_to_ras,
    ijk_to_ras_matrix,
    lps_to_ras,
    ras_to_lps,
    super_resolved_geometry,
    volume_from_slicer_arrays,
)
from MedSRLib.volume import Volume


def axial_ct() -> Volume:
    """Example A: ITK size (512, 512, 40), spacing (0.8, 0.8, 2.5), origin LPS (-200, -180, -50)."""
    return Volume(array=np.zeros((40, 512, 512), np.int16), spacing=(0.8, 0.8, 2.5),
                  origin=(-200.0, -180.0, -50.0), direction=np.eye(3))


def sagittal_mr() -> Volume:
    """Example B (MRHead-like NRRD): space directions (0,1,0) (0,0,-1) (-1.3,0,0) in LPS."""
    direction = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # columns = i, j, k
    return Volume(array=np.zeros((130, 256, 256), np.int16), spacing=(1.0, 1.0, 1.2999954223632812),
                  origin=(86.644897460937486, -133.92860412597656, 116.78569793701172), direction=direction)


def test_example_a_axial_ct_ijk_to_ras_and_voxel_position():
    volume = axial_ct()
    m = ijk_to_ras_matrix(volume)
    np.testing.assert_allclose(m, [[-0.8, 0, 0, 200], [0, -0.8, 0, 180], [0, 0, 2.5, -50], [0, 0, 0, 1]], atol=1e-12)
    # voxel a[3, 20, 10] = IJK (10, 20, 3) -> RAS (192, 164, -42.5) = LPS (-192, -164, -42.5)
    np.testing.assert_allclose(m @ [10, 20, 3, 1], [192.0, 164.0, -42.5, 1.0], atol=1e-12)
    np.testing.assert_allclose(volume.index_to_physical([10, 20, 3]), [-192.0, -164.0, -42.5], atol=1e-12)
    np.testing.assert_allclose(lps_to_ras([-192.0, -164.0, -42.5]), [192.0, 164.0, -42.5])


def test_example_b_sagittal_mr_ijk_to_ras():
    m = ijk_to_ras_matrix(sagittal_mr())
    expected = [[0, 0, 1.29999542, -86.6449], [-1, 0, 0, 133.9286], [0, -1, 0, 116.7857], [0, 0, 0, 1]]
    np.testing.assert_allclose(m, expected, atol=1e-4)
    np.testing.assert_allclose((m @ [10, 20, 5, 1])[:3], [-80.145, 123.929, 96.786], atol=1e-3)
    assert np.linalg.det(m[:3, :3]) > 0  # right-handed in RAS as in LPS


def test_example_c_super_resolved_ijk_to_ras_is_input_times_index_map():
    volume = axial_ct()
    grid = super_resolved_geometry(volume, scale=2, slice_axis=0)
    out = ijk_to_ras_matrix(grid)
    np.testing.assert_allclose(out, [[-0.4, 0, 0, 200.2], [0, -0.4, 0, 180.2], [0, 0, 2.5, -50], [0, 0, 0, 1]], atol=1e-12)
    assert grid.shape == (40, 1024, 1024)
    index_map = np.array([[0.5, 0, 0, -0.25], [0, 0.5, 0, -0.25], [0, 0, 1, 0], [0, 0, 0, 1]])  # i = (i'+.5)/2 - .5
    np.testing.assert_allclose(out, ijk_to_ras_matrix(volume) @ index_map, atol=1e-12)


@pytest.mark.parametrize("make", [axial_ct, sagittal_mr])
def test_geometry_from_ijk_to_ras_is_the_exact_inverse(make):
    volume = make()
    spacing, origin, direction = geometry_from_ijk_to_ras(ijk_to_ras_matrix(volume))
    np.testing.assert_allclose(spacing, volume.spacing, rtol=1e-14)
    np.testing.assert_allclose(origin, volume.origin, atol=1e-12)
    np.testing.assert_allclose(direction, volume.direction, atol=1e-14)


def test_oblique_flipped_round_trip_and_slicer_array_volume():
    angle = np.deg2rad(23.0)
    rot = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    direction = rot @ np.diag([1.0, -1.0, -1.0])  # a flip stays in the direction, spacing stays positive
    array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    volume = Volume(array=array, spacing=(0.7, 1.1, 3.0), origin=(12.5, -40.0, 7.25), direction=direction)
    rebuilt = volume_from_slicer_arrays(array, ijk_to_ras_matrix(volume), modality="MR")
    assert rebuilt.array is array  # Slicer's (k, j, i) array is used as is
    np.testing.assert_allclose(rebuilt.spacing, volume.spacing, rtol=1e-14)
    np.testing.assert_allclose(rebuilt.origin, volume.origin, atol=1e-12)
    np.testing.assert_allclose(rebuilt.direction, direction, atol=1e-14)
    assert rebuilt.modality == "MR"
    ijk = np.array([[0, 0, 0], [5, 4, 3], [2.5, 1, 0.5]])
    np.testing.assert_allclose(rebuilt.index_to_physical(ijk), volume.index_to_physical(ijk), atol=1e-12)


def test_lps_ras_flip_is_its_own_inverse_and_rejects_bad_shapes():
    points = np.random.default_rng(0).normal(size=(7, 3)) * 100
    np.testing.assert_array_equal(ras_to_lps(lps_to_ras(points)), points)
    np.testing.assert_array_equal(LPS_TO_RAS, np.diag([-1.0, -1.0, 1.0]))
    with pytest.raises(ValueError):
        LPS_TO_RAS[0, 0] = 1.0  # the constant is read-only
    with pytest.raises(GeometryError):
        lps_to_ras(np.zeros((4, 2)))


@pytest.mark.parametrize(
    "matrix, words",
    [
        (np.array([[2.0, 0, 30, -123.36], [0, 2, 30, -102.85], [0, 0, 32, -38.76], [0, 0, 0, 1]]), "sheared"),
        (np.array([[1.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "zero-length"),
        (np.eye(3), "4x4"),
        (np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]]), "last row"),
    ],
)
def test_geometry_from_ijk_to_ras_rejects_invalid_matrices(matrix, words):
    # the first matrix is the real sheared sform of extras/dipy/S0_10slices.nii.gz (README)
    with pytest.raises(GeometryError, match=words):
        geometry_from_ijk_to_ras(matrix)
