"""``slicer.app`` and the application's scene set-up, which slicer-core (MRML without Qt) lacks.

What the Slicer application does when it starts and a test relies on:

* a scene with a subject-hierarchy node and three slice views (Red, Green, Yellow: a
  ``vtkMRMLSliceNode`` and a ``vtkMRMLSliceCompositeNode`` each, as the default layout creates);
* subject-hierarchy items for new volume and transform nodes: in Slicer a Qt plugin
  (``qSlicerSubjectHierarchyPluginLogic::onNodeAdded``) creates them; here an observer on the scene's
  ``NodeAddedEvent`` puts each new one under the scene item;
* the file-based default colour table MedSR uses, ``vtkMRMLColorTableNodeFileDivergingBlueRed.txt``: the
  application's colour logic reads it from ``ColorFiles/DivergingBlueRed.txt`` (the wheel has no colour
  files); here a three-colour blue-white-red table with the same singleton tag (so the same node ID);
* ``slicer.app``: the testing flag, an event pump with nothing to pump, no layout manager.
"""

from __future__ import annotations

from types import SimpleNamespace

import slicer
import vtk

SLICE_VIEWS = ("Red", "Green", "Yellow")


class Application:
    """``slicer.app``: testing flag, no main window, no layout manager."""

    applicationName = "Slicer"

    def __init__(self) -> None:
        self._testing = True

    def testingEnabled(self) -> bool:
        return self._testing

    def setTestingEnabled(self, enabled: bool) -> None:
        """Shim only: switch testing mode (``--testing``) on or off."""
        self._testing = bool(enabled)

    def commandOptions(self) -> SimpleNamespace:
        return SimpleNamespace(testingEnabled=self._testing, noMainWindow=True)

    def processEvents(self) -> None:
        pass

    def layoutManager(self):
        return None

    def setOverrideCursor(self, cursor) -> None:
        pass

    def restoreOverrideCursor(self) -> None:
        pass


@vtk.calldata_type(vtk.VTK_OBJECT)
def _createSubjectHierarchyItem(scene, event, node) -> None:
    if not (node.IsA("vtkMRMLVolumeNode") or node.IsA("vtkMRMLTransformNode")):
        return
    shNode = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if shNode is not None and not shNode.GetItemByDataNode(node):
        shNode.CreateItem(shNode.GetSceneItemID(), node)


def newScene():
    """A scene as the application starts it (see the module docstring); becomes ``slicer.mrmlScene``."""
    scene = slicer.vtkMRMLScene()
    slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    for name in SLICE_VIEWS:
        sliceNode = slicer.vtkMRMLSliceNode()
        sliceNode.SetName(name)
        sliceNode.SetLayoutName(name)
        sliceNode.SetSingletonTag(name)
        scene.AddNode(sliceNode)
        compositeNode = slicer.vtkMRMLSliceCompositeNode()
        compositeNode.SetLayoutName(name)
        compositeNode.SetSingletonTag(name)
        scene.AddNode(compositeNode)
    colorNode = slicer.vtkMRMLColorTableNode()
    colorNode.SetName("DivergingBlueRed")
    colorNode.SetSingletonTag("FileDivergingBlueRed.txt")  # node ID = class name + singleton tag
    colorNode.SetTypeToUser()
    colorNode.SetNumberOfColors(3)
    for index, rgb in enumerate([(0.0, 0.0, 1.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0)]):
        colorNode.SetColor(index, *rgb, 1.0)
    scene.AddNode(colorNode)
    scene.AddObserver(scene.NodeAddedEvent, _createSubjectHierarchyItem)
    slicer.mrmlScene = scene
    return scene


def sliceLayers() -> dict:
    """``{view name: (background ID, foreground ID, foreground opacity)}`` read from the composite nodes."""
    layers = {}
    for index in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        node = slicer.mrmlScene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        layers[node.GetLayoutName()] = (node.GetBackgroundVolumeID(), node.GetForegroundVolumeID(), node.GetForegroundOpacity())
    return layers
