"""``slicer.util`` double: array access, matrices, dialogs (logged, recorded), file load/save.

Array rules (slicer-conventions.md 3.4, Slicer/Slicer ``Base/Python/slicer/util.py``):

* ``arrayFromVolume`` returns a **view** on the VTK scalars, shape ``(nK, nJ, nI)`` (+ components),
  dispatching on the exact node class name;
* ``updateVolumeFromArray`` **deep-copies**, sets dimensions to the reversed shape, never touches
  origin/spacing/directions/transform; 2-D/1-D input becomes one float64 slice; int64 is rejected
  with ``RuntimeError``, bool/float16 with ``TypeError``.

File I/O follows the reader/writer of section 3.5: ITK (LPS) geometry -> ``IJKToRAS = F . IJKToLPS``
with ``F = diag(-1, -1, 1)``, and a left-handed IJK frame is made right-handed by reversing K
(section 3.3, ``ForceRightHandedIJKCoordinateSystem``). Dialogs never pop up: they are logged and
appended to :data:`displayedMessages`; ``confirmOkCancelDisplay`` returns True in testing mode and
:data:`confirmAnswer` otherwise. ``pip_install`` records its arguments in :data:`pipInstallCalls` and
installs nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import numpy as np
from vtkmodules.util import numpy_support
from vtkmodules.vtkCommonDataModel import vtkImageData
from vtkmodules.vtkCommonMath import vtkMatrix4x4

import slicer

from .mrml import vtkMRMLNode, vtkMRMLVolumeNode

SCALAR_TYPES = ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode")
VECTOR_TYPES = ("vtkMRMLVectorVolumeNode", "vtkMRMLMultiVolumeNode", "vtkMRMLDiffusionWeightedVolumeNode")
TENSOR_TYPES = ("vtkMRMLDiffusionTensorVolumeNode",)
LPS_RAS_FLIP = np.diag([-1.0, -1.0, 1.0])

#: Every dialog text shown, as ``(kind, text)``; kinds: error, warning, info, confirm.
displayedMessages: list[tuple[str, str]] = []
#: What ``confirmOkCancelDisplay`` answers outside testing mode.
confirmAnswer = False
#: Arguments of every ``pip_install`` call (nothing is installed).
pipInstallCalls: list[Any] = []
#: Keyword arguments of every ``setSliceViewerLayers`` call.
sliceViewerLayersCalls: list[dict] = []


def resetRecords() -> None:
    """Forget recorded dialogs, pip calls and slice-view calls (test isolation)."""
    global confirmAnswer
    displayedMessages.clear()
    pipInstallCalls.clear()
    sliceViewerLayersCalls.clear()
    confirmAnswer = False


# --------------------------------------------------------------------------------------------------
# numpy <-> volume


def arrayFromVolume(volumeNode: vtkMRMLVolumeNode) -> np.ndarray:
    """View ``(nK, nJ, nI[, C])`` on the node's voxels (writes go straight into the node)."""
    className = volumeNode.GetClassName()
    image = volumeNode.GetImageData()
    if className not in SCALAR_TYPES + VECTOR_TYPES + TENSOR_TYPES:
        raise RuntimeError(f"Unsupported volume type: {className}")
    if image is None:
        raise AttributeError("'NoneType' object has no attribute 'GetPointData'")
    shape = tuple(reversed(image.GetDimensions()))
    components = image.GetNumberOfScalarComponents()
    if className in TENSOR_TYPES:
        shape = shape + (3, 3)
    elif components > 1:
        shape = shape + (components,)
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(shape)


def arrayFromVolumeModified(volumeNode: vtkMRMLVolumeNode) -> None:
    volumeNode.GetImageData().GetPointData().GetScalars().Modified()
    volumeNode.Modified()


def updateVolumeFromArray(volumeNode: vtkMRMLVolumeNode, narray: np.ndarray) -> None:
    """Copy ``narray`` (k, j, i[, C]) into the node; geometry and transform are left as they are."""
    narray = np.asarray(narray)
    if narray.ndim == 1:
        narray = np.tile(narray.astype(np.float64), (1, 1, 1))
    elif narray.ndim == 2:
        narray = narray.astype(np.float64)[np.newaxis]
    if narray.ndim not in (3, 4):
        raise RuntimeError(f"Unsupported numpy array shape: {narray.shape}")
    if narray.dtype in (np.bool_, np.float16):
        raise TypeError(f"Unsupported numpy array type: {narray.dtype}")
    if narray.dtype in (np.int64, np.uint64):
        raise RuntimeError("Unsupported numpy array type: long long")
    components = narray.shape[3] if narray.ndim == 4 else 1
    image = volumeNode.GetImageData()
    isNew = image is None
    if isNew:
        image = vtkImageData()
    image.SetDimensions(*reversed(narray.shape[:3]))
    image.AllocateScalars(numpy_support.get_vtk_array_type(narray.dtype), components)
    view = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(narray.shape)
    view[...] = narray
    image.Modified()
    if isNew:
        volumeNode.SetAndObserveImageData(image)
    else:
        volumeNode.Modified()


def addVolumeFromArray(narray, ijkToRAS=None, name=None, nodeClassName=None) -> vtkMRMLVolumeNode:
    """New volume node in the scene holding a copy of ``narray`` (k, j, i), with display nodes."""
    node = slicer.mrmlScene.AddNewNodeByClass(nodeClassName or "vtkMRMLScalarVolumeNode", name or "")
    if ijkToRAS is not None:
        node.SetIJKToRASMatrix(ijkToRAS if isinstance(ijkToRAS, vtkMatrix4x4) else vtkMatrixFromArray(ijkToRAS))
    updateVolumeFromArray(node, narray)
    node.CreateDefaultDisplayNodes()
    return node


# --------------------------------------------------------------------------------------------------
# matrices


def arrayFromVTKMatrix(vmatrix: vtkMatrix4x4) -> np.ndarray:
    """4x4 numpy copy of a vtkMatrix4x4."""
    return np.array([[vmatrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def vtkMatrixFromArray(narray) -> vtkMatrix4x4:
    """vtkMatrix4x4 copy of a 3x3 or 4x4 array (3x3 goes in the upper-left block)."""
    narray = np.asarray(narray, dtype=np.float64)
    if narray.shape not in ((3, 3), (4, 4)):
        raise RuntimeError(f"Unsupported numpy array shape: {narray.shape}; 3x3 or 4x4 expected")
    matrix = vtkMatrix4x4()
    updateVTKMatrixFromArray(matrix, narray)
    return matrix


def updateVTKMatrixFromArray(vmatrix: vtkMatrix4x4, narray) -> None:
    narray = np.asarray(narray, dtype=np.float64)
    for r in range(narray.shape[0]):
        for c in range(narray.shape[1]):
            vmatrix.SetElement(r, c, float(narray[r, c]))


# --------------------------------------------------------------------------------------------------
# scene helpers


def getNode(pattern: str) -> vtkMRMLNode:
    node = slicer.mrmlScene.GetNodeByID(pattern) or slicer.mrmlScene.GetFirstNodeByName(pattern)
    if node is None:
        raise slicer.util.MRMLNodeNotFoundException(f"could not find nodes in the scene by name or id '{pattern}'")
    return node


class MRMLNodeNotFoundException(Exception):
    pass


@contextlib.contextmanager
def NodeModify(node: vtkMRMLNode):
    wasModifying = node.StartModify()
    try:
        yield node
    finally:
        node.EndModify(wasModifying)


def setSliceViewerLayers(background="keep-current", foreground="keep-current", label="keep-current",
                         foregroundOpacity=None, labelOpacity=None, fit=False, rotateToVolumePlane=False) -> None:
    """Recorded only: the double has no slice views."""
    sliceViewerLayersCalls.append(
        {"background": background, "foreground": foreground, "label": label, "foregroundOpacity": foregroundOpacity,
         "labelOpacity": labelOpacity, "fit": fit, "rotateToVolumePlane": rotateToVolumePlane}
    )


def mainWindow():
    return None


# --------------------------------------------------------------------------------------------------
# dialogs (never shown; recorded)


def _record(kind: str, text: str, level: int) -> None:
    displayedMessages.append((kind, str(text)))
    logging.log(level, text)


def errorDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs) -> None:
    _record("error", text, logging.ERROR)


def warningDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs) -> None:
    _record("warning", text, logging.WARNING)


def infoDisplay(text, windowTitle=None, parent=None, standardButtons=None, **kwargs) -> None:
    _record("info", text, logging.INFO)


def confirmOkCancelDisplay(text, windowTitle=None, parent=None, **kwargs) -> bool:
    _record("confirm", text, logging.INFO)
    return True if slicer.app.testingEnabled() else confirmAnswer


def showStatusMessage(message, duration=0) -> None:
    logging.info(message)


@contextlib.contextmanager
def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
    """Show (record) the error, then re-raise it, as Slicer does."""
    try:
        yield
    except Exception as error:
        if show and not slicer.app.testingEnabled():
            errorDisplay(f"{message}\n\n{error}" if message else str(error))
        raise


def pip_install(requirements, **kwargs) -> None:
    """Recorded; installs nothing."""
    pipInstallCalls.append(requirements)


def loadUI(path):
    raise RuntimeError("the slicer test double has no Qt: widgets load only in real Slicer")


# --------------------------------------------------------------------------------------------------
# files (the ITK reader/writer of slicer-conventions.md 3.5)


def loadVolume(filename: str, properties: dict | None = None, returnNode: bool = False) -> vtkMRMLVolumeNode:
    """Read a scalar volume like Slicer's archetype reader: LPS -> RAS, K reversed if left-handed."""
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(filename))
    except RuntimeError as error:
        raise RuntimeError(f"Failed to load node from file: {filename}") from error
    array = sitk.GetArrayFromImage(image)
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise RuntimeError(f"Failed to load node from file: {filename} (not a 3D scalar image)")
    spacing = np.asarray(image.GetSpacing())
    directionLPS = np.asarray(image.GetDirection()).reshape(3, 3)
    originLPS = np.asarray(image.GetOrigin())
    if np.linalg.det(directionLPS) < 0:  # ForceRightHandedIJKCoordinateSystem: reverse K
        originLPS = originLPS + (array.shape[0] - 1) * spacing[2] * directionLPS[:, 2]
        directionLPS = directionLPS.copy()
        directionLPS[:, 2] *= -1
        array = array[::-1]
    ijkToRAS = np.eye(4)
    ijkToRAS[:3, :3] = LPS_RAS_FLIP @ directionLPS * spacing
    ijkToRAS[:3, 3] = LPS_RAS_FLIP @ originLPS
    name = os.path.basename(str(filename)).split(".")[0]
    return addVolumeFromArray(np.ascontiguousarray(array), ijkToRAS=ijkToRAS, name=name)


def saveNode(node: vtkMRMLVolumeNode, filename: str, properties: dict | None = None) -> bool:
    """Write a volume node with its geometry in LPS (the writer's RAS -> LPS flip)."""
    import SimpleITK as sitk

    matrix = vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    ijkToLPS = LPS_RAS_FLIP @ arrayFromVTKMatrix(matrix)[:3]
    spacing = np.linalg.norm(ijkToLPS[:, :3], axis=0)
    image = sitk.GetImageFromArray(arrayFromVolume(node))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (ijkToLPS[:, :3] / spacing).ravel()))
    image.SetOrigin(tuple(float(v) for v in ijkToLPS[:, 3]))
    try:
        sitk.WriteImage(image, str(filename))
    except RuntimeError:
        return False
    return True


# --------------------------------------------------------------------------------------------------
# observation mixin (used by widgets)


class VTKObservationMixin:
    def __init__(self) -> None:
        self.Observations: list[tuple[Any, int, Any, int]] = []

    def addObserver(self, obj, event, method, group="none", priority=0.0) -> None:
        self.Observations.append((obj, event, method, obj.AddObserver(event, method, priority)))

    def removeObserver(self, obj, event, method) -> None:
        for entry in list(self.Observations):
            if entry[0] is obj and entry[1] == event and entry[2] == method:
                obj.RemoveObserver(entry[3])
                self.Observations.remove(entry)

    def removeObservers(self, method=None) -> None:
        for obj, event, observed, tag in list(self.Observations):
            if method is None or observed == method:
                obj.RemoveObserver(tag)
                self.Observations.remove((obj, event, observed, tag))

    def hasObserver(self, obj, event, method) -> bool:
        return any(e[0] is obj and e[1] == event and e[2] == method for e in self.Observations)
