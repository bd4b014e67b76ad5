"""Which direction the panel super-resolves: in-plane, or along the slice axis (issues 19 item 3, 20 item 7).

The panel offers Auto / In-plane / Through-plane (slice axis), the through-plane network (Auto = MedSRLib's
default for the volume's modality), a target slice spacing and an adaptation time, and shows the rule Auto
follows, computed from the selected volume's geometry: **through-plane when the slice spacing is at least**
:data:`AUTO_THROUGH_PLANE_RATIO` **times the in-plane spacing** (``MedSRLib.geometry.THICK_SLICE_RATIO``),
else in-plane. The slice axis is MedSRLib's (:func:`MedSRLib.geometry.resolve_slice_axis`), the output grid
MedSRLib's plan (:func:`MedSRLib.geometry.plan_output_grid`) and a run's direction MedSRLib's
(:func:`MedSRLib.pipeline.resolve_plane`); this module only compares the two spacings and words the result.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

from MedSRLib import geometry as _geometry  # numpy only

from . import model_catalog

#: The parameter-node values of the plane choice, and what the panel's combo box shows for each.
PLANE_CHOICES: tuple[str, ...] = ("auto", "in", "through")
PLANE_LABELS: dict[str, str] = {"auto": "Auto", "in": "In-plane", "through": "Through-plane (slice axis)"}
#: Auto chooses through-plane when slice spacing >= this x the finest in-plane spacing (issue 20 item 1).
AUTO_THROUGH_PLANE_RATIO = float(_geometry.THICK_SLICE_RATIO)
#: Below this factor a through-plane run has nothing to do (``MedSRLib.throughplane.MIN_FACTOR``; a test
#: checks they agree; not imported here because that module imports torch).
MIN_THROUGH_PLANE_FACTOR = 1.2
#: The through-plane network choice that means "MedSRLib's default for the volume's modality".
AUTO_NETWORK = "auto"
AXIS_NAMES = ("K", "J", "I")  # numpy (k, j, i) axis -> Slicer's IJK letter


def defaultThroughPlaneNetwork(modality: str) -> str:
    """MedSRLib's through-plane network for ``modality`` ("CT"/"MR"): ``models.default_model(modality,
    plane="through")`` as the cached catalog records it (no registry import on the GUI thread)."""
    return model_catalog.defaultThroughPlane(modality)


def throughPlaneNetworkName(choice: str, modality: str) -> str:
    """The through-plane network a run uses: ``choice`` (a ``tp-*`` name), or for :data:`AUTO_NETWORK` the
    library's default for ``modality``."""
    return defaultThroughPlaneNetwork(modality) if choice in (None, "", AUTO_NETWORK) else str(choice)


def noWeightsMessage(network: Any, modality: str) -> str:
    """The one line shown when ``network`` (a catalog model) has no shipped weights."""
    return (f"No through-plane weights for {modality} are shipped in this MedSR ({network.name}): "
            "choose Direction: In-plane.")


@dataclasses.dataclass(frozen=True)
class PlanePlan:
    """What a run would do to a volume, for the panel.

    Attributes:
        plane: the choice (``"auto"``, ``"in"``, ``"through"``); ``resolved``: ``"in"`` or ``"through"``.
        sliceAxis: numpy axis of the slices (0 = K, 1 = J, 2 = I); ``slices``: how many.
        sliceSpacing, inPlaneSpacing: mm (in-plane: the finer of the two in-plane axes, as MedSRLib's rule).
        ratio: sliceSpacing / inPlaneSpacing; ``thick``: ratio >= AUTO_THROUGH_PLANE_RATIO.
        targetSpacing: the through-plane target, mm (0 asked = the in-plane spacing: near-isotropic).
        factor: sliceSpacing / targetSpacing as MedSRLib's plan realises it; ``outputSlices``: its slice count.
    """

    plane: str
    resolved: str
    sliceAxis: int
    slices: int
    sliceSpacing: float
    inPlaneSpacing: float
    ratio: float
    thick: bool
    targetSpacing: float
    factor: float
    outputSlices: int

    def ruleText(self) -> str:
        """The auto rule applied to this volume, one line."""
        verdict = "through-plane" if self.thick else "in-plane"
        return (f"Slices along {AXIS_NAMES[self.sliceAxis]}: {self.slices} x {self.sliceSpacing:.3g} mm, pixels "
                f"{self.inPlaneSpacing:.3g} mm (ratio {self.ratio:.2f}); Auto is through-plane when the slice spacing "
                f"is at least {AUTO_THROUGH_PLANE_RATIO:g}x the in-plane spacing: {verdict}.")

    @property
    def networkFactor(self) -> int:
        """The integer factor the through-plane network runs at (MedSRLib: ``ceil(n_out / n)``; a non-integer
        factor is finished by the cubic B-spline); its card is the card at this factor."""
        return int(math.ceil(self.outputSlices / self.slices - 1e-9))

    def planText(self, scale: int, diagonals: bool = True) -> str:
        """What the run will do, one line (``diagonals``: the voxel-diagonal views are fused too)."""
        if self.resolved == "in":
            return f"In-plane x{int(scale)}; the slice spacing ({self.sliceSpacing:.3g} mm) is kept."
        if self.factor < MIN_THROUGH_PLANE_FACTOR:
            return (f"Through-plane: {self.sliceSpacing:.3g} mm to {self.targetSpacing:.3g} mm is x{self.factor:.2f}, "
                    f"below x{MIN_THROUGH_PLANE_FACTOR:g}: nothing to do.")
        fused = "two orientations and two diagonals fused" if diagonals else "two orientations fused"
        return (f"Through-plane along {AXIS_NAMES[self.sliceAxis]}: {self.slices} slices x {self.sliceSpacing:.3g} mm "
                f"-> {self.outputSlices} x {self.sliceSpacing / self.factor:.3g} mm (x{self.factor:.2f}), {fused}.")


def planFor(grid: Any, plane: str = "auto", targetSpacingMM: float = 0.0, sliceAxis: Any = None) -> PlanePlan:
    """The :class:`PlanePlan` of ``grid`` (a ``MedSRLib.geometry.Grid`` or ``Volume``) for the panel's choices.

    ``sliceAxis``: MedSRLib's axis argument (None = the axis with the largest spacing).
    Raises ValueError for an unknown ``plane``; MedSRLib's GeometryError/ScaleError for a bad axis or target.
    """
    from MedSRLib.geometry import plan_output_grid, resolve_slice_axis

    if plane not in PLANE_CHOICES:
        raise ValueError(f"plane must be one of {', '.join(PLANE_CHOICES)}; got {plane!r}")
    axis = resolve_slice_axis(grid, sliceAxis)
    spacingKJI = tuple(float(s) for s in reversed(tuple(grid.spacing)))  # ITK (i, j, k) -> numpy (k, j, i)
    sliceSpacing = spacingKJI[axis]
    inPlaneSpacing = min(s for a, s in enumerate(spacingKJI) if a != axis)
    ratio = sliceSpacing / inPlaneSpacing
    thick = int(grid.shape[axis]) > 1 and ratio >= AUTO_THROUGH_PLANE_RATIO * (1.0 - _geometry.SPACING_TIE_RTOL)
    resolved = plane if plane != "auto" else ("through" if thick else "in")
    target = float(targetSpacingMM) if targetSpacingMM and targetSpacingMM > 0 else inPlaneSpacing
    requested = max(1.0, sliceSpacing / target)
    output = plan_output_grid(grid, [requested if a == axis else 1.0 for a in range(3)])
    return PlanePlan(
        plane=plane, resolved=resolved, sliceAxis=axis, slices=int(grid.shape[axis]), sliceSpacing=sliceSpacing,
        inPlaneSpacing=inPlaneSpacing, ratio=ratio, thick=thick, targetSpacing=target,
        factor=float(output.factors[axis]), outputSlices=int(output.output.shape[axis]),
    )


def throughPlaneProblem(plan: PlanePlan, network: Any, modality: str) -> Optional[str]:
    """Why a through-plane run of ``plan`` with ``network`` (the cached catalog's model, or None when the
    name is unknown) would be refused before it starts (one line), or None: nothing to do (factor below
    :data:`MIN_THROUGH_PLANE_FACTOR`), an unknown network, or no shipped weights. An in-plane plan has none."""
    if plan.resolved != "through":
        return None
    if plan.factor < MIN_THROUGH_PLANE_FACTOR:
        return (f"Through-plane: {plan.sliceSpacing:.3g} mm to {plan.targetSpacing:.3g} mm is x{plan.factor:.2f}, below "
                f"x{MIN_THROUGH_PLANE_FACTOR:g}: nothing to do (choose a smaller target spacing, or In-plane).")
    if network is None:
        return "Unknown through-plane network: choose one from the list."
    if plan.networkFactor not in network.scales:
        return (f"Through-plane x{plan.factor:.2f} needs {network.name} at x{plan.networkFactor}; it runs up to "
                f"x{max(network.scales)}: choose a larger target spacing.")
    if not network.hasWeights(plan.networkFactor):
        return noWeightsMessage(network, modality)
    return None


def resolvedPlane(volume: Any, plane: str, axis: Any = None) -> str:
    """Which run ``plane`` ("auto", "in" or "through") makes on ``volume`` (a MedSRLib ``Volume``): ``"in"`` or
    ``"through"``, as ``MedSRLib.pipeline.resolve_plane`` decides (the Auto rule on the volume's spacing)."""
    from MedSRLib.pipeline import resolve_plane

    return resolve_plane(volume, plane=plane, axis=axis)


def superResolveKeywords(resolved: str, targetSpacingMM: float, adaptSeconds: float,
                         network: Optional[str] = None, diagonals: bool = True) -> dict[str, Any]:
    """The through-plane keywords for ``super_resolve`` of a run that resolved to ``resolved``: ``plane``
    always; for a through-plane run also ``model`` (``network``: a ``tp-*`` name, or None = MedSRLib's
    through-plane network for the volume's modality), ``target_spacing`` and ``adapt_seconds`` when positive
    (0 in the panel = the library's default: near-isotropic, no adaptation), and ``views`` 2 when
    ``diagonals`` is off (on: MedSRLib's default of 4 views, not passed). An in-plane run gets none of
    them (MedSRLib refuses them there)."""
    keywords: dict[str, Any] = {"plane": resolved}
    if resolved != "through":
        return keywords
    keywords["model"] = None if network in (None, "", AUTO_NETWORK) else str(network)
    if targetSpacingMM and targetSpacingMM > 0:
        keywords["target_spacing"] = float(targetSpacingMM)
    if adaptSeconds and adaptSeconds > 0:
        keywords["adapt_seconds"] = float(adaptSeconds)
    if not diagonals:
        keywords["views"] = 2
    return keywords
