"""The MedSR module's parameters: what the panel edits, saved with the scene (``parameterNodeWrapper``).

The choices offered here are checked against MedSRLib by the tests (every scale, axis and device a
choice names is accepted by ``MedSRLib.pipeline.super_resolve``). The engine settings are not listed by
hand: one field per ``MedSRLib.engine.EngineOptions`` field that ``medsr`` offers, named as the field
(``engine_settings.SETTINGS``), added to the class below before it is wrapped.
"""

from typing import Annotated, Any

from slicer import vtkMRMLScalarVolumeNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

from . import engine_settings
from .engine_settings import DEVICE_CHOICES  # noqa: F401  (re-exported for MedSR.py and the tests)
from .plane import AUTO_NETWORK, PLANE_CHOICES

#: Choices offered in the panel (every model checks its own scales; bicubic/nearest take any of them).
SCALE_CHOICES = [2, 3, 4, 8]
#: "auto" = the axis with the largest spacing (the acquisition's slice axis); else the plane of the slices.
SLICE_AXIS_CHOICES = ["auto", "axial", "coronal", "sagittal"]
#: Largest through-plane target spacing (mm) and adaptation time (s) the panel accepts.
MAX_TARGET_SPACING_MM = 50.0
MAX_ADAPT_SECONDS = 3600


class MedSRParameterNode:
    """What the panel edits (saved with the scene).

    inputVolume - the scalar volume to super-resolve (never modified).
    outputVolume - receives the result; None creates a new volume named <input>_<model>_x<scale>.
    model - MedSRLib registry name ("bicubic", "mdrn", "dridsr", ...); the panel lists the registry.
    scale - in-plane factor (the model must support it).
    sliceAxis - which slices are super-resolved: "auto" (largest spacing) or a plane.
    plane - "auto" (through-plane when slice spacing >= 2x in-plane spacing), "in" or "through".
    throughModel - the through-plane network: "auto" (MedSRLib's for the volume's modality) or a tp-* name;
        the panel lists the cached catalog's through-plane networks.
    targetSpacingMM - through-plane output slice spacing, mm; 0 = the in-plane spacing (near-isotropic).
    adaptSeconds - through-plane per-volume adaptation time, s; 0 = none.
    throughDiagonals - through-plane: fuse the two voxel-diagonal views with the two orientations (MedSRLib's
        default, views=4); False = the two orientations only (views=2, about half the network time).
    checkConsistency - after the run, degrade the output back and compare it with the input (MedSRLib.consistency).
    device, batch_size, memory_budget_mb, tile, tile_overlap, ensemble, precision, threads, compile -
        the engine settings: MedSRLib.engine.EngineOptions fields (text fields: "" = automatic).
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    model: str = "bicubic"
    scale: Annotated[int, Choice(SCALE_CHOICES)] = 2
    sliceAxis: Annotated[str, Choice(SLICE_AXIS_CHOICES)] = "auto"
    plane: Annotated[str, Choice(list(PLANE_CHOICES))] = "auto"
    throughModel: str = AUTO_NETWORK
    targetSpacingMM: Annotated[float, WithinRange(0.0, MAX_TARGET_SPACING_MM)] = 0.0
    adaptSeconds: Annotated[int, WithinRange(0, MAX_ADAPT_SECONDS)] = 0
    throughDiagonals: bool = True
    checkConsistency: bool = True


def _engineAnnotation(setting: engine_settings.EngineSetting) -> Any:
    if setting.kind == "bool":
        return bool
    if setting.kind == "choice":
        return Annotated[str, Choice(list(setting.choices))]
    return str


for _setting in engine_settings.SETTINGS:
    MedSRParameterNode.__annotations__[_setting.field] = _engineAnnotation(_setting)
    setattr(MedSRParameterNode, _setting.field, _setting.default)

MedSRParameterNode = parameterNodeWrapper(MedSRParameterNode)  # after the engine fields are added
del _setting
