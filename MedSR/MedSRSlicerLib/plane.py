"""Which direction the panel super-resolves: in-plane, or along the slice axis (issues 19 item 3, 20 item 7).

The panel offers Auto / In-plane / Through-plane (slice axis), a target slice spacing and an adaptation
time, and shows the rule Auto follows, computed from the selected volume's geometry: **through-plane
when the slice spacing is at least** :data:`AUTO_THROUGH_PLANE_RATIO` **times the in-plane spacing**
(issue 20 item 1), else in-plane. The slice axis is MedSRLib's (:func:`MedSRLib.geometry.resolve_slice_axis`)
and the output grid MedSRLib's plan (:func:`MedSRLib.geometry.plan_output_grid`); this module only compares
the two spacings and words the result.

Through-plane runs need a MedSRLib whose :func:`MedSRLib.pipeline.super_resolve` accepts the keywords in
:data:`THROUGH_PLANE_KEYWORDS`; :func:`libraryRunsThroughPlane` looks at the installed signature (no torch
import), and with an older MedSRLib the module runs in-plane and says so in one line (:data:`NEEDS_NEWER_LIBRARY`).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping, Optional

from MedSRLib import geometry as _geometry  # numpy only

#: The parameter-node values of the plane choice, and what the panel's combo box shows for each.
PLANE_CHOICES: tuple[str, ...] = ("auto", "in", "through")
PLANE_LABELS: dict[str, str] = {"auto": "Auto", "in": "In-plane", "through": "Through-plane (slice axis)"}
#: Auto chooses through-plane when slice spacing >= this x the finest in-plane spacing (issue 20 item 1):
#: MedSRLib's ``geometry.THICK_SLICE_RATIO`` where the installed MedSRLib defines it.
AUTO_THROUGH_PLANE_RATIO = float(getattr(_geometry, "THICK_SLICE_RATIO", 2.0))
#: Below this factor a through-plane run has nothing to do (``MedSRLib.throughplane.MIN_FACTOR``; a test
#: checks they agree; not imported here because that module imports torch).
MIN_THROUGH_PLANE_FACTOR = 1.2
#: The ``super_resolve`` keywords a through-plane run passes (issue 20's integration API).
THROUGH_PLANE_KEYWORDS: tuple[str, ...] = ("plane", "target_spacing", "adapt_seconds")
#: The one-line note when the installed MedSRLib cannot run through-plane.
NEEDS_NEWER_LIBRARY = "Through-plane super-resolution needs a newer MedSRLib; this run is in-plane."
AXIS_NAMES = ("K", "J", "I")  # numpy (k, j, i) axis -> Slicer's IJK letter


def libraryRunsThroughPlane(superResolve: Optional[Callable[..., Any]] = None) -> bool:
    """True when ``superResolve`` (default: the installed ``MedSRLib.pipeline.super_resolve``) names every
    keyword of :data:`THROUGH_PLANE_KEYWORDS` (a ``**keywords`` catch-all does not count: it would refuse them)."""
    if superResolve is None:
        from MedSRLib.pipeline import super_resolve as superResolve  # numpy only, no torch
    parameters = inspect.signature(superResolve).parameters
    return all(name in parameters and parameters[name].kind is not inspect.Parameter.VAR_KEYWORD
               for name in THROUGH_PLANE_KEYWORDS)


def libraryEstimatesThroughPlane(estimateSeconds: Optional[Callable[..., Any]] = None) -> bool:
    """True when ``estimateSeconds`` (default: the installed ``MedSRLib.pipeline.estimate_seconds``) takes
    ``plane``, so that its number is the through-plane run's; else the panel shows no estimate for one."""
    if estimateSeconds is None:
        from MedSRLib.pipeline import estimate_seconds as estimateSeconds  # numpy only, no torch
    return "plane" in keywordsTakenBy(estimateSeconds, {"plane": "through"})


def keywordsTakenBy(function: Callable[..., Any], keywords: Mapping[str, Any], exclude: tuple = ()) -> dict[str, Any]:
    """The items of ``keywords`` (less ``exclude``) that ``function`` names as parameters (for estimates: a
    missing one only makes the estimate coarser; a run requires all of them, :func:`libraryRunsThroughPlane`)."""
    parameters = inspect.signature(function).parameters
    return {k: v for k, v in keywords.items() if k not in exclude
            and k in parameters and parameters[k].kind is not inspect.Parameter.VAR_KEYWORD}


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

    def planText(self, scale: int, runsThroughPlane: bool) -> str:
        """What the run will do, one line (with the note when the library cannot run through-plane)."""
        if self.resolved == "in":
            return f"In-plane x{int(scale)}; the slice spacing ({self.sliceSpacing:.3g} mm) is kept."
        if not runsThroughPlane:
            return NEEDS_NEWER_LIBRARY + f" (in-plane x{int(scale)})"
        if self.factor < MIN_THROUGH_PLANE_FACTOR:
            return (f"Through-plane: {self.sliceSpacing:.3g} mm to {self.targetSpacing:.3g} mm is x{self.factor:.2f}, "
                    f"below x{MIN_THROUGH_PLANE_FACTOR:g}: nothing to do.")
        return (f"Through-plane along {AXIS_NAMES[self.sliceAxis]}: {self.slices} slices x {self.sliceSpacing:.3g} mm "
                f"-> {self.outputSlices} x {self.sliceSpacing / self.factor:.3g} mm (x{self.factor:.2f}), two orientations fused.")


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


def throughPlaneProblem(plan: PlanePlan, networks: Any) -> Optional[str]:
    """Why a through-plane run of ``plan`` would be refused before it starts (one line), or None: nothing to do
    (factor below :data:`MIN_THROUGH_PLANE_FACTOR`), or no through-plane network of ``networks`` (the cached
    catalog's) has shipped weights. An in-plane plan has none."""
    if plan.resolved != "through":
        return None
    if plan.factor < MIN_THROUGH_PLANE_FACTOR:
        return (f"Through-plane: {plan.sliceSpacing:.3g} mm to {plan.targetSpacing:.3g} mm is x{plan.factor:.2f}, below "
                f"x{MIN_THROUGH_PLANE_FACTOR:g}: nothing to do (choose a smaller target spacing, or In-plane).")
    if not any(n.hasWeights(max(n.scales)) for n in networks):
        return "No through-plane weights are shipped in this MedSR yet: choose Direction: In-plane."
    return None


def resolvedPlane(volume: Any, plane: str, *, scale: int, model: Any, axis: Any = None) -> str:
    """Which run ``plane`` makes on ``volume`` (a MedSRLib ``Volume``): ``"in"`` or ``"through"``. MedSRLib's
    ``pipeline.resolve_plane`` decides where the installed MedSRLib has it; else this module's rule."""
    from MedSRLib import pipeline

    resolve = getattr(pipeline, "resolve_plane", None)
    if resolve is not None:
        return resolve(volume, plane=plane, scale=scale, model=model, axis=axis)
    return planFor(volume, plane, 0.0, axis).resolved


def superResolveKeywords(resolved: str, targetSpacingMM: float, adaptSeconds: float) -> dict[str, Any]:
    """The through-plane keywords for ``super_resolve`` of a run that resolved to ``resolved``: ``plane``
    always; for a through-plane run also ``model=None`` (MedSRLib's through-plane network for the volume's
    modality), ``target_spacing`` and ``adapt_seconds`` when positive (0 in the panel = the library's
    default: near-isotropic, no adaptation). An in-plane run gets none of them (MedSRLib refuses them there)."""
    keywords: dict[str, Any] = {"plane": resolved}
    if resolved != "through":
        return keywords
    keywords["model"] = None
    if targetSpacingMM and targetSpacingMM > 0:
        keywords["target_spacing"] = float(targetSpacingMM)
    if adaptSeconds and adaptSeconds > 0:
        keywords["adapt_seconds"] = float(adaptSeconds)
    return keywords
