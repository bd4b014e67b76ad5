"""The output-grid plan (geometry.GridPlan): per-axis float factors >= 1, field of view kept; the
in-plane integer scale is one case of it, bit-identical to the grid the pipeline always wrote.
Grid maths only (networks for non-integer factors come with through-plane SR)."""

from __future__ import annotations

import numpy as np
import pytest

from MedSRLib.errors import ScaleError
from MedSRLib.geometry import in_plane_plan, plan_output_grid, super_resolved_geometry
from MedSRLib.volume import Volume


def _oblique_volume(shape=(7, 20, 30), spacing=(0.8, 0.9, 5.0)) -> Volume:
    angle = np.deg2rad(20.0)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    return Volume(np.zeros(shape, np.float32), spacing=spacing, origin=(10.0, -20.0, 30.0), direction=rot)


def _fov(grid) -> np.ndarray:
    """LPS corners of the outer voxel edges of a grid (8 x 3)."""
    spacing, origin, d = np.asarray(grid.spacing), np.asarray(grid.origin), np.asarray(grid.direction)
    n = np.array(grid.shape[::-1], float)  # ITK order
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], float)
    index = corners * n - 0.5
    return origin + (d @ (index * spacing).T).T


def test_in_plane_integer_scale_is_one_case_and_bit_identical_to_super_resolved_geometry():
    volume = _oblique_volume()
    for scale in (2, 3, 4):
        for axis in (0, 1, 2):
            plan = in_plane_plan(volume, scale=scale, slice_axis=axis)
            grid = super_resolved_geometry(volume, scale=scale, slice_axis=axis)
            assert plan.output.shape == grid.shape and plan.output.spacing == grid.spacing
            assert plan.output.origin == grid.origin
            assert plan.slice_axis == axis and plan.in_plane_scale == scale
            assert plan.upsampled_axes == tuple(a for a in range(3) if a != axis)
            # the historical formula, written out: spacing / s, origin + D @ ((1/s - 1)/2 * spacing)
            factors = np.array([1.0 if 2 - a == axis else float(scale) for a in range(3)])
            spacing = np.asarray(volume.spacing, np.float64)
            origin = np.asarray(volume.origin, np.float64) + volume.direction @ ((1.0 / factors - 1.0) / 2.0 * spacing)
            assert plan.output.spacing == tuple(float(v) for v in spacing / factors)
            assert plan.output.origin == tuple(float(v) for v in origin)


def test_single_axis_non_integer_factor_keeps_the_field_of_view():
    volume = _oblique_volume(shape=(7, 20, 30), spacing=(0.8, 0.9, 5.0))
    plan = plan_output_grid(volume, (5.0 / 0.9 * 0.9 / 1.2, 1.0, 1.0))  # slice axis z only, 4.1666.. -> 29 slices
    assert plan.output.shape == (29, 20, 30)
    assert plan.upsampled_axes == (0,) and plan.slice_axis is None and plan.in_plane_scale is None
    assert plan.factors[0] == pytest.approx(29 / 7) and plan.factors[1:] == (1.0, 1.0)
    assert plan.output.spacing[:2] == volume.spacing[:2]
    assert plan.output.spacing[2] == pytest.approx(5.0 * 7 / 29)
    np.testing.assert_allclose(np.sort(_fov(plan.output), axis=0), np.sort(_fov(plan.input), axis=0), atol=1e-9)
    np.testing.assert_array_equal(plan.output.direction, volume.direction)


def test_non_integer_factors_on_every_axis_round_the_size_and_keep_the_field_of_view():
    volume = _oblique_volume(shape=(5, 11, 13))
    plan = plan_output_grid(volume, (2.5, 1.5, 1.25))
    assert plan.output.shape == (13, 17, 16)  # round(12.5)=13 (half up), round(16.5)=17, round(16.25)=16
    assert plan.requested == (2.5, 1.5, 1.25)
    assert plan.factors == (13 / 5, 17 / 11, 16 / 13)
    np.testing.assert_allclose(np.sort(_fov(plan.output), axis=0), np.sort(_fov(plan.input), axis=0), atol=1e-9)
    # output voxel i' sits at input index (i' + 0.5) / f - 0.5 along each axis
    k_out = 4.0
    k_in = (k_out + 0.5) / plan.factors[0] - 0.5
    d, sp_in, sp_out = volume.direction, np.asarray(volume.spacing), np.asarray(plan.output.spacing)
    p_out = np.asarray(plan.output.origin) + d @ (np.array([0.0, 0.0, k_out]) * sp_out)
    p_in = np.asarray(volume.origin) + d @ (np.array([(0.5 / plan.factors[2]) - 0.5, (0.5 / plan.factors[1]) - 0.5, k_in]) * sp_in)
    np.testing.assert_allclose(p_out, p_in, atol=1e-9)


def test_identity_plan_changes_nothing_and_json_round_trips_the_facts():
    volume = _oblique_volume()
    plan = plan_output_grid(volume, (1, 1, 1))
    assert plan.output.shape == volume.shape and plan.output.origin == tuple(volume.origin)
    data = plan.to_json()
    assert data["factors_zyx"] == [1.0, 1.0, 1.0] and data["upsampled_axes"] == []
    assert data["output"]["shape_zyx"] == list(volume.shape)


@pytest.mark.parametrize("factors", [(0.5, 1, 1), (1, float("nan"), 1), (1, 1), (1, True, 1), ("2", 1, 1), 2])
def test_bad_factors_are_refused_by_name(factors):
    with pytest.raises(ScaleError, match="factor"):
        plan_output_grid(_oblique_volume(), factors)


def test_the_pipeline_carries_the_plan_in_its_metadata():
    from MedSRLib.pipeline import super_resolve

    volume = Volume(np.random.default_rng(0).random((3, 16, 12)).astype(np.float32), spacing=(1.0, 1.0, 4.0),
                    origin=(0.0, 0.0, 0.0), direction=np.eye(3), modality="MR")
    result = super_resolve(volume, model="bicubic", scale=2, device="cpu")
    grid = result.metadata["medsr"]["grid"]
    assert grid == in_plane_plan(volume, scale=2, slice_axis=0).to_json()
    assert grid["output"]["shape_zyx"] == list(result.shape) and grid["factors_zyx"] == [1.0, 2.0, 2.0]
