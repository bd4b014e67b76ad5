"""What ``MedSRTest`` (ctest ``py_MedSR``, in ``MedSR.py``) checks, as functions the tests outside Slicer
also run on slicer-core's real MRML with real volumes (tests/test_slicer_selftest.py).

``slabAlongSliceAxis`` keeps a few slices of a volume **along its slice axis** (the axis with the
largest spacing, ``MedSRLib.geometry.resolve_slice_axis``), so a network test on CPU stays short and
the slab is still super-resolved in-plane: on a volume whose thick axis is not K (e.g. a sagittal
acquisition stored with the thick axis as I) a slab along K would be super-resolved across its thick
axis and the geometry check would fail. ``superResolveAndVerify`` runs ``MedSRLogic.process`` and
asserts the output's geometry, dimensions, dtype, placement and consistency display.
``throughPlaneAndVerify`` does the same for a through-plane run (``plane="auto"`` on a thick-slice volume,
cropped in-plane with ``middleInPlane`` to stay short): MedSRLib's grid plan, the slice-profile check.
"""

from __future__ import annotations

import numpy as np
import slicer

from . import nodes


def sliceAxis(volumeNode) -> int:
    """The numpy axis (0-2 of the ``(k, j, i)`` array) MedSRLib super-resolves across by default."""
    from MedSRLib.geometry import resolve_slice_axis

    return resolve_slice_axis(nodes.volumeFromNode(volumeNode))


def slabAlongSliceAxis(volumeNode, count: int, name: str | None = None):
    """A new scalar volume node holding the middle ``count`` slices of ``volumeNode`` along its slice axis.

    Every kept voxel stays at the same RAS position (the origin moves to the first kept slice through
    ``MedSRLib.volume.Volume.index_to_physical``); spacing and directions are unchanged.
    """
    axis = sliceAxis(volumeNode)
    return _middleNode(volumeNode, {axis: int(count)}, name or f"{volumeNode.GetName()}_slab")


def middleInPlane(volumeNode, size: int, name: str | None = None):
    """A new scalar volume node holding the middle ``size`` x ``size`` voxels of every slice of ``volumeNode``
    (all slices along its slice axis kept), every kept voxel at the same RAS position."""
    axis = sliceAxis(volumeNode)
    return _middleNode(volumeNode, {a: int(size) for a in range(3) if a != axis}, name or f"{volumeNode.GetName()}_crop")


def _middleNode(volumeNode, counts: dict, name: str):
    """The middle ``counts[a]`` voxels along each numpy axis ``a`` in ``counts`` (others whole), as a new node."""
    volume = nodes.volumeFromNode(volumeNode)
    keep = [slice(None)] * 3
    firstIJK = np.zeros(3)
    for axis, count in counts.items():
        first = max(0, (volume.shape[axis] - count) // 2)
        keep[axis] = slice(first, first + count)
        firstIJK[2 - axis] = first  # numpy axis a is IJK axis 2 - a
    part = volume.with_array(np.ascontiguousarray(volume.array[tuple(keep)]), origin=volume.index_to_physical(firstIJK))
    partNode = slicer.mrmlScene.AddNewNodeByClass(nodes.SCALAR_VOLUME_CLASS, name)
    nodes.writeVolumeToNode(part, partNode)
    return partNode


def superResolveAndVerify(testCase, inputVolume, model: str, slices: int | None = None, scale: int = 2):
    """Super-resolve ``inputVolume`` (or a ``slices``-slice slab of it) with ``MedSRLogic`` and check the result.

    Checks (``testCase``'s assertions): output IJK-to-RAS = input IJK-to-RAS x the field-of-view-preserving
    index map; dimensions; dtype; mean intensity within 5 % of the range; input voxels and geometry
    unchanged; same parent transform and subject-hierarchy folder; name; the consistency report and
    difference node. Returns the output node.
    """
    from .logic import MedSRLogic

    if slices:  # networks on CPU are slow: keep a slab of the middle slices along the slice axis
        inputVolume = slabAlongSliceAxis(inputVolume, slices)
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "MedSRTestTransform")
    inputVolume.SetAndObserveTransformNodeID(transform.GetID())

    inputMatrix = nodes.ijkToRasArray(inputVolume)  # geometry read at run time
    inputDims = np.array(inputVolume.GetImageData().GetDimensions())
    inputVoxels = slicer.util.arrayFromVolume(inputVolume).copy()
    axis = sliceAxis(inputVolume)
    sliceAxisIJK = 2 - axis
    factors = np.where(np.arange(3) == sliceAxisIJK, 1, scale)

    logic = MedSRLogic()
    outputVolume = logic.process(inputVolume, model=model, scale=scale, axis=axis)

    # output index i' maps to input index (i' + 0.5) / f - 0.5: same field of view (outer voxel edges)
    indexMap = np.eye(4)
    indexMap[:3, :3] = np.diag(1.0 / factors)
    indexMap[:3, 3] = (1.0 / factors - 1.0) / 2.0
    np.testing.assert_allclose(nodes.ijkToRasArray(outputVolume), inputMatrix @ indexMap, atol=1e-6)
    np.testing.assert_array_equal(outputVolume.GetImageData().GetDimensions(), inputDims * factors)
    outputVoxels = slicer.util.arrayFromVolume(outputVolume)
    testCase.assertEqual(outputVoxels.dtype, inputVoxels.dtype)
    testCase.assertLess(abs(float(outputVoxels.mean()) - float(inputVoxels.mean())), 0.05 * float(np.ptp(inputVoxels)))
    # input untouched, output beside it
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(inputVolume), inputVoxels)
    np.testing.assert_array_equal(nodes.ijkToRasArray(inputVolume), inputMatrix)
    testCase.assertEqual(outputVolume.GetTransformNodeID(), transform.GetID())
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    testCase.assertNotEqual(shNode.GetItemByDataNode(outputVolume), 0)
    testCase.assertEqual(shNode.GetItemParent(shNode.GetItemByDataNode(outputVolume)),
                         shNode.GetItemParent(shNode.GetItemByDataNode(inputVolume)))
    testCase.assertTrue(outputVolume.GetName().startswith(f"{inputVolume.GetName()}_{model}_x{scale}"))
    _verifyConsistencyDisplay(testCase, logic, inputVolume, inputMatrix, axis)
    return outputVolume


def throughPlaneAndVerify(testCase, inputVolume, size: int | None = None, weights=None):
    """Super-resolve ``inputVolume`` (or its middle ``size`` x ``size`` in-plane crop) with ``plane="auto"``
    (a thick-slice volume: through-plane, near-isotropic, MedSRLib's network for its modality; ``weights``: a
    weights file instead of the shipped one) and check the result.

    Checks: the run went through-plane along MedSRLib's slice axis; output IJK-to-RAS = that of MedSRLib's grid
    plan (``geometry.plan_output_grid`` at the panel's planned factor), round(n f) slices, in-plane grid kept;
    dtype; input voxels and geometry unchanged; parent transform and folder; name; the slice-profile
    consistency report and its display. Returns the output node.
    """
    from MedSRLib.geometry import ijk_to_ras_matrix, plan_output_grid

    from .logic import MedSRLogic

    if size:  # through-plane on a CPU: keep the middle of each slice, every slice
        inputVolume = middleInPlane(inputVolume, size)
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "MedSRTestTransform")
    inputVolume.SetAndObserveTransformNodeID(transform.GetID())
    inputMatrix = nodes.ijkToRasArray(inputVolume)
    inputVoxels = slicer.util.arrayFromVolume(inputVolume).copy()
    logic = MedSRLogic()
    plan = logic.planFor(inputVolume, "auto")
    testCase.assertEqual(plan.resolved, "through", plan.ruleText())
    outputVolume = logic.process(inputVolume, plane="auto", weights=weights)

    run = logic.lastRunInfo
    testCase.assertEqual((run["plane"], run["slice_axis"]), ("through", plan.sliceAxis))
    factors = [plan.sliceSpacing / plan.targetSpacing if a == plan.sliceAxis else 1.0 for a in range(3)]
    grid = plan_output_grid(nodes.volumeFromNode(inputVolume), factors)
    np.testing.assert_allclose(nodes.ijkToRasArray(outputVolume), ijk_to_ras_matrix(grid.to_volume(np.zeros(grid.output.shape))),
                               atol=1e-6)
    shapeKJI = slicer.util.arrayFromVolume(outputVolume).shape
    testCase.assertEqual(shapeKJI[plan.sliceAxis], int(round(plan.slices * factors[plan.sliceAxis])))
    testCase.assertEqual([n for a, n in enumerate(shapeKJI) if a != plan.sliceAxis],
                         [n for a, n in enumerate(inputVoxels.shape) if a != plan.sliceAxis])
    testCase.assertEqual(slicer.util.arrayFromVolume(outputVolume).dtype, inputVoxels.dtype)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(inputVolume), inputVoxels)
    np.testing.assert_array_equal(nodes.ijkToRasArray(inputVolume), inputMatrix)
    testCase.assertEqual(outputVolume.GetTransformNodeID(), transform.GetID())
    testCase.assertTrue(outputVolume.GetName().startswith(f"{inputVolume.GetName()}_{run['model']}_x"))
    testCase.assertEqual(logic.lastConsistency.plane, "through")
    _verifyConsistencyDisplay(testCase, logic, inputVolume, inputMatrix, plan.sliceAxis)
    return outputVolume


def _verifyConsistencyDisplay(testCase, logic, inputVolume, inputMatrix, axis: int) -> None:
    """The report exists; the difference node sits on the input grid, level 0; the Red view jumps to the slice."""
    report = logic.lastConsistency
    testCase.assertIsNotNone(report)
    testCase.assertEqual(report.slice_axis, axis)
    differenceVolume = logic.createDifferenceNode(inputVolume, report)
    np.testing.assert_allclose(nodes.ijkToRasArray(differenceVolume), inputMatrix, atol=1e-4)
    colorNodeID = differenceVolume.GetDisplayNode().GetColorNodeID()
    testCase.assertIsNotNone(slicer.mrmlScene.GetNodeByID(colorNodeID), f"no colour node {colorNodeID} in this Slicer")
    testCase.assertAlmostEqual(differenceVolume.GetDisplayNode().GetLevel(), 0.0)
    logic.showDifference(inputVolume, differenceVolume)
    ras = logic.jumpToSlice(inputVolume, 0, report.slice_axis)
    redSliceNode = slicer.mrmlScene.GetSingletonNode("Red", "vtkMRMLSliceNode")
    if redSliceNode is not None:  # slice views exist in the application (and in the tests' application scene)
        redSliceToRAS = redSliceNode.GetSliceToRAS()
        np.testing.assert_allclose([redSliceToRAS.GetElement(row, 3) for row in range(3)], ras, atol=1e-3)
