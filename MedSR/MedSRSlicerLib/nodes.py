"""Slicer volume nodes <-> MedSRLib volumes, and where the output node goes.

Conventions (slicer-conventions.md sections 3.2-3.8): a volume node keeps its geometry itself as an
IJK-to-RAS matrix (RAS, mm); ``slicer.util.arrayFromVolume`` gives its voxels as a ``(k, j, i)`` view,
which is MedSRLib's ``(z, y, x)``. The conversion RAS <-> ITK LPS is done only by
``MedSRLib.geometry`` (``volume_from_slicer_arrays``, ``ijk_to_ras_matrix``); this module only moves
matrices and arrays between Slicer and MedSRLib.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from MedSRLib.errors import MedSRError, UnsupportedImageError

#: The only node class MedSR reads and writes (exact class: labelmaps and vectors are subclasses).
SCALAR_VOLUME_CLASS = "vtkMRMLScalarVolumeNode"

#: What other volume classes hold, for the error message.
UNSUPPORTED_VOLUME_KINDS = {
    "vtkMRMLLabelMapVolumeNode": "a labelmap (segment labels, not intensities)",
    "vtkMRMLVectorVolumeNode": "a vector (multi-component, e.g. RGB) volume",
    "vtkMRMLMultiVolumeNode": "a 4D multi-volume",
    "vtkMRMLDiffusionWeightedVolumeNode": "a 4D diffusion-weighted volume",
    "vtkMRMLDiffusionTensorVolumeNode": "a diffusion tensor volume",
}

#: numpy dtypes ``slicer.util.updateVolumeFromArray`` cannot store (slicer-conventions.md 3.4).
DTYPES_SLICER_CANNOT_STORE = (np.int64, np.uint64, np.bool_, np.float16)


class NodeError(MedSRError):
    """A node is missing, has no voxels, or cannot receive the result (e.g. the output is the input)."""


def checkInputVolume(inputVolume) -> None:
    """Raise unless ``inputVolume`` is a scalar volume node with single-component 3D voxels.

    Raises:
        NodeError: no node, or a node without voxels.
        UnsupportedImageError: labelmap, vector, 4D or tensor volume, or several scalar components.
    """
    if inputVolume is None:
        raise NodeError("No input volume: select the scalar volume to super-resolve.")
    name = inputVolume.GetName()
    if inputVolume.GetScene() is not slicer.mrmlScene:
        raise NodeError(f"'{name}' is not in the scene (deleted?): select the volume to super-resolve.")
    className = inputVolume.GetClassName()
    if className != SCALAR_VOLUME_CLASS:
        kind = UNSUPPORTED_VOLUME_KINDS.get(className, f"a {className}")
        raise UnsupportedImageError(
            f"'{name}' is {kind}; MedSR super-resolves single-component 3D scalar (intensity) volumes only."
        )
    image = inputVolume.GetImageData()
    if image is None or min(image.GetDimensions()) < 1:
        raise NodeError(f"'{name}' has no voxels (empty volume node): load or compute an image first.")
    if image.GetNumberOfScalarComponents() != 1:
        raise UnsupportedImageError(
            f"'{name}' has {image.GetNumberOfScalarComponents()} components per voxel; "
            "MedSR super-resolves single-component scalar volumes only (extract one component first)."
        )


def checkOutputVolume(outputVolume, inputVolume) -> None:
    """Raise unless ``outputVolume`` is None (create one) or a scalar volume node other than the input."""
    if outputVolume is None:
        return
    if outputVolume.GetScene() is not slicer.mrmlScene:
        raise NodeError(f"The output volume '{outputVolume.GetName()}' is not in the scene: choose another output.")
    if inputVolume is not None and outputVolume.GetID() == inputVolume.GetID():
        raise NodeError(
            "The output volume is the input volume: choose 'Create new volume' or another output, "
            "so that the input is kept unchanged."
        )
    if outputVolume.GetClassName() != SCALAR_VOLUME_CLASS:
        raise NodeError(
            f"The output '{outputVolume.GetName()}' is a {outputVolume.GetClassName()}; choose a scalar volume "
            "or 'Create new volume'."
        )


def checkStillInScene(inputVolume, outputVolume) -> None:
    """Raise :class:`NodeError` when the input or the chosen output left the scene (deleted, scene closed).

    Called after a long run, before anything is written: writing into a deleted node would put the
    result into a node outside the scene, silently.
    """
    if inputVolume.GetScene() is not slicer.mrmlScene:
        raise NodeError(
            f"The input volume '{inputVolume.GetName()}' was deleted while MedSR ran: nothing was written."
        )
    if outputVolume is not None and outputVolume.GetScene() is not slicer.mrmlScene:
        raise NodeError(
            f"The output volume '{outputVolume.GetName()}' was deleted while MedSR ran: nothing was written. "
            "Choose an output (or 'Create new volume') and run again."
        )


def ijkToRasArray(volumeNode) -> np.ndarray:
    """The node's 4x4 IJK-to-RAS matrix as a numpy array (a copy)."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def localToWorldRas(volumeNode, point) -> np.ndarray:
    """World RAS of ``point`` given in the node's local RAS: through its parent transforms, linear or not.

    slicer-conventions.md 3.7: a node's IJK-to-RAS is in its local frame; the slice views show world RAS.
    """
    point = np.asarray(point, dtype=np.float64)
    parent = volumeNode.GetParentTransformNode()
    if parent is None:
        return point
    toWorld = vtk.vtkGeneralTransform()
    parent.GetTransformToWorld(toWorld)
    return np.array(toWorld.TransformPoint([float(v) for v in point]))


def volumeFromNode(volumeNode):
    """A MedSRLib ``Volume`` with a **copy** of the node's voxels (k, j, i) and its geometry (LPS).

    The copy keeps the input node untouched even if another module edits it during a long run.
    """
    from MedSRLib.geometry import volume_from_slicer_arrays

    voxels = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
    return volume_from_slicer_arrays(voxels, ijkToRasArray(volumeNode), metadata={"slicer_node": volumeNode.GetName()})


def modalityOf(volumeNode) -> str:
    """"CT" or "MR" as MedSRLib guesses it for this node's voxels (``intensity.guess_modality``: the volume
    MedSRLib receives carries no modality, so this is what a run decides); reads the voxels, no copy."""
    from MedSRLib.geometry import volume_from_slicer_arrays
    from MedSRLib.intensity import guess_modality

    voxels = slicer.util.arrayFromVolume(volumeNode)
    return guess_modality(volume_from_slicer_arrays(voxels, ijkToRasArray(volumeNode)))


def gridFromNode(volumeNode):
    """The node's voxel grid as a ``MedSRLib.geometry.Grid`` (shape (k, j, i), spacing, LPS origin and
    direction), without reading its voxels: what the panel needs to plan a run."""
    from MedSRLib.geometry import Grid, geometry_from_ijk_to_ras

    spacing, origin, direction = geometry_from_ijk_to_ras(ijkToRasArray(volumeNode))
    shapeKJI = tuple(int(n) for n in reversed(volumeNode.GetImageData().GetDimensions()))
    return Grid(shape=shapeKJI, spacing=spacing, origin=origin, direction=direction)


def outputDtypeFor(voxels: np.ndarray) -> str:
    """MedSRLib ``output_dtype``: keep the input's dtype unless Slicer could not store it (then float32)."""
    return "float32" if voxels.dtype in DTYPES_SLICER_CANNOT_STORE else "input"


def outputName(inputVolume, modelName: str, scale: float) -> str:
    """``<input>_<model>_x<scale>`` (``x2``; a through-plane factor as ``x4.8``), made unique in the scene."""
    return slicer.mrmlScene.GenerateUniqueName(f"{inputVolume.GetName()}_{modelName}_x{float(scale):.3g}")


def prepareOutputNode(outputVolume, inputVolume, modelName: str, scale: float):
    """The node that receives the result: ``outputVolume``, or a new scalar volume named from the input.

    A chosen node that holds no voxels yet (just created with "Create new volume") is renamed the same way.
    """
    if outputVolume is None:
        return slicer.mrmlScene.AddNewNodeByClass(SCALAR_VOLUME_CLASS, outputName(inputVolume, modelName, scale))
    if outputVolume.GetImageData() is None:
        outputVolume.SetName(outputName(inputVolume, modelName, scale))
    return outputVolume


def writeVolumeToNode(volume, volumeNode) -> None:
    """Store a MedSRLib ``Volume`` (voxels and geometry) in ``volumeNode``; ``volume`` is not kept."""
    from MedSRLib.geometry import ijk_to_ras_matrix

    wasModifying = volumeNode.StartModify()
    try:
        volumeNode.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras_matrix(volume)))
        slicer.util.updateVolumeFromArray(volumeNode, volume.array)
    finally:
        volumeNode.EndModify(wasModifying)


def placeBesideInput(outputVolume, inputVolume) -> None:
    """Same parent transform (not hardened) and same subject-hierarchy folder as the input."""
    outputVolume.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    inputItem = shNode.GetItemByDataNode(inputVolume)
    outputItem = shNode.GetItemByDataNode(outputVolume)
    if inputItem and outputItem:
        shNode.SetItemParent(outputItem, shNode.GetItemParent(inputItem))


def showInSliceViews(volumeNode) -> None:
    """Default display (grey, auto window/level) and the volume as background of every slice view."""
    volumeNode.CreateDefaultDisplayNodes()
    slicer.util.setSliceViewerLayers(background=volumeNode, fit=True)
