"""Data consistency: what did the network invent?

A super-resolved volume should, when degraded back with the *same* bicubic degradation that made the
training pairs (:func:`MedSRLib.resize.degrade`), reproduce the input it came from. This module
degrades the super-resolved (SR) volume slice by slice onto the input grid and compares it with the
input in the input's own units:

* per-slice and whole-volume PSNR and SSIM; the data range is the input's intensity-mapping range
  (CT: the fixed HU window width; MR: the robust-percentile range) and is reported with the numbers;
* max and 99th-percentile absolute difference (HU for CT, scanner units for MR);
* a difference volume ``degrade(SR) - input`` on the input grid (same geometry, float32, input units);
* slices whose PSNR falls well below the PSNR that bicubic upsampling of the input reaches on the
  same slice are flagged (slice content makes PSNR vary by 15 dB across a normal volume, so the
  per-slice bicubic reference, not the volume median, is the yardstick).

A perfect inverse scores infinitely (PSNR ``inf``, reported as ``null`` in JSON). Bicubic upsampling
of the input is the reference point: :func:`check_consistency` can score it beside the model.

Through-plane results (issue 20; ``plane='through'``, or inferred when only one axis changed size):
the SR volume is re-degraded along the slice axis with the *same* slice profile the networks were
trained with (:func:`MedSRLib.resize.slice_profile_degrade`: Gaussian, FWHM = the slice thickness --
DICOM SliceThickness, given, or the slice spacing --, sampled at the input's slice positions) and
compared slice by slice with the input; the reference is the one-axis cubic B-spline interpolation
of the input degraded the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import GeometryError, UnsupportedImageError
from .volume import Volume

#: A slice is flagged when its PSNR is this many dB below bicubic's PSNR on the same slice.
DEFAULT_FLAG_DROP_DB = 6.0


@dataclass
class ConsistencyReport:
    """Consistency of a super-resolved volume with its input (all values in the input's units).

    Attributes:
        psnr: whole-volume PSNR in dB (MSE over all voxels; ``inf`` when identical).
        ssim: mean of the per-slice SSIM.
        max_abs_diff, p99_abs_diff: of ``degrade(SR) - input``, input units.
        data_range: the range PSNR/SSIM use (input units), see module docstring.
        units: ``'HU'`` for CT, ``'a.u.'`` (scanner units) otherwise.
        slice_axis: numpy axis of the slices (0-2) in the input array.
        slice_psnr, slice_ssim: per slice, in slice order along ``slice_axis``.
        flagged_slices: slice indices whose PSNR is ``flag_drop_db`` below bicubic's on that slice.
        difference: the difference volume on the input grid (float32), or None if not kept.
        reference: the same report for bicubic upsampling of the input, when computed.
    """

    psnr: float
    ssim: float
    max_abs_diff: float
    p99_abs_diff: float
    data_range: float
    units: str
    scale: int
    slice_axis: int
    slice_psnr: list[float]
    slice_ssim: list[float]
    flagged_slices: list[int]
    difference: Volume | None = field(default=None, repr=False)
    reference: "ConsistencyReport | None" = None
    plane: str = "in"
    factor: float | None = None
    thickness_mm: float | None = None
    thickness_assumed: bool | None = None

    @property
    def degradation(self) -> str:
        """The degradation that mapped the SR volume back onto the input grid."""
        if self.plane == "through":
            return (f"slice profile along axis {self.slice_axis} (Gaussian, FWHM {self.thickness_mm:.4g} mm"
                    f"{', assumed = slice spacing' if self.thickness_assumed else ''}; MedSRLib.resize.slice_profile_degrade)")
        return "MATLAB bicubic (MedSRLib.resize.degrade)"

    def worst_slices(self, n: int = 5) -> list[dict[str, float]]:
        """The ``n`` slices with the lowest PSNR: ``[{"index", "psnr", "ssim"}]``."""
        order = np.argsort(np.asarray(self.slice_psnr, dtype=np.float64), kind="stable")[:n]
        return [
            {"index": int(k), "psnr": _json_float(self.slice_psnr[k]), "ssim": _json_float(self.slice_ssim[k])}
            for k in order
        ]

    def to_json(self) -> dict[str, Any]:
        """The ``"consistency"`` object of ``medsr run --check --json`` (``null`` PSNR = identical)."""
        data: dict[str, Any] = {
            "psnr": _json_float(self.psnr),
            "ssim": _json_float(self.ssim),
            "p99_abs_diff": _json_float(self.p99_abs_diff),
            "max_abs_diff": _json_float(self.max_abs_diff),
            "units": self.units,
            "data_range": _json_float(self.data_range),
            "scale": self.scale,
            "slice_axis": self.slice_axis,
            "worst_slices": self.worst_slices(),
            "flagged_slices": list(self.flagged_slices),
            "degradation": self.degradation,
            "plane": self.plane,
        }
        if self.plane == "through":
            data.update(factor=self.factor, thickness_mm=self.thickness_mm, thickness_assumed=self.thickness_assumed)
        if self.reference is not None:
            data["bspline_reference" if self.plane == "through" else "bicubic_reference"] = {
                k: v for k, v in self.reference.to_json().items() if k in ("psnr", "ssim", "p99_abs_diff", "max_abs_diff")
            }
        return data

    def summary(self) -> str:
        """A few human-readable lines (CLI and Slicer panel)."""
        lines = [
            f"consistency (degrade(SR) vs input, {self.units}, data range {self.data_range:g}): "
            f"PSNR {_fmt_db(self.psnr)}, SSIM {self.ssim:.4f}, p99 |diff| {self.p99_abs_diff:.4g}, "
            f"max |diff| {self.max_abs_diff:.4g}"
        ]
        if self.reference is not None:
            ref = self.reference
            lines.append(
                f"{'cubic B-spline' if self.plane == 'through' else 'bicubic'} reference: PSNR {_fmt_db(ref.psnr)}, SSIM {ref.ssim:.4f}, p99 |diff| {ref.p99_abs_diff:.4g}"
            )
        if self.flagged_slices:
            lines.append(f"flagged slices (axis {self.slice_axis}): {', '.join(map(str, self.flagged_slices))}")
        return "\n".join(lines)


def infer_slice_axis(input_shape: tuple[int, ...], sr_shape: tuple[int, ...], scale: int) -> int:
    """The numpy axis whose size is unchanged while the other two are multiplied by ``scale``."""
    candidates = [
        a
        for a in range(3)
        if sr_shape[a] == input_shape[a]
        and all(sr_shape[b] == scale * input_shape[b] for b in range(3) if b != a)
    ]
    if not candidates:
        raise GeometryError(
            f"SR shape {tuple(sr_shape)} is not the input shape {tuple(input_shape)} scaled x{scale} "
            "in-plane; check --scale or the file pair"
        )
    return candidates[0]


def _check_grids(input_volume: Volume, sr_volume: Volume, scale: int, slice_axis: int, plan: Any = None) -> None:
    """The SR grid must be the output grid of the plan (:func:`MedSRLib.geometry.in_plane_plan`, or the
    through-plane ``plan`` of :func:`MedSRLib.geometry.plan_output_grid`)."""
    from .geometry import in_plane_plan

    expected = (plan if plan is not None else in_plane_plan(input_volume, scale=scale, slice_axis=slice_axis)).output
    if tuple(sr_volume.shape) != tuple(expected.shape):
        raise GeometryError(
            f"SR shape {sr_volume.shape} does not match the input x{scale} along axis {slice_axis} "
            f"(expected {tuple(expected.shape)}); check --scale and --axis"
        )
    if not np.allclose(sr_volume.direction, expected.direction, atol=1e-4):
        raise GeometryError("SR and input have different direction matrices; they are not a super-resolution pair")
    if not np.allclose(sr_volume.spacing, expected.spacing, rtol=1e-3, atol=1e-5):
        raise GeometryError(
            f"SR spacing {tuple(round(s, 5) for s in sr_volume.spacing)} is not the input spacing divided by "
            f"{scale} {'along the slice axis' if plan is not None else 'in-plane'} (expected {tuple(round(s, 5) for s in expected.spacing)})"
        )
    tolerance = 0.05 * min(expected.spacing)
    if np.max(np.abs(np.asarray(sr_volume.origin) - np.asarray(expected.origin))) > tolerance:
        raise GeometryError(
            "SR origin does not preserve the input's field of view (expected "
            f"{tuple(round(o, 3) for o in expected.origin)}, got {tuple(round(o, 3) for o in sr_volume.origin)} mm)"
        )


def _slice_scores(degraded: np.ndarray, reference: np.ndarray, data_range: float) -> tuple[list[float], list[float]]:
    from .metrics import psnr, ssim

    psnrs, ssims = [], []
    for k in range(reference.shape[0]):
        psnrs.append(float(psnr(degraded[k], reference[k], data_range=data_range)))
        ssims.append(float(ssim(degraded[k], reference[k], data_range=data_range)))
    return psnrs, ssims


def _score(
    input_volume: Volume,
    stack_in: np.ndarray,
    degraded: np.ndarray,
    *,
    data_range: float,
    units: str,
    scale: int,
    slice_axis: int,
    keep_difference: bool,
    flag_drop_db: float,
    reference_psnr: list[float] | None,
) -> ConsistencyReport:
    diff = degraded - stack_in  # (n, h, w) float64, input units
    mse = float(np.mean(diff * diff))
    whole_psnr = math.inf if mse == 0 else 10.0 * math.log10(data_range * data_range / mse)
    slice_psnr, slice_ssim = _slice_scores(degraded, stack_in, data_range)
    flagged: list[int] = []
    if reference_psnr is not None:
        flagged = [
            k for k, (p, ref) in enumerate(zip(slice_psnr, reference_psnr)) if p < ref - flag_drop_db
        ]
    abs_diff = np.abs(diff)
    difference = None
    if keep_difference:
        difference = input_volume.with_array(
            np.ascontiguousarray(np.moveaxis(diff.astype(np.float32), 0, slice_axis)),
            metadata={**input_volume.metadata, "units": units, "medsr_difference": "degrade(SR) - input"},
        )
    return ConsistencyReport(
        psnr=whole_psnr,
        ssim=float(np.mean(slice_ssim)),
        max_abs_diff=float(abs_diff.max()),
        p99_abs_diff=float(np.percentile(abs_diff, 99)),
        data_range=float(data_range),
        units=units,
        scale=scale,
        slice_axis=slice_axis,
        slice_psnr=slice_psnr,
        slice_ssim=slice_ssim,
        flagged_slices=flagged,
        difference=difference,
    )


def infer_plane(input_shape: tuple[int, ...], sr_shape: tuple[int, ...]) -> str:
    """``'through'`` when exactly one axis changed size (grew), else ``'in'``."""
    changed = [a for a in range(3) if int(sr_shape[a]) != int(input_shape[a])]
    return "through" if len(changed) == 1 and sr_shape[changed[0]] > input_shape[changed[0]] else "in"


def check_consistency(
    input_volume: Volume,
    sr_volume: Volume,
    *,
    scale: int | None = None,
    axis: int | str | None = None,
    plane: str | None = None,
    thickness: float | None = None,
    reference: bool = True,
    keep_difference: bool = True,
    flag_drop_db: float = DEFAULT_FLAG_DROP_DB,
) -> ConsistencyReport:
    """Degrade ``sr_volume`` back onto ``input_volume``'s grid and compare (see module docstring).

    Args:
        input_volume: the low-resolution input the SR volume was made from.
        sr_volume: the super-resolved volume (any tool's output on the MedSR grid convention).
        scale: the integer in-plane scale (in-plane checks; needed there).
        plane: ``'in'``, ``'through'`` or None (``'through'`` when only one axis changed size).
        thickness: through-plane: slice thickness in mm (default: DICOM SliceThickness, else the
            slice spacing), as :func:`MedSRLib.geometry.thick_slices`.
        axis: slice axis (as :func:`MedSRLib.geometry.resolve_slice_axis`); None infers it from the shapes.
        reference: attach the bicubic reference's scores to the report (``report.reference``); they are
            always computed, since flags compare each slice with bicubic's PSNR on it.
        keep_difference: keep the difference volume (``report.difference``).
        flag_drop_db: flag slices whose PSNR is this many dB below bicubic's on the same slice.

    Raises:
        GeometryError: the grids do not correspond (shape, spacing, direction, field of view).
        UnsupportedImageError: the SR volume has NaN or Inf values.
    """
    from .geometry import resolve_slice_axis
    from .intensity import IntensityMapping, guess_modality
    from .resize import degrade, imresize

    if plane is None:
        plane = infer_plane(input_volume.shape, sr_volume.shape) if scale is None else "in"
    if plane == "through":
        return _check_through_plane(input_volume, sr_volume, axis=axis, thickness=thickness, reference=reference,
                                    keep_difference=keep_difference, flag_drop_db=flag_drop_db)
    if plane != "in":
        raise GeometryError(f"plane must be 'in' or 'through'; got {plane!r}")
    if scale is None:
        raise GeometryError("an in-plane consistency check needs the scale (--scale)")
    if isinstance(scale, bool) or int(scale) != scale or int(scale) < 2:
        raise GeometryError(f"scale must be an integer >= 2; got {scale!r}")
    scale = int(scale)
    if axis is None:
        slice_axis = infer_slice_axis(input_volume.shape, sr_volume.shape, scale)
    else:
        slice_axis = resolve_slice_axis(input_volume, axis)
    _check_grids(input_volume, sr_volume, scale, slice_axis)
    if not np.all(np.isfinite(sr_volume.array)):
        raise UnsupportedImageError("the SR volume contains NaN or Inf values; it cannot be checked (re-run the model)")

    modality = (input_volume.modality or guess_modality(input_volume)).upper()
    mapping = IntensityMapping.fit(input_volume.array, modality=modality)
    data_range = float(mapping.high - mapping.low)
    units = "HU" if modality == "CT" else "a.u."

    stack_in = np.moveaxis(np.asarray(input_volume.array, dtype=np.float64), slice_axis, 0)
    stack_in = np.nan_to_num(stack_in, nan=mapping.low)
    stack_sr = np.moveaxis(np.asarray(sr_volume.array, dtype=np.float64), slice_axis, 0)
    degraded = np.asarray(degrade(stack_sr, scale=scale), dtype=np.float64)
    options = dict(data_range=data_range, units=units, scale=scale, slice_axis=slice_axis, flag_drop_db=flag_drop_db)
    bicubic_round_trip = np.asarray(degrade(imresize(stack_in, scale=scale), scale=scale), dtype=np.float64)
    ref = _score(input_volume, stack_in, bicubic_round_trip, keep_difference=False, reference_psnr=None, **options)
    report = _score(
        input_volume, stack_in, degraded, keep_difference=keep_difference, reference_psnr=ref.slice_psnr, **options
    )
    if reference:
        report.reference = ref
    return report


def _input_units(input_volume: Volume) -> tuple[Any, float, str]:
    """``(mapping, data range, units)`` of the input (the PSNR/SSIM data range, see module docstring)."""
    from .intensity import IntensityMapping, guess_modality

    modality = (input_volume.modality or guess_modality(input_volume)).upper()
    mapping = IntensityMapping.fit(input_volume.array, modality=modality)
    return mapping, float(mapping.high - mapping.low), "HU" if modality == "CT" else "a.u."


def _check_through_plane(input_volume: Volume, sr_volume: Volume, *, axis: int | str | None, thickness: float | None,
                         reference: bool, keep_difference: bool, flag_drop_db: float) -> ConsistencyReport:
    """Through-plane: re-degrade along the slice axis with the slice profile (module docstring)."""
    from .geometry import plan_output_grid, thick_slices
    from .resize import interpolate_axis, slice_profile_degrade

    if axis is None:
        changed = [a for a in range(3) if sr_volume.shape[a] != input_volume.shape[a]]
        if len(changed) != 1:
            raise GeometryError(f"SR shape {tuple(sr_volume.shape)} differs from the input {tuple(input_volume.shape)} "
                                "along more than one axis; pass the slice axis (--axis) or check the file pair")
        axis = changed[0]
    facts = thick_slices(input_volume, axis=axis, thickness=thickness)
    a, n, n_out = facts.axis, facts.n_slices, int(sr_volume.shape[facts.axis])
    if n_out <= n:
        raise GeometryError(f"the SR volume has {n_out} samples along the slice axis {a}, the input {n}: not a "
                            "through-plane super-resolution of it")
    factors = [1.0, 1.0, 1.0]
    factors[a] = n_out / n
    plan = plan_output_grid(input_volume, factors)
    _check_grids(input_volume, sr_volume, 0, a, plan=plan)
    if not np.all(np.isfinite(sr_volume.array)):
        raise UnsupportedImageError("the SR volume contains NaN or Inf values; it cannot be checked (re-run the model)")
    mapping, data_range, units = _input_units(input_volume)
    factor = n_out / n
    thickness_sr = facts.thickness * factor / facts.spacing  # FWHM in SR samples

    def back(values: np.ndarray) -> np.ndarray:
        degraded = slice_profile_degrade(np.asarray(values, dtype=np.float64), axis=a, factor=factor, thickness=thickness_sr)
        return np.moveaxis(degraded, a, 0)

    stack_in = np.nan_to_num(np.moveaxis(np.asarray(input_volume.array, dtype=np.float64), a, 0), nan=mapping.low)
    options = dict(data_range=data_range, units=units, scale=int(np.ceil(factor - 1e-9)), slice_axis=a,
                   flag_drop_db=flag_drop_db)
    bspline = interpolate_axis(np.moveaxis(stack_in, 0, a), axis=a, n_out=n_out, kind="bspline3")
    ref = _score(input_volume, stack_in, back(bspline), keep_difference=False, reference_psnr=None, **options)
    del bspline
    report = _score(input_volume, stack_in, back(sr_volume.array), keep_difference=keep_difference,
                    reference_psnr=ref.slice_psnr, **options)
    for r in (report, ref):
        r.plane, r.factor, r.thickness_mm, r.thickness_assumed = "through", factor, facts.thickness, facts.thickness_assumed
    if reference:
        report.reference = ref
    return report


def _json_float(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def _fmt_db(value: float) -> str:
    return "inf dB (identical)" if math.isinf(value) else f"{value:.2f} dB"
