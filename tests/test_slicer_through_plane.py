"""Through-plane super-resolution in the Slicer module, on slicer-core's real MRML with MedSRLib's REAL
``super_resolve`` (issue 19 item 3, issue 20 item 7): a small thick-slice volume node is super-resolved
along its slice axis by the logic, as the panel runs it.

The network is ``tp-dridsr`` with the shipped ``MedSRLib/weights/tp-dridsr.safetensors`` when it exists,
else the tiny random weights file of ``tests/conftest.py``'s ``tiny_weights``, passed as the logic's
``weights``: these tests check the module's integration (grid, progress, cancel, consistency,
choices), not learned quality. Every node is a real MRML node.
"""

from __future__ import annotations

import unittest
from pathlib import Path

import numpy as np
import pytest
from slicer_double import medsr  # noqa: F401  (fixture)
from test_slicer_batch_script import batch  # noqa: F401  (fixture: Testing/MedSRBatch.py on real MRML)

#: Slicer's (i, j, k) spacing of the thick volume: 0.9 mm pixels, 3 mm slices (ratio 3.33 >= 2: thick).
THICK_SPACING = (0.9, 0.9, 3.0)
SHAPE_KJI = (6, 20, 24)
#: Near-isotropic: 6 slices x 3 mm -> round(6 x 3 / 0.9) = 20 slices, the network at x4, B-spline to 20.
SLICES_OUT = int(round(SHAPE_KJI[0] * 3.0 / 0.9))
FP32_CPU = {"precision": "fp32", "device": "cpu"}


@pytest.fixture(scope="module")
def tp_weights(tiny_weights) -> Path:
    """The shipped tp-dridsr weights when they exist, else conftest's tiny random tp-dridsr weights file."""
    from MedSRLib.models import get_model

    spec = get_model("tp-dridsr")
    return spec.weights_path(max(spec.scales)) if spec.has_weights(max(spec.scales)) else tiny_weights


def thick_node(name="Thick", spacing=THICK_SPACING, shape=SHAPE_KJI):
    """A real MR-like scalar volume node (non-negative int16), ``spacing`` in Slicer's (i, j, k) order."""
    import slicer

    voxels = np.random.default_rng(0).integers(0, 500, size=shape).astype(np.int16)
    ijk_to_ras = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    ijk_to_ras[:3, 3] = (12.0, -7.5, 30.0)
    return slicer.util.addVolumeFromArray(voxels, ijkToRAS=ijk_to_ras, name=name)


def ijk_to_ras(node) -> np.ndarray:
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def scalar_volume_names():
    import slicer

    return [n.GetName() for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")]


class InputSnapshot:
    """The input node's voxels, IJK-to-RAS and image-data MTime, to show that a run left it unchanged."""

    def __init__(self, node) -> None:
        import slicer

        self.node = node
        self.voxels = slicer.util.arrayFromVolume(node).copy()
        self.matrix = ijk_to_ras(node)
        self.mtime = node.GetImageData().GetMTime()

    def assert_unchanged(self) -> None:
        import slicer

        assert self.node.GetImageData().GetMTime() == self.mtime
        np.testing.assert_array_equal(ijk_to_ras(self.node), self.matrix)
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(self.node), self.voxels)


def test_through_plane_output_is_written_on_MedSRLibs_plan_with_round_n_f_slices_and_the_input_unchanged(medsr, tp_weights):
    import slicer
    from MedSRSlicerLib import nodes

    from MedSRLib.engine import EngineOptions
    from MedSRLib.geometry import ijk_to_ras_matrix, plan_output_grid
    from MedSRLib.pipeline import super_resolve

    input_node = thick_node()
    before = InputSnapshot(input_node)
    logic = medsr.MedSRLogic()
    output = logic.process(input_node, model="bicubic", scale=2, plane="through", weights=tp_weights, engine=FP32_CPU,
                           check=False)

    volume = nodes.volumeFromNode(input_node)
    plan = plan_output_grid(volume, [3.0 / 0.9, 1.0, 1.0])  # the library's plan: slice axis = numpy 0 (K)
    assert plan.output.shape == (SLICES_OUT, 20, 24)
    assert output.GetImageData().GetDimensions() == (24, 20, SLICES_OUT)  # round(n f) slices, in-plane kept
    np.testing.assert_allclose(ijk_to_ras(output), ijk_to_ras_matrix(plan.to_volume(np.zeros(plan.output.shape))),
                               atol=1e-9)
    # the voxels are MedSRLib's own run on the same volume, in the input's dtype
    expected = super_resolve(volume, plane="through", weights=tp_weights, options=EngineOptions(**FP32_CPU))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(output), expected.array)
    assert slicer.util.arrayFromVolume(output).dtype == np.int16
    run = logic.lastRunInfo
    assert (run["plane"], run["model"], run["slice_axis"], run["scale"]) == ("through", "tp-dridsr", 0, 4)
    assert output.GetName() == f"Thick_tp-dridsr_x{SLICES_OUT / 6:.3g}"  # Thick_tp-dridsr_x3.33
    assert "Slice thickness assumed = slice spacing (3 mm)." in logic.lastNotes
    before.assert_unchanged()


def test_progress_runs_over_every_view_monotonic_to_the_total(medsr, tp_weights):
    from MedSRSlicerLib import reporting

    seen = []
    logic = medsr.MedSRLogic()
    logic.process(thick_node(), plane="through", weights=tp_weights, engine={**FP32_CPU, "batch_size": "4"},
                  progress=lambda done, total: seen.append((done, total)), check=False)
    # slices cut along J (20) and along I (24), each containing the K axis, and the 20 + 24 - 1 voxel diagonals
    # in each of the two diagonal directions (MedSRLib's default of 4 views)
    total = SHAPE_KJI[1] + SHAPE_KJI[2] + 2 * (SHAPE_KJI[1] + SHAPE_KJI[2] - 1)
    assert {t for _d, t in seen} == {total}
    done = [d for d, _t in seen]
    assert done == sorted(done) and done[-1] == total and len(done) > 2
    assert any(d == SHAPE_KJI[2] or d == SHAPE_KJI[1] for d in done)  # the first orientation ends, the second goes on
    tracker = reporting.ProgressTracker(None)
    for d, t in seen:
        tracker(d, t)
    assert (tracker.snapshot().done, tracker.snapshot().total) == (total, total)  # what the panel's bar shows


def test_cancel_during_a_through_plane_run_adds_nothing_to_the_scene_and_leaves_the_input_unchanged(medsr, tp_weights):
    from MedSRLib.errors import CancelledError

    input_node = thick_node()
    before = InputSnapshot(input_node)
    names = scalar_volume_names()
    seen = []
    logic = medsr.MedSRLogic()
    with pytest.raises(CancelledError):
        logic.process(input_node, plane="through", weights=tp_weights, engine={**FP32_CPU, "batch_size": "4"},
                      progress=lambda done, total: seen.append((done, total)), cancel=lambda: bool(seen))
    assert seen and seen[-1][0] < seen[-1][1]  # stopped between batches, before the end
    assert scalar_volume_names() == names and logic.lastRunInfo is None and logic.lastConsistency is None
    before.assert_unchanged()


def test_auto_goes_through_plane_on_a_thick_volume_and_in_plane_on_a_thin_one(medsr, tp_weights):
    logic = medsr.MedSRLogic()
    thick = logic.process(thick_node(), model="bicubic", scale=2, plane="auto", weights=tp_weights, engine=FP32_CPU,
                          check=False)
    assert logic.lastRunInfo["plane"] == "through" and thick.GetImageData().GetDimensions() == (24, 20, SLICES_OUT)
    # thin slices (1.2 mm vs 0.9 mm): auto is in-plane, and the through-plane settings are not passed (MedSRLib
    # would refuse them on an in-plane run)
    thin = logic.process(thick_node("Thin", spacing=(0.9, 0.9, 1.2)), model="bicubic", scale=2, plane="auto",
                         targetSpacingMM=0.5, adaptSeconds=30, check=False)
    assert logic.lastRunInfo["plane"] == "in" and thin.GetImageData().GetDimensions() == (48, 40, 6)
    assert thin.GetName() == "Thin_bicubic_x2"


def test_through_plane_consistency_is_MedSRLibs_slice_profile_check_shown_beside_the_bspline(medsr, tp_weights):
    import slicer
    from MedSRSlicerLib import consistency_view, nodes

    from MedSRLib.consistency import check_consistency

    input_node = thick_node()
    logic = medsr.MedSRLogic()
    output, report = logic.processWithReport(input_node, plane="through", weights=tp_weights, engine=FP32_CPU)
    assert report is logic.lastConsistency and report is not None
    assert (report.plane, report.slice_axis, report.factor) == ("through", 0, pytest.approx(SLICES_OUT / 6))
    assert report.reference is not None and "slice profile" in report.degradation
    expected = check_consistency(nodes.volumeFromNode(input_node), nodes.volumeFromNode(output), plane="through", axis=0)
    assert report.psnr == pytest.approx(expected.psnr) and report.reference.psnr == pytest.approx(expected.reference.psnr)
    assert len(report.slice_psnr) == SHAPE_KJI[0]  # one score per input slice
    html = consistency_view.metricsHtml(report)
    assert "<th>cubic B-spline</th>" in html and "slice profile along axis 0" in html and "bicubic" not in html
    title, entries = consistency_view.sliceListEntries(report)
    assert entries and all("cubic B-spline" in text for _index, text in entries)
    difference = logic.createDifferenceNode(input_node, report)  # on the input's grid
    np.testing.assert_allclose(ijk_to_ras(difference), ijk_to_ras(input_node), atol=1e-9)
    assert slicer.util.arrayFromVolume(difference).shape == SHAPE_KJI
    ras = logic.jumpToSlice(input_node, entries[0][0], report.slice_axis)
    np.testing.assert_allclose(ras[2], 30.0 + 3.0 * entries[0][0], atol=1e-6)  # centre of that K slice


def test_adaptation_is_run_and_reported_in_one_line(medsr, tp_weights):
    logic = medsr.MedSRLogic()
    logic.process(thick_node(), plane="through", weights=tp_weights, engine=FP32_CPU, adaptSeconds=1, check=False)
    adaptation = logic.lastRunInfo["through_plane"]["adaptation"]
    assert adaptation["iterations"] >= 1 and logic.lastRunInfo["adapted"]
    notes = [n for n in logic.lastNotes if n.startswith("Adapted for")]
    assert len(notes) == 1 and "held-back patches" in notes[0] and "\n" not in notes[0]
    assert "do not measure the through-plane result" in notes[0]


def test_without_shipped_weights_a_through_plane_run_stops_with_one_line_and_adds_nothing(medsr):
    """The panel disables Apply with the same reason (``test_slicer_panel_choices.py``); the Python API gets
    MedSRLib's one-line WeightsError. With shipped weights the run goes through."""
    from MedSRLib.errors import WeightsError
    from MedSRLib.models import get_model

    logic = medsr.MedSRLogic()
    input_node = thick_node()
    names = scalar_volume_names()
    if get_model("tp-dridsr").has_weights(4):
        output = logic.process(input_node, plane="through", engine=FP32_CPU, check=False)
        assert output.GetImageData().GetDimensions() == (24, 20, SLICES_OUT)
        return
    with pytest.raises(WeightsError, match="no through-plane weights for MR") as raised:
        logic.process(input_node, plane="through", engine=FP32_CPU)
    assert "\n" not in str(raised.value)
    assert scalar_volume_names() == names and logic.lastRunInfo is None


def test_batch_script_runs_auto_through_plane_on_a_thick_file_and_writes_what_MedSRLib_writes(batch, tp_weights, tmp_path,
                                                                                              capsys):
    """Slicer's reader and writer around the logic (``Testing/MedSRBatch.py --plane auto``) on a real thick MR
    (a crop of the 35-slice, 4.8 mm sagittal T1; I is its slice axis), compared with ``medsr``'s own run."""
    import SimpleITK as sitk
    from conftest import shared_path

    from MedSRLib.io import read_volume, write_volume
    from MedSRLib.engine import EngineOptions
    from MedSRLib.run import RunOptions, run_volume

    full = read_volume(shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz"))
    source = tmp_path / "thick.nii.gz"
    write_volume(full.with_array(np.ascontiguousarray(full.array[:24, :24])), source)
    written, expected = tmp_path / "slicer.nrrd", tmp_path / "medsrlib.nrrd"
    assert batch.main(["--", str(source), str(written), "--plane", "auto", "--target-spacing", "2.4",
                       "--weights", str(tp_weights), "--precision", "fp32", "--device", "cpu", "--views", "2"]) == 0
    out = capsys.readouterr().out
    assert "tp-dridsr through-plane x2 (network x2) ran in fp32 on cpu." in out
    run_volume(source, expected, RunOptions(plane="auto", target_spacing=2.4, weights=str(tp_weights), check=False,
                                            views=2, engine=EngineOptions(**FP32_CPU)))
    a, b = sitk.ReadImage(str(written)), sitk.ReadImage(str(expected))
    assert a.GetSize() == b.GetSize() == (70, 24, 24)  # 35 slices x 4.8 mm -> 70 x 2.4 mm along I
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


class _Case(unittest.TestCase):
    def runTest(self):  # pragma: no cover - only the assertion methods are used
        pass


def test_MedSRTest_through_plane_checks_pass_on_the_real_thick_T1_whose_slice_axis_is_I(medsr, tp_weights):
    """``selftest.throughPlaneAndVerify`` (what ``MedSRTest.test_throughPlane_CTChest`` runs in Slicer) on a 32 x 32
    in-plane crop of the real sagittal T1 loaded by Slicer's reader: 35 slices of 4.8 mm along I."""
    import slicer
    from conftest import shared_path

    node = slicer.util.loadVolume(str(shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz")))
    output = medsr.selftest.throughPlaneAndVerify(_Case(), node, size=32, weights=tp_weights)
    assert output.GetImageData().GetDimensions() == (int(round(35 * 4.8 / 1.015625)), 32, 32)


def test_a_through_plane_run_ignores_the_in_plane_models_scale(medsr, tp_weights):
    """The panel keeps its in-plane Model/Scale while Auto goes through-plane: a scale that model lacks (MDRN
    has no x3) neither disables Apply nor stops the run."""
    logic = medsr.MedSRLogic()
    node = thick_node()
    problem = logic.problemWith(node, None, "mdrn", 3, plane="auto")
    assert problem is None or problem.startswith("No through-plane weights for MR")
    output = logic.process(node, model="mdrn", scale=3, plane="auto", weights=tp_weights, engine=FP32_CPU, check=False)
    assert logic.lastRunInfo["model"] == "tp-dridsr" and output.GetImageData().GetDimensions() == (24, 20, SLICES_OUT)


def test_notes_warn_when_the_network_output_was_less_consistent_than_the_bspline(medsr) -> None:
    from MedSRSlicerLib import reporting

    def run(suspect: bool) -> dict:
        return {"plane": "through", "through_plane": {"thickness_assumed": False, "projection": {
            "steps": 3, "residual_before": 0.02 if suspect else 0.002, "residual_after": 0.001,
            "bspline_residual": 0.01, "suspect": suspect}}}

    assert not any("less consistent" in n for n in reporting.throughPlaneNotes(run(False)))
    assert any("less consistent with the input than cubic B-spline" in n for n in reporting.throughPlaneNotes(run(True)))


def test_panel_run_is_medsr_runs_flow_with_the_same_RunOptions(medsr, tp_weights, tmp_path):
    """One options type: the logic turns the panel's choices into a ``MedSRLib.run.RunOptions`` and runs it
    through ``super_resolve_with_options``, the flow ``medsr run`` uses; the same options given to
    ``run_volume`` on the same voxels write the same output, and the options the panel does not use stay unset."""
    import slicer
    from MedSRLib.io import read_volume, write_volume
    from MedSRLib.run import RunOptions, run_volume

    from MedSRSlicerLib import nodes

    logic = medsr.MedSRLogic()
    node = thick_node("Shared")
    volume = nodes.volumeFromNode(node)
    options = logic.runOptions(volume, model="bicubic", scale=2, plane="auto", targetSpacingMM=1.5, weights=tp_weights,
                               engine=logic.engineOptions(FP32_CPU), check=False)
    assert isinstance(options, RunOptions)
    assert (options.plane, options.model, options.scale, options.target_spacing, options.adapt_seconds) == (
        "through", None, None, 1.5, None)  # the in-plane model and scale are not a through-plane run's
    output = logic.process(node, model="bicubic", scale=2, plane="auto", targetSpacingMM=1.5, weights=tp_weights,
                           engine=FP32_CPU, check=False)
    source = tmp_path / "thick.nrrd"
    write_volume(volume, source)
    run = run_volume(source, tmp_path / "out.nrrd", options)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(output), read_volume(run.output).array)
    assert logic.lastRunInfo["grid"] == run.result.metadata["medsr"]["grid"]
    # an in-plane panel run: model and scale set, the through-plane fields left unset even when typed in
    thin = nodes.volumeFromNode(thick_node("Thin2", spacing=(0.9, 0.9, 1.2)))
    in_plane = logic.runOptions(thin, model="bicubic", scale=2, plane="auto", targetSpacingMM=0.5, adaptSeconds=30)
    assert (in_plane.plane, in_plane.model, in_plane.scale, in_plane.target_spacing, in_plane.adapt_seconds) == (
        "in", "bicubic", 2, None, None)


def test_the_views_checkbox_reaches_MedSRLib_as_views_2_and_the_plan_and_estimate_follow(medsr, tp_weights):
    """Unticking "Fuse the voxel diagonals too" runs MedSRLib with ``views=2`` (the default, ticked, leaves
    MedSRLib's 4); the run records it, the plan line says so and the estimate shrinks."""
    from MedSRSlicerLib import nodes

    logic = medsr.MedSRLogic()
    node = thick_node("Views")
    volume = nodes.volumeFromNode(node)
    assert logic.runOptions(volume, plane="through").views is None  # MedSRLib's default: 4
    assert logic.runOptions(volume, plane="through", throughDiagonals=False).views == 2
    logic.process(node, plane="through", weights=tp_weights, engine=FP32_CPU, check=False, throughDiagonals=False)
    assert logic.lastRunInfo["through_plane"]["views"] == 2
    logic.process(node, plane="through", weights=tp_weights, engine=FP32_CPU, check=False)
    assert logic.lastRunInfo["through_plane"]["views"] == 4
    plan = logic.planFor(node, "through")
    assert plan.planText(2, diagonals=False).endswith("two orientations fused.")
    assert plan.planText(2).endswith("two orientations and two diagonals fused.")
    four_call = logic.estimateInBackground(node, "bicubic", 2, plane="through")
    two_call = logic.estimateInBackground(node, "bicubic", 2, plane="through", throughDiagonals=False)
    four_call.wait()
    two_call.wait()
    assert two_call.result() < four_call.result()
