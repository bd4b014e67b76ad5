"""A test double of 3D Slicer's ``slicer`` package, built on real VTK (no Qt, no application).

It mimics the surface listed in the design notes slicer-conventions.md section 7 -- the scene, volume
nodes with geometry on the node (RAS), ``slicer.util`` array and matrix helpers, the subject
hierarchy, ``ScriptedLoadableModule`` base classes and ``parameterNodeWrapper`` -- so that the MedSR
logic can run end to end outside Slicer. Widgets cannot run here: ``qt``/``ctk`` are absent (their
doubles raise on any attribute) and ``slicer.util.loadUI`` raises.

Use :func:`slicer_double.activate` (tests/slicer_double/__init__.py) to put it on ``sys.path``.
"""

from __future__ import annotations

from types import SimpleNamespace

from .mrml import (  # noqa: F401  (re-exported like slicer.vtkMRML*)
    vtkMRMLDiffusionTensorVolumeNode,
    vtkMRMLDiffusionWeightedVolumeNode,
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLLinearTransformNode,
    vtkMRMLNode,
    vtkMRMLScalarVolumeDisplayNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLScene,
    vtkMRMLScriptedModuleNode,
    vtkMRMLSliceNode,
    vtkMRMLSubjectHierarchyNode,
    vtkMRMLTransformNode,
    vtkMRMLVectorVolumeNode,
    vtkMRMLVolumeNode,
)


class _Application:
    """``slicer.app``: testing flag and an event pump with nothing to pump."""

    def __init__(self) -> None:
        self._testing = True

    def testingEnabled(self) -> bool:
        return self._testing

    def setTestingEnabled(self, enabled: bool) -> None:
        """Double only: switch testing mode (``--testing``) on or off."""
        self._testing = bool(enabled)

    def commandOptions(self) -> SimpleNamespace:
        return SimpleNamespace(testingEnabled=self._testing, noMainWindow=True)

    def processEvents(self) -> None:
        pass


app = _Application()
mrmlScene = vtkMRMLScene()
modules = SimpleNamespace()
selfTests: dict = {}

from . import util  # noqa: E402  (util refers back to mrmlScene/app at call time)
