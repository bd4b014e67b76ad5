"""MRML node and scene doubles: the part of Slicer's MRML the MedSR logic touches, on real VTK.

Behaviour follows the design notes slicer-conventions.md (Slicer/Slicer ``Libs/MRML/Core``):

* a volume node stores origin, spacing and the 3x3 IJK-to-RAS direction matrix itself (section 3.2);
  its ``vtkImageData`` holds only voxels and dimensions (origin 0, spacing 1);
* ``IJKToRAS[r][c] = spacing[c] * D[r][c]``, ``IJKToRAS[r][3] = origin[r]``; ``SetIJKToRASMatrix``
  decomposes a matrix into column norms (spacing), unit columns (directions) and the last column
  (origin) (section 3.3);
* ``AddNode`` names a node only when its name is empty ("Volume", "Volume_1", ...), IDs are
  ``className + N`` (section 3.8); every data node gets a subject-hierarchy item under the scene item.

Only what a logic test needs is here; anything else raises ``AttributeError`` like a missing API would.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from vtkmodules.vtkCommonCore import vtkCommand
from vtkmodules.vtkCommonDataModel import vtkImageData
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkCommonTransforms import vtkGeneralTransform


class vtkMRMLNode:
    """Name, ID, attributes, modified counter and ModifiedEvent observers."""

    nodeTagName = "Node"

    def __init__(self) -> None:
        self._name = ""
        self._id: str | None = None
        self._scene: vtkMRMLScene | None = None
        self._attributes: dict[str, str] = {}
        self._mtime = 0
        self._modifyDepth = 0
        self._modifiedWhileDisabled = False
        self._observers: dict[int, tuple[int, object]] = {}
        self._nextObserverTag = 1
        self._hideFromEditors = False

    # identity ----------------------------------------------------------------------------------
    def GetClassName(self) -> str:
        return type(self).__name__

    def IsA(self, className: str) -> bool:
        return any(cls.__name__ == className for cls in type(self).__mro__)

    def GetName(self) -> str:
        return self._name

    def SetName(self, name: str) -> None:
        if name != self._name:
            self._name = str(name)
            self.Modified()

    def GetID(self) -> str | None:
        return self._id

    def GetScene(self) -> "vtkMRMLScene | None":
        return self._scene

    def SetAttribute(self, name: str, value: str) -> None:
        self._attributes[name] = str(value)

    def GetAttribute(self, name: str) -> str | None:
        return self._attributes.get(name)

    def SetSingletonTag(self, tag: str | None) -> None:
        self._singletonTag = tag

    def GetSingletonTag(self) -> str | None:
        return getattr(self, "_singletonTag", None)

    def SetHideFromEditors(self, hide: bool) -> None:
        self._hideFromEditors = bool(hide)

    def GetHideFromEditors(self) -> bool:
        return self._hideFromEditors

    # modification ------------------------------------------------------------------------------
    def GetMTime(self) -> int:
        """Increases on every effective modification (what tests use to prove a node was untouched)."""
        return self._mtime

    def Modified(self) -> None:
        self._mtime += 1
        if self._modifyDepth:
            self._modifiedWhileDisabled = True
            return
        for event, callback in list(self._observers.values()):
            if event in (vtkCommand.ModifiedEvent, vtkCommand.AnyEvent):
                callback(self, "ModifiedEvent")

    def StartModify(self) -> int:
        self._modifyDepth += 1
        return self._modifyDepth - 1

    def EndModify(self, previous: int) -> None:
        self._modifyDepth = previous
        if not previous and self._modifiedWhileDisabled:
            self._modifiedWhileDisabled = False
            self._mtime -= 1  # Modified() below counts it once
            self.Modified()

    def AddObserver(self, event: int, callback, priority: float = 0.0) -> int:
        tag = self._nextObserverTag
        self._nextObserverTag += 1
        self._observers[tag] = (event, callback)
        return tag

    def RemoveObserver(self, tag: int) -> None:
        self._observers.pop(tag, None)


class vtkMRMLDisplayNode(vtkMRMLNode):
    """Holds the colour node reference (an ID; the double keeps no colour table nodes)."""

    nodeTagName = "Display"

    def __init__(self) -> None:
        super().__init__()
        self._colorNodeID: str | None = None

    def SetAndObserveColorNodeID(self, colorNodeID: str | None) -> None:
        if colorNodeID != self._colorNodeID:
            self._colorNodeID = colorNodeID
            self.Modified()

    def GetColorNodeID(self) -> str | None:
        return self._colorNodeID


class vtkMRMLVolumeDisplayNode(vtkMRMLDisplayNode):
    nodeTagName = "VolumeDisplay"


class vtkMRMLScalarVolumeDisplayNode(vtkMRMLVolumeDisplayNode):
    """Grey colour map and automatic window/level by default (``SetDefaultColorMap``, ``AutoWindowLevel=1``).

    Slicer computes the automatic window/level from the voxels' histogram; the double does not, so only
    values set explicitly (after ``SetAutoWindowLevel(0)``) are meaningful here.
    """

    nodeTagName = "VolumeDisplay"

    def __init__(self) -> None:
        super().__init__()
        self._colorNodeID = "vtkMRMLColorTableNodeGrey"
        self._autoWindowLevel = 1
        self._window, self._level = 256.0, 128.0

    def SetAutoWindowLevel(self, auto: int) -> None:
        if int(auto) != self._autoWindowLevel:
            self._autoWindowLevel = int(auto)
            self.Modified()

    def GetAutoWindowLevel(self) -> int:
        return self._autoWindowLevel

    def SetWindowLevel(self, window: float, level: float) -> None:
        if (float(window), float(level)) != (self._window, self._level):
            self._window, self._level = float(window), float(level)
            self.Modified()

    def SetWindowLevelMinMax(self, minimum: float, maximum: float) -> None:
        self.SetWindowLevel(maximum - minimum, 0.5 * (maximum + minimum))

    def GetWindow(self) -> float:
        return self._window

    def GetLevel(self) -> float:
        return self._level

    def GetWindowLevelMin(self) -> float:
        return self._level - 0.5 * self._window

    def GetWindowLevelMax(self) -> float:
        return self._level + 0.5 * self._window


class vtkMRMLLabelMapVolumeDisplayNode(vtkMRMLVolumeDisplayNode):
    nodeTagName = "LabelMapVolumeDisplay"


class vtkMRMLVectorVolumeDisplayNode(vtkMRMLVolumeDisplayNode):
    nodeTagName = "VectorVolumeDisplay"


class vtkMRMLTransformableNode(vtkMRMLNode):
    """A node that can sit under a parent transform (the transform is observed, never applied)."""

    def __init__(self) -> None:
        super().__init__()
        self._transformNodeID: str | None = None

    def SetAndObserveTransformNodeID(self, transformNodeID: str | None) -> None:
        transformNodeID = transformNodeID or None
        if transformNodeID != self._transformNodeID:
            self._transformNodeID = transformNodeID
            self.Modified()

    def GetTransformNodeID(self) -> str | None:
        return self._transformNodeID

    def GetParentTransformNode(self) -> "vtkMRMLTransformNode | None":
        if self._transformNodeID is None or self._scene is None:
            return None
        return self._scene.GetNodeByID(self._transformNodeID)


class vtkMRMLTransformNode(vtkMRMLTransformableNode):
    nodeTagName = "Transform"

    def __init__(self) -> None:
        super().__init__()
        self._toParent = vtkMatrix4x4()

    def SetMatrixTransformToParent(self, matrix: vtkMatrix4x4) -> None:
        self._toParent.DeepCopy(matrix)
        self.Modified()

    def GetMatrixTransformToParent(self, matrix: vtkMatrix4x4) -> None:
        matrix.DeepCopy(self._toParent)

    def IsTransformToWorldLinear(self) -> bool:
        return True

    def GetMatrixTransformToWorld(self, matrix: vtkMatrix4x4) -> None:
        result = vtkMatrix4x4()
        result.DeepCopy(self._toParent)
        parent = self.GetParentTransformNode()
        while parent is not None:
            parentMatrix = vtkMatrix4x4()
            parent.GetMatrixTransformToParent(parentMatrix)
            vtkMatrix4x4.Multiply4x4(parentMatrix, result, result)
            parent = parent.GetParentTransformNode()
        matrix.DeepCopy(result)

    def GetTransformToWorld(self, transformToWorld: vtkGeneralTransform) -> None:
        """Fills a ``vtkGeneralTransform`` with the concatenated transforms to world (linear here)."""
        matrix = vtkMatrix4x4()
        self.GetMatrixTransformToWorld(matrix)
        transformToWorld.Identity()
        transformToWorld.Concatenate(matrix)


class vtkMRMLLinearTransformNode(vtkMRMLTransformNode):
    nodeTagName = "LinearTransform"


class vtkMRMLVolumeNode(vtkMRMLTransformableNode):
    """Geometry on the node (origin, spacing, directions), voxels in a vtkImageData."""

    nodeTagName = "Volume"
    displayNodeClass: type | None = None

    def __init__(self) -> None:
        super().__init__()
        self._origin = (0.0, 0.0, 0.0)
        self._spacing = (1.0, 1.0, 1.0)
        self._directions = np.eye(3)
        self._imageData: vtkImageData | None = None
        self._displayNodeID: str | None = None

    # geometry ----------------------------------------------------------------------------------
    def GetOrigin(self) -> tuple[float, float, float]:
        return self._origin

    def SetOrigin(self, *values) -> None:
        origin = tuple(float(v) for v in (values[0] if len(values) == 1 else values))
        if origin != self._origin:
            self._origin = origin
            self.Modified()

    def GetSpacing(self) -> tuple[float, float, float]:
        return self._spacing

    def SetSpacing(self, *values) -> None:
        spacing = tuple(float(v) for v in (values[0] if len(values) == 1 else values))
        if spacing != self._spacing:
            self._spacing = spacing
            self.Modified()

    def SetIJKToRASDirections(self, *values) -> None:
        """3x3 ``dirs[row][col]`` (rows R, A, S; columns I, J, K) or 9 numbers in row order."""
        flat = np.asarray(values[0] if len(values) == 1 else values, dtype=np.float64).reshape(3, 3)
        if not np.array_equal(flat, self._directions):
            self._directions = flat.copy()
            self.Modified()

    def GetIJKToRASDirections(self, directions) -> None:
        """Fills a 3x3 array in place."""
        directions[:] = self._directions

    def GetIJKToRASDirectionMatrix(self, matrix: vtkMatrix4x4) -> None:
        """Writes only the upper-left 3x3 of ``matrix``."""
        for row in range(3):
            for col in range(3):
                matrix.SetElement(row, col, float(self._directions[row, col]))

    def GetIJKToRASMatrix(self, matrix: vtkMatrix4x4) -> None:
        _requireMatrix(matrix)
        matrix.Identity()
        for row in range(3):
            for col in range(3):
                matrix.SetElement(row, col, self._spacing[col] * float(self._directions[row, col]))
            matrix.SetElement(row, 3, self._origin[row])

    def SetIJKToRASMatrix(self, matrix: vtkMatrix4x4) -> None:
        _requireMatrix(matrix)
        wasModifying = self.StartModify()
        spacing = []
        directions = np.zeros((3, 3))
        for col in range(3):
            column = [matrix.GetElement(row, col) for row in range(3)]
            norm = math.sqrt(sum(v * v for v in column))
            spacing.append(norm)
            directions[:, col] = [v / norm for v in column]  # a zero column divides by zero, as in Slicer
        self.SetSpacing(spacing)
        self.SetIJKToRASDirections(directions)
        self.SetOrigin([matrix.GetElement(row, 3) for row in range(3)])
        self.EndModify(wasModifying)

    def GetRASToIJKMatrix(self, matrix: vtkMatrix4x4) -> None:
        self.GetIJKToRASMatrix(matrix)
        matrix.Invert()

    def CopyOrientation(self, other: "vtkMRMLVolumeNode") -> None:
        matrix = vtkMatrix4x4()
        other.GetIJKToRASMatrix(matrix)
        self.SetIJKToRASMatrix(matrix)

    # voxels and display ------------------------------------------------------------------------
    def GetImageData(self) -> vtkImageData | None:
        return self._imageData

    def SetAndObserveImageData(self, imageData: vtkImageData | None) -> None:
        if imageData is not None and (
            tuple(imageData.GetOrigin()) != (0.0, 0.0, 0.0) or tuple(imageData.GetSpacing()) != (1.0, 1.0, 1.0)
        ):
            logging.warning("vtkMRMLVolumeNode::SetAndObserveImageData: image data origin/spacing are ignored")
        self._imageData = imageData
        self.Modified()

    def CreateDefaultDisplayNodes(self) -> None:
        if self.GetDisplayNode() is not None or self.displayNodeClass is None or self._scene is None:
            return
        display = self._scene.AddNewNodeByClass(self.displayNodeClass.__name__)
        self._displayNodeID = display.GetID()

    def GetDisplayNode(self) -> vtkMRMLDisplayNode | None:
        if self._displayNodeID is None or self._scene is None:
            return None
        return self._scene.GetNodeByID(self._displayNodeID)


class vtkMRMLScalarVolumeNode(vtkMRMLVolumeNode):
    displayNodeClass = vtkMRMLScalarVolumeDisplayNode


class vtkMRMLLabelMapVolumeNode(vtkMRMLScalarVolumeNode):
    displayNodeClass = vtkMRMLLabelMapVolumeDisplayNode


class vtkMRMLDiffusionWeightedVolumeNode(vtkMRMLScalarVolumeNode):
    pass


class vtkMRMLTensorVolumeNode(vtkMRMLScalarVolumeNode):
    pass


class vtkMRMLVectorVolumeNode(vtkMRMLTensorVolumeNode):
    displayNodeClass = vtkMRMLVectorVolumeDisplayNode


class vtkMRMLDiffusionTensorVolumeNode(vtkMRMLTensorVolumeNode):
    pass


class vtkMRMLSliceNode(vtkMRMLNode):
    """A slice view's plane: ``SliceToRAS`` (column 2 = normal, column 3 = centre), jump methods.

    ``JumpSliceByCentering``/``JumpSliceByOffsetting`` and the static ``JumpAllSlices`` follow
    Slicer/Slicer ``Libs/MRML/Core/vtkMRMLSliceNode.cxx`` with ActiveSlice 0 (the default). Slice nodes
    are view nodes: they get no subject-hierarchy item.
    """

    nodeTagName = "Slice"
    DefaultJumpSlice, CenteredJumpSlice, OffsetJumpSlice = -1, 0, 1

    def __init__(self) -> None:
        super().__init__()
        self._sliceToRAS = vtkMatrix4x4()
        self._jumpMode = self.OffsetJumpSlice
        self._viewGroup = 0

    def GetSliceToRAS(self) -> vtkMatrix4x4:
        return self._sliceToRAS

    def GetViewGroup(self) -> int:
        return self._viewGroup

    def SetViewGroup(self, group: int) -> None:
        self._viewGroup = int(group)

    def SetJumpModeToCentered(self) -> None:
        self._jumpMode = self.CenteredJumpSlice

    def JumpSlice(self, r: float, a: float, s: float) -> None:
        if self._jumpMode == self.CenteredJumpSlice:
            self.JumpSliceByCentering(r, a, s)
        else:
            self.JumpSliceByOffsetting(r, a, s)

    def JumpSliceByCentering(self, r: float, a: float, s: float) -> None:
        """Moves the slice centre to the point (the plane's orientation is kept)."""
        for row, value in enumerate((r, a, s)):
            self._sliceToRAS.SetElement(row, 3, float(value))
        self.Modified()

    def JumpSliceByOffsetting(self, r: float, a: float, s: float) -> None:
        """Moves the plane along its normal only, until it contains the point."""
        normal = [self._sliceToRAS.GetElement(row, 2) for row in range(3)]
        centre = [self._sliceToRAS.GetElement(row, 3) for row in range(3)]
        distance = sum((p - c) * n for p, c, n in zip((r, a, s), centre, normal))
        for row in range(3):
            self._sliceToRAS.SetElement(row, 3, centre[row] + distance * normal[row])
        self.Modified()

    @staticmethod
    def JumpAllSlices(scene: "vtkMRMLScene", r: float, a: float, s: float, jumpMode: int = -1,
                      viewGroup: int = -1, exclude: "vtkMRMLSliceNode | None" = None) -> None:
        for node in scene.GetNodesByClass("vtkMRMLSliceNode"):
            if node is exclude or (viewGroup >= 0 and viewGroup != node.GetViewGroup()):
                continue
            if jumpMode == vtkMRMLSliceNode.CenteredJumpSlice:
                node.JumpSliceByCentering(r, a, s)
            elif jumpMode == vtkMRMLSliceNode.OffsetJumpSlice:
                node.JumpSliceByOffsetting(r, a, s)
            else:
                node.JumpSlice(r, a, s)


class vtkMRMLScriptedModuleNode(vtkMRMLNode):
    """String parameters plus node references (what ``parameterNodeWrapper`` serialises into)."""

    nodeTagName = "ScriptedModule"

    def __init__(self) -> None:
        super().__init__()
        self._parameters: dict[str, str] = {}
        self._references: dict[str, str] = {}

    def GetParameter(self, name: str) -> str:
        return self._parameters.get(name, "")

    def SetParameter(self, name: str, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"SetParameter expects a string value; got {type(value).__name__}")
        if self._parameters.get(name) != value:
            self._parameters[name] = value
            self.Modified()

    def GetParameterNames(self) -> list[str]:
        return list(self._parameters)

    def SetNodeReferenceID(self, role: str, nodeID: str | None) -> None:
        if nodeID:
            self._references[role] = nodeID
        else:
            self._references.pop(role, None)
        self.Modified()

    def GetNodeReferenceID(self, role: str) -> str | None:
        return self._references.get(role)

    def GetNodeReference(self, role: str) -> vtkMRMLNode | None:
        nodeID = self._references.get(role)
        return self._scene.GetNodeByID(nodeID) if (nodeID and self._scene) else None


class vtkMRMLSubjectHierarchyNode(vtkMRMLNode):
    """Items in a tree: the scene item, folders, and one item per data node."""

    nodeTagName = "SubjectHierarchy"
    INVALID_ITEM_ID = 0

    def __init__(self) -> None:
        super().__init__()
        self._sceneItemID = 1
        self._items: dict[int, dict] = {self._sceneItemID: {"parent": self.INVALID_ITEM_ID, "node": None, "name": "Scene"}}
        self._nextItemID = 2

    @staticmethod
    def GetSubjectHierarchyNode(scene: "vtkMRMLScene") -> "vtkMRMLSubjectHierarchyNode":
        return scene.GetSubjectHierarchyNode()

    def GetSceneItemID(self) -> int:
        return self._sceneItemID

    def _newItem(self, parent: int, node: vtkMRMLNode | None, name: str) -> int:
        itemID = self._nextItemID
        self._nextItemID += 1
        self._items[itemID] = {"parent": parent, "node": node, "name": name}
        return itemID

    def CreateFolderItem(self, parentItemID: int, name: str) -> int:
        return self._newItem(parentItemID, None, name)

    def GetItemByDataNode(self, node: vtkMRMLNode | None) -> int:
        for itemID, item in self._items.items():
            if node is not None and item["node"] is node:
                return itemID
        return self.INVALID_ITEM_ID

    def GetItemDataNode(self, itemID: int) -> vtkMRMLNode | None:
        item = self._items.get(itemID)
        return item["node"] if item else None

    def GetItemParent(self, itemID: int) -> int:
        item = self._items.get(itemID)
        return item["parent"] if item else self.INVALID_ITEM_ID

    def SetItemParent(self, itemID: int, parentItemID: int, enableCircularCheck: bool = True) -> None:
        if itemID not in self._items or parentItemID not in self._items:
            raise ValueError(f"invalid subject hierarchy item {itemID} or parent {parentItemID}")
        self._items[itemID]["parent"] = parentItemID
        self.Modified()

    def GetItemName(self, itemID: int) -> str:
        item = self._items.get(itemID)
        if item is None:
            return ""
        return item["node"].GetName() if item["node"] is not None else item["name"]

    def _addDataNode(self, node: vtkMRMLNode) -> None:
        self._newItem(self._sceneItemID, node, node.GetName())

    def _removeDataNode(self, node: vtkMRMLNode) -> None:
        itemID = self.GetItemByDataNode(node)
        if itemID != self.INVALID_ITEM_ID:
            del self._items[itemID]


def _requireMatrix(matrix) -> None:
    if not isinstance(matrix, vtkMatrix4x4):
        raise TypeError(f"expected a vtkMatrix4x4; got {type(matrix).__name__} (VTK wrapping does not convert numpy)")


#: Node classes the scene can create by name (``AddNewNodeByClass``).
NODE_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        vtkMRMLScalarVolumeNode,
        vtkMRMLLabelMapVolumeNode,
        vtkMRMLVectorVolumeNode,
        vtkMRMLDiffusionWeightedVolumeNode,
        vtkMRMLDiffusionTensorVolumeNode,
        vtkMRMLScalarVolumeDisplayNode,
        vtkMRMLLabelMapVolumeDisplayNode,
        vtkMRMLVectorVolumeDisplayNode,
        vtkMRMLLinearTransformNode,
        vtkMRMLScriptedModuleNode,
        vtkMRMLSliceNode,
    )
}


class vtkMRMLScene:
    """Nodes by ID, name generation, subject hierarchy; close events for widget observers."""

    StartCloseEvent = vtkCommand.UserEvent + 1
    EndCloseEvent = vtkCommand.UserEvent + 2
    NodeAddedEvent = vtkCommand.UserEvent + 3
    NodeRemovedEvent = vtkCommand.UserEvent + 4

    def __init__(self) -> None:
        self._nodes: list[vtkMRMLNode] = []
        self._idCounters: dict[str, int] = {}
        self._shNode: vtkMRMLSubjectHierarchyNode | None = None
        self._ensureSubjectHierarchy()

    def _ensureSubjectHierarchy(self) -> None:
        self._shNode = vtkMRMLSubjectHierarchyNode()
        self._register(self._shNode)

    def _register(self, node: vtkMRMLNode) -> None:
        className = node.GetClassName()
        self._idCounters[className] = self._idCounters.get(className, 0) + 1
        node._id = f"{className}{self._idCounters[className]}"
        node._scene = self
        if not node.GetName():
            node._name = self.GenerateUniqueName(node.nodeTagName)
        self._nodes.append(node)

    def AddNewNodeByClass(self, className: str, nodeBaseName: str = "") -> vtkMRMLNode | None:
        cls = NODE_CLASSES.get(className)
        if cls is None:
            return None
        node = cls()
        if nodeBaseName:
            node._name = nodeBaseName
        return self.AddNode(node)

    def AddNode(self, node: vtkMRMLNode) -> vtkMRMLNode:
        if node in self._nodes:
            return node
        self._register(node)
        if not isinstance(node, (vtkMRMLDisplayNode, vtkMRMLScriptedModuleNode, vtkMRMLSliceNode)):
            self._shNode._addDataNode(node)
        return node

    def RemoveNode(self, node: vtkMRMLNode) -> None:
        if node in self._nodes:
            self._nodes.remove(node)
            self._shNode._removeDataNode(node)
            node._scene = None

    def GetNodeByID(self, nodeID: str | None) -> vtkMRMLNode | None:
        return next((n for n in self._nodes if nodeID and n.GetID() == nodeID), None)

    def GetFirstNodeByName(self, name: str) -> vtkMRMLNode | None:
        return next((n for n in self._nodes if n.GetName() == name), None)

    def GetFirstNodeByClass(self, className: str) -> vtkMRMLNode | None:
        return next((n for n in self._nodes if n.IsA(className)), None)

    def GetNodesByClass(self, className: str) -> list[vtkMRMLNode]:
        return [n for n in self._nodes if n.IsA(className)]

    def GetNumberOfNodesByClass(self, className: str) -> int:
        return len(self.GetNodesByClass(className))

    def GetNumberOfNodes(self) -> int:
        return len(self._nodes)

    def GetSingletonNode(self, singletonTag: str, className: str) -> vtkMRMLNode | None:
        return next(
            (n for n in self._nodes if n.IsA(className) and n.GetSingletonTag() == singletonTag), None
        )

    def GenerateUniqueName(self, baseName: str) -> str:
        names = {n.GetName() for n in self._nodes}
        if baseName not in names:
            return baseName
        index = 1
        while f"{baseName}_{index}" in names:
            index += 1
        return f"{baseName}_{index}"

    def GetSubjectHierarchyNode(self) -> vtkMRMLSubjectHierarchyNode:
        return self._shNode

    def Clear(self, removeSingletons: int = 1) -> None:
        for node in list(self._nodes):
            node._scene = None
        self._nodes.clear()
        self._idCounters.clear()
        self._ensureSubjectHierarchy()
