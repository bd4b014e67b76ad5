"""The data-consistency check in Slicer: the difference volume node, the slice views, the panel's text.

Every number comes from ``MedSRLib.consistency.check_consistency`` (a ``ConsistencyReport``): its
difference volume ``degrade(SR) - input`` (input grid, input units), whole-volume and per-slice scores,
and flagged slices. This module only puts them into nodes, slice views and words. Slice indices are
indices along ``report.slice_axis``, a numpy axis of the input's ``(k, j, i)`` array (IJK axis ``2 - axis``).
"""

from __future__ import annotations

import math

import numpy as np
import slicer
from MedSRLib.consistency import DEFAULT_FLAG_DROP_DB

from . import nodes

#: Slicer's diverging blue-white-red colour table (a default colour node, ID as in vtkMRMLColorLogic).
DIFFERENCE_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
#: Opacity of the difference volume over the input in the slice views.
DIFFERENCE_OPACITY = 0.5
#: Slices listed when none is flagged.
WORST_SLICES_SHOWN = 5


def differenceName(inputVolume) -> str:
    """``<input> MedSR difference``, made unique in the scene."""
    return slicer.mrmlScene.GenerateUniqueName(f"{inputVolume.GetName()} MedSR difference")


def differenceWindowLevel(report) -> tuple[float, float]:
    """Window and level of the difference volume: centred on 0, +-p99 |diff| (max |diff| if p99 is 0)."""
    halfWidth = report.p99_abs_diff or report.max_abs_diff or 1.0
    return 2.0 * float(halfWidth), 0.0


def _requireInScene(volumeNode, role: str) -> None:
    if volumeNode is None or volumeNode.GetScene() is None:
        raise nodes.NodeError(f"The {role} volume is no longer in the scene: run MedSR again.")


def createDifferenceNode(inputVolume, report):
    """New scalar volume ``<input> MedSR difference`` holding ``report.difference`` (see ``MedSRLogic``)."""
    from MedSRLib.geometry import ijk_to_ras_matrix

    _requireInScene(inputVolume, "input")
    nodes.checkInputVolume(inputVolume)
    difference = getattr(report, "difference", None)
    if difference is None:
        raise nodes.NodeError("This consistency report kept no difference volume: run the check with keep_difference=True.")
    shapeKJI = tuple(reversed(inputVolume.GetImageData().GetDimensions()))
    if tuple(difference.shape) != shapeKJI or not np.allclose(
        ijk_to_ras_matrix(difference), nodes.ijkToRasArray(inputVolume), atol=1e-3
    ):
        raise nodes.NodeError(
            f"The consistency report is not for '{inputVolume.GetName()}' (another grid): choose the volume that was super-resolved."
        )
    differenceVolume = slicer.mrmlScene.AddNewNodeByClass(nodes.SCALAR_VOLUME_CLASS, differenceName(inputVolume))
    nodes.writeVolumeToNode(difference, differenceVolume)
    nodes.placeBesideInput(differenceVolume, inputVolume)
    differenceVolume.CreateDefaultDisplayNodes()
    display = differenceVolume.GetDisplayNode()
    window, level = differenceWindowLevel(report)
    with slicer.util.NodeModify(display):
        display.SetAndObserveColorNodeID(DIFFERENCE_COLOR_NODE_ID)
        display.SetAutoWindowLevel(0)
        display.SetWindowLevel(window, level)
    return differenceVolume


def showDifference(inputVolume, differenceVolume, opacity: float = DIFFERENCE_OPACITY) -> None:
    """The input as background and the difference as foreground (``opacity``) in every slice view."""
    _requireInScene(inputVolume, "input")
    _requireInScene(differenceVolume, "difference")
    slicer.util.setSliceViewerLayers(background=inputVolume, foreground=differenceVolume, foregroundOpacity=opacity)


def sliceCentreRas(inputVolume, sliceIndex: int, axis: int) -> np.ndarray:
    """World RAS (mm) of the centre of slice ``sliceIndex`` along numpy ``axis`` of the input's array."""
    _requireInScene(inputVolume, "input")
    nodes.checkInputVolume(inputVolume)
    if axis not in (0, 1, 2):
        raise nodes.NodeError(f"Slice axis {axis!r} is not a numpy axis (0, 1 or 2).")
    dimensionsIJK = inputVolume.GetImageData().GetDimensions()
    ijkAxis = 2 - int(axis)
    if not 0 <= int(sliceIndex) < dimensionsIJK[ijkAxis]:
        raise nodes.NodeError(
            f"Slice {sliceIndex} is outside '{inputVolume.GetName()}', which has {dimensionsIJK[ijkAxis]} slices along axis {axis}."
        )
    centreIJK = [(n - 1) / 2.0 for n in dimensionsIJK]
    centreIJK[ijkAxis] = float(sliceIndex)
    localRas = (nodes.ijkToRasArray(inputVolume) @ [*centreIJK, 1.0])[:3]
    return nodes.localToWorldRas(inputVolume, localRas)


def jumpToSlice(inputVolume, sliceIndex: int, axis: int) -> np.ndarray:
    """Centre every slice view on that slice's centre (what the Markups logic's JumpSlicesToLocation does)."""
    ras = sliceCentreRas(inputVolume, sliceIndex, axis)
    slicer.vtkMRMLSliceNode.JumpAllSlices(slicer.mrmlScene, *(float(v) for v in ras), slicer.vtkMRMLSliceNode.CenteredJumpSlice)
    return ras


# -- panel text ----------------------------------------------------------------------------------------


def formatDb(value: float) -> str:
    return "identical" if math.isinf(value) else f"{value:.2f} dB"


def _metricCells(report) -> list[str]:
    return [formatDb(report.psnr), f"{report.ssim:.4f}", f"{report.p99_abs_diff:.4g} {report.units}",
            f"{report.max_abs_diff:.4g} {report.units}"]


def referenceName(report) -> str:
    """What the report's reference is: bicubic upsampling (in-plane), or cubic B-spline interpolation along
    the slice axis (a through-plane report, ``report.plane == "through"``)."""
    return "cubic B-spline" if getattr(report, "plane", "in") == "through" else "bicubic"


def metricsHtml(report) -> str:
    """The numbers as an HTML table, the reference (:func:`referenceName`) beside them, and the degradation
    that mapped the output back onto the input grid (``report.degradation``: MATLAB bicubic in-plane, the
    slice profile along the slice axis through-plane)."""
    reference = _metricCells(report.reference) if report.reference is not None else ["-"] * 4
    rows = "".join(
        f"<tr><td>{name}</td><td align='right'>{value}</td><td align='right'>{ref}</td></tr>"
        for name, value, ref in zip(("PSNR", "SSIM", "p99 |diff|", "max |diff|"), _metricCells(report), reference)
    )
    return (
        f"<table cellspacing='4'><tr><th></th><th>output</th><th>{referenceName(report)}</th></tr>" + rows + "</table>"
        f"<small>degrade(output) - input, on the input grid; degradation: {report.degradation}; "
        f"data range {report.data_range:g} {report.units}. "
        "Agreement with the input does not show that the added detail is real.</small>"
    )


def sliceListEntries(report, count: int = WORST_SLICES_SHOWN) -> tuple[str, list[tuple[int, str]]]:
    """``(title, [(slice index, text)])``: the flagged slices, or the ``count`` worst when none is flagged."""
    flagged = list(report.flagged_slices)
    reference = report.reference.slice_psnr if report.reference is not None else None
    if flagged:
        title = (f"{len(flagged)} slice(s) flagged: PSNR more than {DEFAULT_FLAG_DROP_DB:g} dB below "
                 f"{referenceName(report)}'s on the same slice. Click one to show it.")
        indices = flagged
    else:
        indices = [entry["index"] for entry in report.worst_slices(count)]
        title = f"No slice flagged. The {len(indices)} slices with the lowest PSNR (click one to show it):"
    entries = []
    for index in indices:
        text = f"Slice {index}: PSNR {formatDb(report.slice_psnr[index])}, SSIM {report.slice_ssim[index]:.4f}"
        if reference is not None:
            text += f" ({referenceName(report)} {formatDb(reference[index])})"
        entries.append((index, text))
    return title, entries
