"""resolve_slice_axis (spacing, planes through the direction matrix, bad values) and the SR grid."""

from __future__ import annotations

import numpy as np
import pytest

from MedSRLib.errors import GeometryError, ScaleError
from MedSRLib.geometry import field_of_view, resolve_slice_axis, super_resolved_geometry
from MedSRLib.volume import Volume


def make(shape=(8, 9, 10), spacing=(1.0, 1.0, 1.0), direction=np.eye(3), origin=(0.0, 0.0, 0.0)) -> Volume:
    return Volume(array=np.zeros(shape, np.float32), spacing=spacing, origin=origin, direction=direction)


def rotation_about_lr(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


# PIR: i -> posterior, j -> inferior, k -> right (the real sagittal DICOM series of mr-volumes)
PIR = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def test_default_is_the_largest_spacing_whatever_the_array_order():
    assert resolve_slice_axis(make(spacing=(1.0, 1.0, 4.8))) == 0   # ITK k = numpy 0
    assert resolve_slice_axis(make(spacing=(4.8, 1.0, 1.0))) == 2   # ITK i = numpy 2 (the RAS/LPS/LAS files)
    assert resolve_slice_axis(make(spacing=(1.0, 3.0, 1.0))) == 1


def test_default_ties_and_single_slices():
    # isotropic: the axis most aligned with S (axial slices), found through the direction matrix
    assert resolve_slice_axis(make(spacing=(3.0, 3.0, 3.0))) == 0
    assert resolve_slice_axis(make(spacing=(3.0, 3.0, 3.0), direction=PIR)) == 1  # j is inferior -> numpy 1
    assert resolve_slice_axis(make(spacing=(3.0, 3.0, 3.0 * (1 + 5e-4)), direction=PIR)) == 1  # within 0.1 %
    # square coarse pixels over thinner slices (enhanced MR: 3.375 mm pixels, 2.4 mm slices): the odd axis
    assert resolve_slice_axis(make(spacing=(3.375, 3.375, 2.4))) == 0
    # a 2D image read as one slice: that axis, even when its nominal spacing is the smallest
    assert resolve_slice_axis(make(shape=(1, 40, 50), spacing=(2.0, 2.0, 1.0))) == 0


def test_planes_follow_the_direction_matrix_not_the_array_order():
    volume = make(spacing=(1.0156, 1.0156, 4.8), direction=PIR)
    assert resolve_slice_axis(volume, "sagittal") == 0   # k steps L -> R
    assert resolve_slice_axis(volume, "axial") == 1      # j steps S -> I
    assert resolve_slice_axis(volume, "Coronal") == 2    # i steps A -> P
    identity = make()
    assert [resolve_slice_axis(identity, p) for p in ("axial", "coronal", "sagittal")] == [0, 1, 2]


def test_planes_of_a_35_degree_oblique_volume_and_a_45_degree_ambiguity():
    tilted = make(direction=rotation_about_lr(35.0))  # like mr-volumes/dipy/aniso_vox.nii.gz
    assert resolve_slice_axis(tilted, "axial") == 0
    assert resolve_slice_axis(tilted, "coronal") == 1
    assert resolve_slice_axis(tilted, "sagittal") == 2
    diagonal = make(direction=rotation_about_lr(45.0))
    with pytest.raises(GeometryError, match="axial"):
        resolve_slice_axis(diagonal, "axial")
    assert resolve_slice_axis(diagonal, "sagittal") == 2  # still clearly aligned with L/R
    # every index axis 54.7 deg from S (|cos| = 1/sqrt(3) < 0.6): no axis is axial
    body = np.array([[1, -1, 0] / np.sqrt(2), [1, 1, -2] / np.sqrt(6), [1, 1, 1] / np.sqrt(3)])
    with pytest.raises(GeometryError, match="alignment 0.58"):
        resolve_slice_axis(make(direction=body), "axial")


@pytest.mark.parametrize("axis", [3, -1, True, 1.0, "z", "transverse", object()])
def test_bad_axis_values_name_the_allowed_ones(axis):
    with pytest.raises(GeometryError, match="axial"):
        resolve_slice_axis(make(), axis)


def test_numpy_axes_pass_through_including_strings_and_numpy_ints():
    volume = make(spacing=(1.0, 1.0, 5.0))
    assert [resolve_slice_axis(volume, a) for a in (0, 1, 2, np.int64(1), "2")] == [0, 1, 2, 1, 2]


def test_super_resolved_grid_numbers_oblique():
    direction = rotation_about_lr(30.0)
    volume = make(shape=(5, 6, 7), spacing=(0.8, 1.2, 4.0), origin=(10.0, -20.0, 30.0), direction=direction)
    grid = super_resolved_geometry(volume, scale=3, slice_axis=0)
    assert grid.shape == (5, 18, 21)
    np.testing.assert_allclose(grid.spacing, (0.8 / 3, 0.4, 4.0))
    np.testing.assert_array_equal(grid.direction, direction)
    shift = (1 / 3 - 1) / 2 * (0.8 * direction[:, 0] + 1.2 * direction[:, 1])
    np.testing.assert_allclose(grid.origin, np.array(volume.origin) + shift, atol=1e-12)
    # the field of view (outer voxel edges) is exactly the input's
    for got, want in zip(field_of_view(grid), field_of_view(volume)):
        np.testing.assert_allclose(got, want, atol=1e-12)
    # upsampling another axis leaves that one (numpy 2 = ITK i) unchanged
    other = super_resolved_geometry(volume, scale=2, slice_axis=2)
    assert other.shape == (10, 12, 7)
    assert other.spacing[0] == 0.8 and other.spacing[1] == 0.6 and other.spacing[2] == 2.0
    assert other.to_volume(np.zeros(other.shape)).spacing == other.spacing
    with pytest.raises(GeometryError):
        other.to_volume(np.zeros((1, 2, 3)))


@pytest.mark.parametrize("scale", [0, -2, 1.5, True, "2"])
def test_bad_scale(scale):
    with pytest.raises(ScaleError):
        super_resolved_geometry(make(), scale=scale, slice_axis=0)


@pytest.mark.parametrize("slice_axis", [3, -1, None, "axial"])
def test_bad_slice_axis_for_the_grid(slice_axis):
    with pytest.raises(GeometryError):
        super_resolved_geometry(make(), scale=2, slice_axis=slice_axis)


def test_non_orthonormal_direction_is_refused_for_planes():
    sheared = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(GeometryError, match="orthonormal"):
        resolve_slice_axis(make(direction=sheared), "axial")
