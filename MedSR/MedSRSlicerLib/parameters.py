"""The MedSR module's parameters: what the panel edits, saved with the scene (``parameterNodeWrapper``).

The choices offered here are checked against MedSRLib by the tests (every scale, axis and device a
choice names is accepted by ``MedSRLib.pipeline.super_resolve``).
"""

from typing import Annotated

from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

#: Choices offered in the panel (every model checks its own scales; bicubic/nearest take any of them).
SCALE_CHOICES = [2, 3, 4, 8]
#: "auto" = the axis with the largest spacing (the acquisition's slice axis); else the plane of the slices.
SLICE_AXIS_CHOICES = ["auto", "axial", "coronal", "sagittal"]
DEVICE_CHOICES = ["auto", "cpu", "cuda", "mps"]


@parameterNodeWrapper
class MedSRParameterNode:
    """What the panel edits (saved with the scene).

    inputVolume - the scalar volume to super-resolve (never modified).
    outputVolume - receives the result; None creates a new volume named <input>_<model>_x<scale>.
    model - MedSRLib registry name ("bicubic", "mdrn", "dridsr", ...); the panel lists the registry.
    scale - in-plane factor (the model must support it).
    sliceAxis - which slices are super-resolved: "auto" (largest spacing) or a plane.
    device - "auto" (CUDA, then MPS, then CPU), or one of them.
    selfEnsemble - average the 8 flips/rotations of each slice (8 times slower).
    memoryBudgetMB - memory for one batch of slices, MB; 0 = automatic.
    checkConsistency - after the run, degrade the output back and compare it with the input (MedSRLib.consistency).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    model: str = "bicubic"
    scale: Annotated[int, Choice(SCALE_CHOICES)] = 2
    sliceAxis: Annotated[str, Choice(SLICE_AXIS_CHOICES)] = "auto"
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    selfEnsemble: bool = False
    memoryBudgetMB: Annotated[int, WithinRange(0, 1048576)] = 0
    checkConsistency: bool = True

