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
            "degradation": "MATLAB bicubic (MedSRLib.resize.degrade)",
        }
        if self.reference is not None:
            data["bicubic_reference"] = {
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
                f"bicubic reference: PSNR {_fmt_db(ref.psnr)}, SSIM {ref.ssim:.4f}, p99 |diff| {ref.p99_abs_diff:.4g}"
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


def _check_grids(input_volume: Volume, sr_volume: Volume, scale: int, slice_axis: int) -> None:
    """The SR grid must be the output grid of the plan (:func:`MedSRLib.geometry.in_plane_plan`)."""
    from .geometry import in_plane_plan

    expected = in_plane_plan(input_volume, scale=scale, slice_axis=slice_axis).output
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
            f"{scale} in-plane (expected {tuple(round(s, 5) for s in expected.spacing)})"
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


def check_consistency(
    input_volume: Volume,
    sr_volume: Volume,
    *,
    scale: int,
    axis: int | str | None = None,
    reference: bool = True,
    keep_difference: bool = True,
    flag_drop_db: float = DEFAULT_FLAG_DROP_DB,
) -> ConsistencyReport:
    """Degrade ``sr_volume`` back onto ``input_volume``'s grid and compare (see module docstring).

    Args:
        input_volume: the low-resolution input the SR volume was made from.
        sr_volume: the super-resolved volume (any tool's output on the MedSR grid convention).
        scale: the integer in-plane scale.
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


def _json_float(value: float) -> float | None:
    return None if not math.isfinite(value) else float(value)


def _fmt_db(value: float) -> str:
    return "inf dB (identical)" if math.isinf(value) else f"{value:.2f} dB"
