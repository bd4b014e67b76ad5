"""Slicer facts MedSR relies on, checked on slicer-core's real MRML (slicer-conventions.md sections 3 and 7).

Slicer's real archetype reader (``vtkSlicerVolumesLogic.AddArchetypeVolume``, behind the shim's
``loadVolume``): LPS -> RAS flip and right-handed K reversal; Slicer's real ``updateVolumeFromArray``
refusals; real scene naming; and the rules of the ``parameterNodeWrapper`` shim (the one piece here
that is not Slicer's own code). The array-view, deep-copy and IJK-to-RAS rules are in the shared
contract test, which also runs in real Slicer.
"""

from typing import Annotated

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import shared_path
from slicer_double import medsr  # noqa: F401  (fixture)


def ijk_to_ras(node):
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def test_loadVolume_puts_voxels_where_itk_does_with_x_and_y_negated(medsr):
    import slicer

    path = shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz")
    image = sitk.ReadImage(str(path))
    node = slicer.util.loadVolume(str(path))
    assert node.GetName() == "t1_fl2d_sag_LPS"
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), sitk.GetArrayFromImage(image))
    for ijk in [(0, 0, 0), (34, 0, 0), (3, 200, 17), (34, 255, 255)]:
        lps = np.array(image.TransformIndexToPhysicalPoint(ijk))
        ras = (ijk_to_ras(node) @ [*ijk, 1])[:3]
        np.testing.assert_allclose(ras, lps * [-1, -1, 1], atol=1e-4)


def test_loadVolume_reverses_k_of_a_left_handed_file_keeping_physical_positions(medsr):
    import slicer

    path = shared_path("mr-volumes", "t1_fl2d_sag_LAS.nii.gz")
    image = sitk.ReadImage(str(path))
    assert np.linalg.det(np.reshape(image.GetDirection(), (3, 3))) < 0  # left-handed on disk
    node = slicer.util.loadVolume(str(path))
    directions = np.zeros((3, 3))
    node.GetIJKToRASDirections(directions)
    assert np.linalg.det(directions) > 0
    voxels, on_disk = slicer.util.arrayFromVolume(node), sitk.GetArrayFromImage(image)
    n_k = on_disk.shape[0]
    np.testing.assert_array_equal(voxels, on_disk[::-1])
    for i, j, k in [(0, 0, 0), (5, 17, 200), (34, 255, 255)]:
        lps = np.array(image.TransformIndexToPhysicalPoint((i, j, n_k - 1 - k)))
        np.testing.assert_allclose((ijk_to_ras(node) @ [i, j, k, 1])[:3], lps * [-1, -1, 1], atol=1e-4)


def test_updateVolumeFromArray_refuses_what_slicer_cannot_store(medsr):
    import slicer

    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    with pytest.raises(RuntimeError, match="long long"):
        slicer.util.updateVolumeFromArray(node, np.zeros((2, 3, 4), dtype=np.int64))
    for dtype in (np.bool_, np.float16):
        with pytest.raises(TypeError):
            slicer.util.updateVolumeFromArray(node, np.zeros((2, 3, 4), dtype=dtype))
    slicer.util.updateVolumeFromArray(node, np.ones((3, 4), dtype=np.int16))  # 2-D: one float64 slice
    assert node.GetImageData().GetDimensions() == (4, 3, 1)
    assert slicer.util.arrayFromVolume(node).dtype == np.float64


def test_scene_names_ids_and_fresh_node_geometry(medsr):
    import slicer

    scene = slicer.mrmlScene
    first = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    second = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    named = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "Volume")  # a given name is not made unique
    assert (first.GetName(), second.GetName(), named.GetName()) == ("Volume", "Volume_1", "Volume")
    assert (first.GetID(), second.GetID()) == ("vtkMRMLScalarVolumeNode1", "vtkMRMLScalarVolumeNode2")
    assert scene.GenerateUniqueName("Volume") == "Volume_2"
    assert first.GetImageData() is None and first.GetDisplayNode() is None
    assert first.GetTransformNodeID() is None and first.GetParentTransformNode() is None
    np.testing.assert_array_equal(ijk_to_ras(first), np.eye(4))
    with pytest.raises(TypeError):  # VTK wrapping does not accept numpy for a vtkMatrix4x4
        first.SetIJKToRASMatrix(np.eye(4))
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    assert isinstance(labelmap, slicer.vtkMRMLScalarVolumeNode)  # subclass, as in Slicer
    assert scene.AddNewNodeByClass("vtkMRMLNoSuchNode") is None


def test_parameter_node_wrapper_writes_defaults_once_and_validates(medsr):
    import slicer
    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

    @parameterNodeWrapper
    class Parameters:
        volume: slicer.vtkMRMLScalarVolumeNode
        factor: Annotated[int, Choice([2, 4])] = 4
        budget: Annotated[int, WithinRange(0, 10)] = 0
        flag: bool = True

    raw = slicer.mrmlScene.AddNode(slicer.vtkMRMLScriptedModuleNode())
    raw.SetParameter("factor", "2")  # a value from a loaded scene is kept
    parameters = Parameters(raw)
    assert (parameters.factor, parameters.budget, parameters.flag, parameters.volume) == (2, 0, True, None)
    assert raw.GetParameter("flag") == "True"
    with pytest.raises(ValueError):
        parameters.factor = 3
    with pytest.raises(ValueError):
        parameters.budget = 11
    volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    parameters.volume = volume
    assert raw.GetNodeReferenceID("volume") == volume.GetID() and Parameters(raw).volume is volume


def test_saveNode_writes_the_target_file_not_the_file_the_node_was_read_from(medsr, tmp_path):
    """Slicer's reader leaves a storage node pointing at the input file; writing must never go there."""
    import shutil

    import slicer

    source = tmp_path / "input.nii.gz"
    shutil.copy(shared_path("mr-volumes", "t1_fl2d_sag_LPS.nii.gz"), source)
    before = source.read_bytes()
    node = slicer.util.loadVolume(str(source))
    assert node.GetStorageNode().GetFileName() == str(source)
    assert slicer.util.saveNode(node, str(tmp_path / "out.nrrd"))
    assert source.read_bytes() == before
    written = sitk.ReadImage(str(tmp_path / "out.nrrd"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), slicer.util.arrayFromVolume(node))
    with pytest.raises(RuntimeError, match="protected input data"):
        slicer.util.saveNode(node, str(shared_path("mr-volumes") / "never_written.nrrd"))
    assert not (shared_path("mr-volumes") / "never_written.nrrd").exists()
