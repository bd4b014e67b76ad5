"""The data-consistency feature of the MedSR module on slicer-core's real MRML (real MR file).

The logic returns MedSRLib's ConsistencyReport; the difference node holds its difference volume on the
input's grid with a diverging colour map centred on 0; jumpToSlice centres the slice views on the right
RAS point for slices along each numpy axis; a tampered slice is flagged; cancel leaves nothing behind.
The panel widgets need Qt (real Slicer only); their text comes from functions tested here.
"""

import numpy as np
import pytest
from conftest import shared_path
from slicer_double import medsr  # noqa: F401  (fixture)

T1 = ("mr-volumes", "t1_fl2d_sag_LPS.nii.gz")  # (256, 256, 35) int16, 4.8 mm sagittal slices = numpy axis 2


def ijk_to_ras(node):
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def node_from_volume(volume, name):
    import slicer
    from MedSRLib.geometry import ijk_to_ras_matrix

    return slicer.util.addVolumeFromArray(volume.array, ijkToRAS=ijk_to_ras_matrix(volume), name=name)


def real_slab(first=12, count=6):
    """``count`` sagittal slices of the real T1 from slice ``first`` (origin moved to match)."""
    from MedSRLib.io import read_volume

    volume = read_volume(shared_path(*T1))
    return volume.with_array(np.ascontiguousarray(volume.array[:, :, first:first + count]),
                             origin=tuple(volume.index_to_physical([first, 0, 0])))


def small_volume():
    from MedSRLib.volume import Volume

    k, j, i = np.meshgrid(np.arange(4), np.arange(20), np.arange(24), indexing="ij")
    voxels = (800 * np.exp(-((j - 10) ** 2 + (i - 8) ** 2) / 30.0) + 10 * i + 5 * k).astype(np.int16)
    return Volume(voxels, (0.9, 0.9, 3.0), (5.0, -7.0, 11.0), np.eye(3), modality="MR")


def scalar_volume_names():
    import slicer

    return sorted(node.GetName() for node in slicer.mrmlScene.GetNodesByClass("vtkMRMLScalarVolumeNode"))


# -- numbers, difference node, display -------------------------------------------------------------------


def test_process_returns_MedSRLibs_report_and_the_difference_node_holds_it_on_the_input_grid(medsr):
    import slicer
    from MedSRLib.consistency import check_consistency
    from MedSRLib.geometry import volume_from_slicer_arrays
    from MedSRLib.io import read_volume
    from MedSRSlicerLib import consistency_view

    volume = read_volume(shared_path(*T1))
    input_node = node_from_volume(volume, "t1")
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "T")
    input_node.SetAndObserveTransformNodeID(transform.GetID())
    input_image_mtime, input_matrix = input_node.GetImageData().GetMTime(), ijk_to_ras(input_node)
    logic = medsr.MedSRLogic()

    output_node, report = logic.processWithReport(input_node, model="bicubic", scale=2)

    assert report is logic.lastConsistency
    assert scalar_volume_names() == ["t1", "t1_bicubic_x2"]  # the difference node is made on request only
    # the same numbers as MedSRLib on the input file and the output read back from its node
    sr = volume_from_slicer_arrays(slicer.util.arrayFromVolume(output_node).copy(), ijk_to_ras(output_node))
    expected = check_consistency(volume, sr, scale=2)
    assert (report.slice_axis, report.scale, report.units) == (expected.slice_axis, 2, "a.u.") == (2, 2, "a.u.")
    for name in ("psnr", "ssim", "p99_abs_diff", "max_abs_diff", "data_range"):
        assert getattr(report, name) == pytest.approx(getattr(expected, name), rel=1e-12), name
        assert getattr(report.reference, name) == pytest.approx(getattr(expected.reference, name), rel=1e-12), name
    np.testing.assert_allclose(report.slice_psnr, expected.slice_psnr, rtol=1e-12)
    np.testing.assert_allclose(report.slice_ssim, expected.slice_ssim, rtol=1e-12)
    assert len(report.slice_psnr) == 35 and report.flagged_slices == expected.flagged_slices == []

    difference_node = logic.createDifferenceNode(input_node, report)

    assert difference_node.GetName() == "t1 MedSR difference"
    np.testing.assert_allclose(ijk_to_ras(difference_node), ijk_to_ras(input_node), atol=1e-6)
    assert difference_node.GetImageData().GetDimensions() == input_node.GetImageData().GetDimensions() == (35, 256, 256)
    voxels = slicer.util.arrayFromVolume(difference_node)
    assert voxels.dtype == np.float32
    np.testing.assert_array_equal(voxels, report.difference.array)
    np.testing.assert_array_equal(voxels, expected.difference.array)
    assert difference_node.GetTransformNodeID() == transform.GetID()
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    assert sh.GetItemParent(sh.GetItemByDataNode(difference_node)) == sh.GetItemParent(sh.GetItemByDataNode(input_node))
    display = difference_node.GetDisplayNode()
    assert display.GetColorNodeID() == "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
    assert display.GetAutoWindowLevel() == 0 and display.GetLevel() == 0.0
    assert display.GetWindowLevelMin() == -display.GetWindowLevelMax() == pytest.approx(-report.p99_abs_diff)
    assert 0 < report.p99_abs_diff < float(np.abs(voxels).max())  # the window comes from the data

    logic.showDifference(input_node, difference_node)
    # every slice view (composite node) shows the difference over the input at opacity 0.5
    assert set(slicer.sliceLayers().values()) == {(input_node.GetID(), difference_node.GetID(), 0.5)}
    assert logic.createDifferenceNode(input_node, report).GetName() == "t1 MedSR difference_1"
    # input voxels and geometry unchanged (the node's own MTime is not: real MRML bumps it when another node
    # observes the same transform)
    assert input_node.GetImageData().GetMTime() == input_image_mtime
    np.testing.assert_array_equal(ijk_to_ras(input_node), input_matrix)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(input_node), volume.array)

    # panel text: no slice flagged, so the 5 worst are listed, labelled as such
    title, entries = consistency_view.sliceListEntries(report)
    assert title.startswith("No slice flagged") and "5 slices with the lowest PSNR" in title
    assert [index for index, _ in entries] == [w["index"] for w in report.worst_slices(5)]
    assert min(report.slice_psnr) == report.slice_psnr[entries[0][0]]
    html = consistency_view.metricsHtml(report)
    assert f"{report.psnr:.2f} dB" in html and f"{report.reference.psnr:.2f} dB" in html
    assert f"{report.p99_abs_diff:.4g} a.u." in html and f"{report.max_abs_diff:.4g} a.u." in html


def test_tampered_slice_is_flagged_and_listed(medsr, monkeypatch):
    from MedSRLib import pipeline
    from MedSRSlicerLib import consistency_view

    real_super_resolve = pipeline.super_resolve

    def bright_blob_in_slice_3(volume, **options):
        result = real_super_resolve(volume, **options)
        tampered = result.array.copy()
        tampered[200:240, 200:240, 3] = 3 * int(volume.array.max())  # numpy axis 2 = the sagittal slices
        return result.with_array(tampered)

    monkeypatch.setattr(pipeline, "super_resolve", bright_blob_in_slice_3)
    logic = medsr.MedSRLogic()
    logic.process(node_from_volume(real_slab(), "slab"), model="bicubic", scale=2)

    report = logic.lastConsistency
    assert report.slice_axis == 2 and report.flagged_slices == [3]
    assert report.slice_psnr[3] < report.reference.slice_psnr[3] - 6.0
    title, entries = consistency_view.sliceListEntries(report)
    assert title.startswith("1 slice(s) flagged") and [index for index, _ in entries] == [3]
    assert entries[0][1].startswith("Slice 3: PSNR ")


# -- jump to slice ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_jumpToSlice_centres_every_slice_view_on_the_slice_centre(medsr, axis):
    import slicer
    from MedSRLib.geometry import ijk_to_ras_matrix
    from MedSRLib.io import read_volume

    volume = read_volume(shared_path(*T1))  # array (256, 256, 35): the three axes have different roles
    input_node = node_from_volume(volume, "t1")
    views = [slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode", name) for name in ("Red", "Yellow", "Green")]
    index = 30
    centre_ijk = (np.array(volume.array.shape[::-1], dtype=float) - 1) / 2  # (i, j, k)
    centre_ijk[2 - axis] = index  # numpy axis 0 = k, 1 = j, 2 = i
    expected = (ijk_to_ras_matrix(volume) @ [*centre_ijk, 1.0])[:3]

    ras = medsr.MedSRLogic().jumpToSlice(input_node, index, axis)

    np.testing.assert_allclose(ras, expected, atol=1e-6)
    np.testing.assert_allclose(ras, volume.index_to_physical(centre_ijk) * [-1, -1, 1], atol=1e-6)  # LPS -> RAS by hand
    for view in views:
        translation = [view.GetSliceToRAS().GetElement(row, 3) for row in range(3)]
        np.testing.assert_allclose(translation, expected, atol=1e-6)


def test_jumpToSlice_follows_the_parent_transform_and_refuses_what_does_not_exist(medsr):
    import slicer
    from MedSRLib.geometry import ijk_to_ras_matrix
    from MedSRSlicerLib.nodes import NodeError

    volume = small_volume()
    input_node = node_from_volume(volume, "small")
    to_world = np.array([[0.0, -1.0, 0.0, 10.0], [1.0, 0.0, 0.0, -5.0], [0.0, 0.0, 1.0, 2.0], [0.0, 0.0, 0.0, 1.0]])
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "T")
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(to_world))
    input_node.SetAndObserveTransformNodeID(transform.GetID())
    view = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    logic = medsr.MedSRLogic()

    ras = logic.jumpToSlice(input_node, 2, 0)  # slice k = 2 of 4

    local = ijk_to_ras_matrix(volume) @ [11.5, 9.5, 2.0, 1.0]
    np.testing.assert_allclose(ras, (to_world @ local)[:3], atol=1e-9)
    np.testing.assert_allclose([view.GetSliceToRAS().GetElement(r, 3) for r in range(3)], ras, atol=1e-9)
    with pytest.raises(NodeError, match="outside 'small', which has 4 slices along axis 0"):
        logic.jumpToSlice(input_node, 4, 0)
    with pytest.raises(NodeError, match="not a numpy axis"):
        logic.jumpToSlice(input_node, 0, 3)
    slicer.mrmlScene.RemoveNode(input_node)
    with pytest.raises(NodeError, match="no longer in the scene"):
        logic.jumpToSlice(input_node, 0, 0)


# -- refusals, switch, cancel -------------------------------------------------------------------------


def test_createDifferenceNode_refuses_reports_it_cannot_place(medsr):
    import slicer
    from MedSRLib.consistency import check_consistency
    from MedSRLib.pipeline import super_resolve
    from MedSRSlicerLib.nodes import NodeError

    volume = small_volume()
    sr = super_resolve(volume, model="bicubic", scale=2)
    input_node = node_from_volume(volume, "small")
    other_node = node_from_volume(volume.with_array(volume.array[:, :, :12].copy()), "other")
    nodes_before = slicer.mrmlScene.GetNumberOfNodes()
    logic = medsr.MedSRLogic()
    with pytest.raises(NodeError, match="kept no difference"):
        logic.createDifferenceNode(input_node, check_consistency(volume, sr, scale=2, keep_difference=False))
    with pytest.raises(NodeError, match="not for 'other'"):
        logic.createDifferenceNode(other_node, check_consistency(volume, sr, scale=2))
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes_before


def test_check_can_be_switched_off_and_a_failed_check_is_reported_not_fatal(medsr, monkeypatch):
    from MedSRLib import consistency
    from MedSRLib.errors import GeometryError

    logic = medsr.MedSRLogic()
    assert medsr.MedSRLogic().getParameterNode().checkConsistency is True
    output_node, report = logic.processWithReport(node_from_volume(small_volume(), "a"), model="bicubic", scale=2, check=False)
    assert report is None and logic.lastConsistency is None and output_node.GetName() == "a_bicubic_x2"

    def refuse(*args, **kwargs):
        raise GeometryError("SR and input have different direction matrices")

    monkeypatch.setattr(consistency, "check_consistency", refuse)
    warnings = []
    output_node = logic.process(node_from_volume(small_volume(), "b"), model="bicubic", scale=2, onWarning=warnings.append)
    assert output_node.GetName() == "b_bicubic_x2" and logic.lastConsistency is None
    assert warnings == ["MedSR: the data-consistency check failed: SR and input have different direction matrices"]


def test_cancel_after_super_resolution_leaves_no_nodes_and_no_report(medsr, monkeypatch):
    import slicer
    from MedSRLib import pipeline
    from MedSRLib.errors import CancelledError

    real_super_resolve = pipeline.super_resolve
    finished = []

    def super_resolve_then_cancel(volume, **options):
        result = real_super_resolve(volume, **options)
        finished.append(True)  # the user clicks Cancel while the check runs
        return result

    monkeypatch.setattr(pipeline, "super_resolve", super_resolve_then_cancel)
    logic = medsr.MedSRLogic()
    logic.lastConsistency = "stale"
    input_node = node_from_volume(small_volume(), "c")
    nodes_before = slicer.mrmlScene.GetNumberOfNodes()
    with pytest.raises(CancelledError):
        logic.process(input_node, model="bicubic", scale=2, cancel=lambda: bool(finished))
    assert finished and slicer.mrmlScene.GetNumberOfNodes() == nodes_before
    assert scalar_volume_names() == ["c"] and logic.lastConsistency is None


def test_help_explains_the_check_and_says_the_output_is_no_acquisition(medsr):
    from types import SimpleNamespace

    parent = SimpleNamespace()
    medsr.MedSR(parent)
    help_text = " ".join(parent.helpText.split())
    assert help_text.count("not a substitute for an acquisition at that resolution") == 1
    assert "Data consistency" in help_text and "does not prove the added detail is real" in help_text
