"""MedSR logic contract on volumes built in memory: geometry, placement, and refusal of bad input.

Runs in real 3D Slicer (ctest ``py_MedSRLogicContractTest``; no network) and, unchanged, outside
Slicer on slicer-core's real MRML library (``tests/test_slicer_logic_contract.py``): the same
assertions hold in both. Tests that run a model need torch and are
skipped without it (nothing is ever installed).

Conventions: ``arrayFromVolume`` arrays are ``(k, j, i)``; IJK-to-RAS matrices are 4x4 numpy arrays.
"""

import importlib.util
import unittest

import numpy as np
import slicer
import vtk

from MedSR import MedSRLogic
from MedSRLib.errors import CancelledError, ScaleError, UnsupportedImageError
from MedSRSlicerLib.nodes import NodeError

#: An oblique, anisotropic IJK-to-RAS: 30 deg about S, spacing (0.8, 0.9, 3.0) mm, origin (10, -20, 30).
_ANGLE = np.deg2rad(30.0)
OBLIQUE_IJK_TO_RAS = np.array([
    [np.cos(_ANGLE) * 0.8, -np.sin(_ANGLE) * 0.9, 0.0, 10.0],
    [np.sin(_ANGLE) * 0.8, np.cos(_ANGLE) * 0.9, 0.0, -20.0],
    [0.0, 0.0, 3.0, 30.0],
    [0.0, 0.0, 0.0, 1.0],
])


def ijkToRas(volumeNode) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def testVoxels(shapeKJI=(4, 20, 24), dtype=np.int16) -> np.ndarray:
    """A smooth blob plus a ramp, so interpolation results are not trivial."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in shapeKJI), indexing="ij")
    blob = 800 * np.exp(-((j - shapeKJI[1] / 2) ** 2 + (i - shapeKJI[2] / 3) ** 2) / 30.0)
    return (blob + 10 * i + 5 * k - 100).astype(dtype)


class MedSRLogicContractTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def requireTorch(self):
        if importlib.util.find_spec("torch") is None:
            self.skipTest("torch is not installed (tests never install it)")

    def addVolume(self, voxels, ijkToRAS=OBLIQUE_IJK_TO_RAS, name="Input", className=None):
        return slicer.util.addVolumeFromArray(voxels, ijkToRAS=ijkToRAS, name=name, nodeClassName=className)

    def assertRefusedWithNothingWritten(self, exceptionType, inputVolume, **processArguments):
        """``process`` raises ``exceptionType``; no node is added; the input's voxels and geometry are unchanged."""
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        voxelsBefore = slicer.util.arrayFromVolume(inputVolume).copy() if inputVolume and inputVolume.GetImageData() else None
        matrixBefore = ijkToRas(inputVolume) if inputVolume else None
        with self.assertRaises(exceptionType) as raised:
            MedSRLogic().process(inputVolume, **processArguments)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        if voxelsBefore is not None:
            np.testing.assert_array_equal(slicer.util.arrayFromVolume(inputVolume), voxelsBefore)
            np.testing.assert_array_equal(ijkToRas(inputVolume), matrixBefore)
        self.assertTrue(str(raised.exception))
        return raised.exception

    # -- the Slicer facts the logic relies on (slicer-conventions.md section 7) -----------------------
    def test_arrayFromVolume_is_a_kji_view_of_the_node_voxels(self):
        voxels = testVoxels()
        node = self.addVolume(voxels)
        self.assertEqual(node.GetImageData().GetDimensions(), (24, 20, 4))
        view = slicer.util.arrayFromVolume(node)
        self.assertEqual(view.shape, (4, 20, 24))
        self.assertEqual(view.dtype, np.int16)
        np.testing.assert_array_equal(view, voxels)
        view[1, 2, 3] = 1234  # writes through to the node
        self.assertEqual(slicer.util.arrayFromVolume(node)[1, 2, 3], 1234)

    def test_updateVolumeFromArray_copies_voxels_and_keeps_geometry(self):
        node = self.addVolume(testVoxels())
        replacement = np.zeros((2, 3, 5), dtype=np.float32)
        slicer.util.updateVolumeFromArray(node, replacement)
        replacement[0, 0, 0] = 7.0  # a copy was taken
        self.assertEqual(node.GetImageData().GetDimensions(), (5, 3, 2))
        self.assertEqual(float(slicer.util.arrayFromVolume(node)[0, 0, 0]), 0.0)
        np.testing.assert_allclose(ijkToRas(node), OBLIQUE_IJK_TO_RAS, atol=1e-12)

    def test_ijk_to_ras_is_directions_times_spacing_with_origin_in_last_column(self):
        node = self.addVolume(testVoxels())
        np.testing.assert_allclose(node.GetSpacing(), (0.8, 0.9, 3.0), atol=1e-12)
        np.testing.assert_allclose(node.GetOrigin(), (10.0, -20.0, 30.0), atol=1e-12)
        directions = np.zeros((3, 3))
        node.GetIJKToRASDirections(directions)
        np.testing.assert_allclose(directions * np.array(node.GetSpacing()), OBLIQUE_IJK_TO_RAS[:3, :3], atol=1e-12)
        # voxel (i, j, k) = (1, 2, 3) in RAS
        np.testing.assert_allclose((ijkToRas(node) @ [1, 2, 3, 1])[:3],
                                   np.array(node.GetOrigin()) + directions @ (np.array(node.GetSpacing()) * [1, 2, 3]))

    # -- the logic on valid input -----------------------------------------------------------------------
    def test_bicubic_x2_keeps_the_field_of_view_and_sits_beside_the_input(self):
        self.requireTorch()
        voxels = testVoxels()
        inputVolume = self.addVolume(voxels)
        transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "Patient")
        inputVolume.SetAndObserveTransformNodeID(transform.GetID())
        shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
        folder = shNode.CreateFolderItem(shNode.GetSceneItemID(), "Study")
        shNode.SetItemParent(shNode.GetItemByDataNode(inputVolume), folder)
        seen = []

        outputVolume = MedSRLogic().process(inputVolume, model="bicubic", scale=2, progress=lambda d, t: seen.append((d, t)))

        # slices are along K (largest spacing, 3 mm): I and J are upsampled, i' -> i = (i' + 0.5) / 2 - 0.5
        indexMap = np.diag([0.5, 0.5, 1.0, 1.0])
        indexMap[:2, 3] = -0.25
        np.testing.assert_allclose(ijkToRas(outputVolume), OBLIQUE_IJK_TO_RAS @ indexMap, atol=1e-9)
        self.assertEqual(outputVolume.GetImageData().GetDimensions(), (48, 40, 4))
        self.assertEqual(slicer.util.arrayFromVolume(outputVolume).dtype, np.int16)
        self.assertEqual(outputVolume.GetName(), "Input_bicubic_x2")
        self.assertEqual(outputVolume.GetClassName(), "vtkMRMLScalarVolumeNode")
        self.assertEqual(outputVolume.GetTransformNodeID(), transform.GetID())
        self.assertEqual(shNode.GetItemParent(shNode.GetItemByDataNode(outputVolume)), folder)
        self.assertIsNotNone(outputVolume.GetDisplayNode())
        self.assertEqual(seen[-1], (4, 4))
        # the input is untouched
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(inputVolume), voxels)
        np.testing.assert_allclose(ijkToRas(inputVolume), OBLIQUE_IJK_TO_RAS, atol=1e-12)

    def test_output_equals_medsrlib_on_the_same_voxels_and_geometry(self):
        self.requireTorch()
        from MedSRLib.geometry import ijk_to_ras_matrix, volume_from_slicer_arrays
        from MedSRLib.pipeline import super_resolve

        voxels = testVoxels(dtype=np.float32)
        expected = super_resolve(volume_from_slicer_arrays(voxels, OBLIQUE_IJK_TO_RAS), model="bicubic", scale=3)
        outputVolume = MedSRLogic().process(self.addVolume(voxels), model="bicubic", scale=3)
        np.testing.assert_allclose(slicer.util.arrayFromVolume(outputVolume), expected.array, rtol=0, atol=1e-5)
        np.testing.assert_allclose(ijkToRas(outputVolume), ijk_to_ras_matrix(expected), atol=1e-9)

    def test_chosen_output_node_is_overwritten_and_keeps_its_name_once_it_has_voxels(self):
        self.requireTorch()
        inputVolume = self.addVolume(testVoxels())
        chosen = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Volume")
        logic = MedSRLogic()
        self.assertIs(logic.process(inputVolume, chosen, model="nearest", scale=2), chosen)
        self.assertEqual(chosen.GetName(), "Input_nearest_x2")  # was empty: named from input, model, scale
        chosen.SetName("Mine")
        logic.process(inputVolume, chosen, model="bicubic", scale=4)
        self.assertEqual(chosen.GetName(), "Mine")
        self.assertEqual(chosen.GetImageData().GetDimensions(), (96, 80, 4))

    # -- bad input: a specific exception, nothing created, input untouched ------------------------------
    def test_no_input_volume_is_refused(self):
        self.assertRefusedWithNothingWritten(NodeError, None)

    def test_empty_volume_node_is_refused(self):
        empty = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Empty")
        self.assertRefusedWithNothingWritten(NodeError, empty)

    def test_labelmap_is_refused(self):
        labels = self.addVolume((testVoxels() > 100).astype(np.uint8), className="vtkMRMLLabelMapVolumeNode")
        error = self.assertRefusedWithNothingWritten(UnsupportedImageError, labels)
        self.assertIn("labelmap", str(error))

    def test_vector_volume_is_refused(self):
        rgb = np.stack([np.clip(testVoxels(), 0, 255).astype(np.uint8)] * 3, axis=-1)
        vector = self.addVolume(rgb, className="vtkMRMLVectorVolumeNode")
        error = self.assertRefusedWithNothingWritten(UnsupportedImageError, vector)
        self.assertIn("vector", str(error))

    def test_output_equal_to_input_is_refused(self):
        inputVolume = self.addVolume(testVoxels())
        self.assertRefusedWithNothingWritten(NodeError, inputVolume, outputVolume=inputVolume)

    def test_scale_the_model_does_not_support_is_refused(self):
        self.requireTorch()
        from MedSRLib.models import list_models

        spec, scale = next((s, n) for s in list_models() for n in range(2, 9) if n not in s.scales)
        inputVolume = self.addVolume(testVoxels())
        error = self.assertRefusedWithNothingWritten(ScaleError, inputVolume, model=spec.name, scale=scale)
        self.assertIn(spec.name, str(error))

    def test_cancel_midway_leaves_no_output_node_and_the_input_untouched(self):
        self.requireTorch()
        inputVolume = self.addVolume(testVoxels(shapeKJI=(12, 40, 48)))
        progressReports = []
        self.assertRefusedWithNothingWritten(
            CancelledError, inputVolume, model="bicubic", scale=2, memoryBudgetMB=1,
            progress=lambda done, total: progressReports.append(done),
            cancel=lambda: bool(progressReports) and progressReports[-1] > 0,
        )
        self.assertGreater(progressReports[-1], 0)  # it was cancelled after some slices were done
        self.assertLess(progressReports[-1], 12)
