"""The one place MedSRLib converts geometry.

Conventions (docs/ARCHITECTURE.md): numpy arrays are ``(z, y, x)`` = ``array[k, j, i]``; ``spacing``,
``origin`` and the *columns* of ``direction`` are in ITK index order ``(i, j, k)`` and in ITK's **LPS**
physical frame (mm). ITK index axis ``a`` is numpy axis ``2 - a``. Voxel ``(i, j, k)`` is centred at
``origin + direction @ (spacing * [i, j, k])``.

3D Slicer uses **RAS**: ``RAS = diag(-1, -1, 1) @ LPS``, and a volume node's IJK-to-RAS matrix is
``[[D_ras * spacing, origin_ras], [0, 0, 0, 1]]`` with IJK = ITK index order (Slicer/Slicer
``vtkMRMLVolumeNode`` and ``vtkITKArchetypeImageSeriesReader``; see the design notes
``slicer-conventions.md`` sections 3.3-3.6).

In-plane super-resolution by an integer factor ``s`` preserves the field of view (outer voxel edges):
output index ``i'`` maps to input index ``i = (i' + 0.5) / s - 0.5`` along each upsampled axis, so
the output spacing is ``spacing / s`` and the origin moves by ``(1/s - 1)/2 * spacing * d`` along
each upsampled axis direction ``d`` (slicer-conventions.md 3.6 C).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from .errors import GeometryError, ScaleError
from .volume import Volume

if TYPE_CHECKING:  # SimpleITK is imported lazily: the Slicer module imports this file at startup
    import SimpleITK as sitk

__all__ = [
    "Grid",
    "GridPlan",
    "LPS_TO_RAS",
    "PLANE_ROWS",
    "RADIOLOGICAL_SCREEN",
    "DisplayView",
    "PlaneGeometry",
    "SuperResolvedGrid",
    "ThickSlices",
    "field_of_view",
    "geometry_from_ijk_to_ras",
    "ijk_to_ras_matrix",
    "in_plane_plan",
    "lps_to_ras",
    "plan_output_grid",
    "plane_geometry",
    "radiological_view",
    "ras_to_lps",
    "resolve_slice_axis",
    "super_resolved_geometry",
    "thick_slices",
    "volume_from_sitk",
    "volume_from_slicer_arrays",
    "volume_to_sitk",
]

#: LPS -> RAS (and RAS -> LPS: it is its own inverse). det = +1, so handedness is unchanged.
LPS_TO_RAS: np.ndarray = np.diag([-1.0, -1.0, 1.0])
LPS_TO_RAS.setflags(write=False)

#: The LPS row a plane's *normal* is aligned with: axial slices are normal to S (row 2),
#: coronal to A/P (row 1), sagittal to L/R (row 0).
PLANE_ROWS: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}

#: A direction column is "clearly aligned" with an anatomical axis when |cos| >= this ...
MIN_ALIGNMENT = 0.6
#: ... and beats the next-best axis by at least this much (a 45 deg oblique plane ties at 0.707).
MIN_ALIGNMENT_MARGIN = 0.1
#: Spacings within this relative tolerance count as equal when choosing the default slice axis.
SPACING_TIE_RTOL = 1e-3
#: Tolerance on ``D^T D = I`` for a direction matrix to count as orthonormal.
ORTHONORMAL_ATOL = 1e-4

AxisLike = Union[int, str, None]


@dataclass(frozen=True)
class SuperResolvedGrid:
    """The output grid of an in-plane super-resolution.

    Attributes:
        shape: numpy shape ``(z, y, x)`` of the output array.
        spacing: output voxel size in mm, ITK order ``(i, j, k)``.
        origin: LPS mm of the centre of output voxel (0, 0, 0).
        direction: 3x3 LPS direction cosines (columns = index axes i, j, k), the input's.
        scale: the integer in-plane factor.
        slice_axis: the numpy axis that was not upsampled.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    scale: int
    slice_axis: int

    def to_volume(self, array: np.ndarray, **fields: Any) -> Volume:
        """A :class:`Volume` on this grid holding ``array`` (shape must be :attr:`shape`)."""
        if tuple(np.shape(array)) != tuple(self.shape):
            raise GeometryError(f"array shape {np.shape(array)} does not match the grid shape {self.shape}")
        return Volume(array=array, spacing=self.spacing, origin=self.origin, direction=self.direction, **fields)


# --------------------------------------------------------------------------------------------------
# Slice axis


def _check_direction(direction: np.ndarray) -> np.ndarray:
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(d)) or not np.allclose(d.T @ d, np.eye(3), atol=ORTHONORMAL_ATOL):
        raise GeometryError(
            "the direction matrix is not orthonormal (sheared or scaled axes); resample the image onto an "
            "orthogonal grid first"
        )
    return d


def _plane_axis(volume: Volume, plane: str) -> int:
    """Numpy axis whose index direction is most aligned with the plane's normal (LPS row)."""
    d = _check_direction(volume.direction)
    alignment = np.abs(d[PLANE_ROWS[plane], :])  # per ITK index axis
    order = np.argsort(alignment)[::-1]
    best, second = alignment[order[0]], alignment[order[1]]
    if best < MIN_ALIGNMENT or best - second < MIN_ALIGNMENT_MARGIN:
        raise GeometryError(
            f"no array axis is clearly normal to the {plane} plane (oblique acquisition, best alignment "
            f"{best:.2f}); pass the numpy axis 0, 1 or 2 instead"
        )
    return 2 - int(order[0])


def resolve_slice_axis(volume: Volume, axis: AxisLike = None) -> int:
    """The numpy axis (0, 1 or 2 of the ``(z, y, x)`` array) normal to the slices to super-resolve.

    Args:
        volume: the input volume.
        axis: ``None`` = the acquisition's slice axis: the axis with the largest spacing (spacings
            within 0.1 % tie). When two axes tie for the largest (square in-plane pixels coarser than
            the slice spacing, e.g. a multi-frame MR with 3.4 mm pixels and 2.4 mm slices) the third
            axis is the slice axis; when all three tie (isotropic), the axis most aligned with S
            (axial slices). An axis of length 1 (a 2D image read as one slice) always wins. ``'axial'``, ``'coronal'``,
            ``'sagittal'`` = the index axis whose direction column is most aligned with S, A/P, L/R
            (never assumed from the array order; an oblique plane with no clearly aligned axis raises).
            ``0``, ``1``, ``2`` (or their strings) = that numpy axis.

    Raises:
        GeometryError: an unknown value, or no axis clearly normal to the named plane.
    """
    if axis is None:
        singleton = [a for a in range(3) if volume.shape[a] == 1]
        if singleton:
            return singleton[0]
        spacing_np = np.asarray(volume.spacing[::-1])  # numpy axis order
        tied = np.flatnonzero(spacing_np >= spacing_np.max() * (1.0 - SPACING_TIE_RTOL))
        if len(tied) == 1:
            return int(tied[0])
        if len(tied) == 2:  # square coarse pixels over thinner slices: the odd axis is the slice axis
            return int(np.setdiff1d(np.arange(3), tied)[0])
        s_alignment = np.abs(np.asarray(volume.direction)[2, ::-1])  # per numpy axis
        return int(max(tied, key=lambda a: (s_alignment[a], a)))
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, (bool, np.bool_)):
        if 0 <= int(axis) <= 2:
            return int(axis)
    elif isinstance(axis, str):
        key = axis.strip().lower()
        if key in PLANE_ROWS:
            return _plane_axis(volume, key)
        if key in ("0", "1", "2"):
            return int(key)
    raise GeometryError(f"axis must be None, 'axial', 'coronal', 'sagittal' or a numpy axis 0, 1, 2; got {axis!r}")


# --------------------------------------------------------------------------------------------------
# Super-resolved grid


@dataclass(frozen=True)
class Grid:
    """A voxel grid: numpy ``shape`` ``(z, y, x)``; ``spacing`` (mm) and ``origin`` (LPS mm, centre of
    voxel (0, 0, 0)) in ITK order ``(i, j, k)``; ``direction`` 3x3 LPS cosines (columns = i, j, k)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray

    @classmethod
    def of(cls, volume: Volume | SuperResolvedGrid) -> "Grid":
        """The grid of a volume (its array is not read)."""
        return cls(
            shape=tuple(int(n) for n in volume.shape),  # type: ignore[arg-type]
            spacing=tuple(float(v) for v in volume.spacing),  # type: ignore[arg-type]
            origin=tuple(float(v) for v in volume.origin),  # type: ignore[arg-type]
            direction=np.array(volume.direction, dtype=np.float64),
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (``shape_zyx``, ``spacing``, ``origin``, ``direction`` row-major)."""
        return {
            "shape_zyx": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": [[float(v) for v in row] for row in np.asarray(self.direction)],
        }


@dataclass(frozen=True)
class GridPlan:
    """The output-grid plan of a super-resolution: which axes are upsampled, by how much, and the
    input and output grids. Computed once by :func:`plan_output_grid` (in-plane integer scale:
    :func:`in_plane_plan`) and carried in the result's metadata (``metadata["medsr"]["grid"]``).

    Attributes:
        input: the input :class:`Grid`.
        output: the output :class:`Grid` (same field of view: outer voxel edges are kept).
        factors: per numpy axis ``(z, y, x)``, the effective factor ``output.shape / input.shape``
            (floats >= 1; 1.0 = axis not upsampled). Output spacing = input spacing / factor.
        requested: the factors asked for (the output size along an axis is ``round(n * requested)``,
            so ``factors`` differs from ``requested`` when ``n * requested`` is not an integer).
    """

    input: Grid
    output: Grid
    factors: tuple[float, float, float]
    requested: tuple[float, float, float]

    @property
    def upsampled_axes(self) -> tuple[int, ...]:
        """Numpy axes (0 = z, 1 = y, 2 = x) with a factor > 1."""
        return tuple(a for a, f in enumerate(self.factors) if f > 1.0)

    @property
    def slice_axis(self) -> int | None:
        """The one numpy axis left alone when exactly two are upsampled (in-plane SR), else None."""
        kept = [a for a, f in enumerate(self.factors) if f == 1.0]
        return kept[0] if len(kept) == 1 else None

    @property
    def in_plane_scale(self) -> int | None:
        """The integer in-plane factor when this is in-plane SR with one integer factor, else None."""
        if self.slice_axis is None:
            return None
        values = {self.factors[a] for a in self.upsampled_axes}
        value = values.pop() if len(values) == 1 else None
        return int(value) if value is not None and float(value).is_integer() else None

    def to_volume(self, array: np.ndarray, **fields: Any) -> Volume:
        """A :class:`Volume` on the output grid holding ``array`` (shape must be ``output.shape``)."""
        if tuple(np.shape(array)) != tuple(self.output.shape):
            raise GeometryError(f"array shape {np.shape(array)} does not match the grid shape {self.output.shape}")
        out = self.output
        return Volume(array=array, spacing=out.spacing, origin=out.origin, direction=out.direction, **fields)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: ``factors_zyx``, ``requested_zyx``, ``upsampled_axes``, ``input``, ``output``."""
        return {
            "factors_zyx": [float(f) for f in self.factors],
            "requested_zyx": [float(f) for f in self.requested],
            "upsampled_axes": list(self.upsampled_axes),
            "input": self.input.to_json(),
            "output": self.output.to_json(),
        }


def _check_factor(value: Any, axis: int) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ScaleError(f"factor for numpy axis {axis} must be a number >= 1; got {value!r}")
    factor = float(value)
    if not np.isfinite(factor) or factor < 1.0:
        raise ScaleError(f"factor for numpy axis {axis} must be a finite number >= 1; got {value!r}")
    return factor


def plan_output_grid(volume: Volume | Grid, factors: Any) -> GridPlan:
    """Plan the output grid of ``volume`` upsampled by per-axis ``factors`` (numpy order ``(z, y, x)``,
    floats >= 1).

    Along numpy axis ``a`` with ``n`` voxels the output has ``n' = round(n * f)`` voxels (at least
    ``n``); the effective factor is ``f' = n' / n``, the spacing ``spacing / f'``, and the origin moves
    by ``(1/f' - 1)/2 * spacing * d`` along the axis direction ``d``, so the field of view (outer voxel
    edges) is exactly the input's: output index ``i'`` sits at input index ``(i' + 0.5) / f' - 0.5``.
    The direction is unchanged. An integer ``f`` gives exactly ``n f`` voxels and ``spacing / f``.

    Raises:
        ScaleError: a factor that is not a finite number >= 1, or not three factors.
    """
    values = list(factors) if isinstance(factors, (list, tuple, np.ndarray)) else None
    if values is None or len(values) != 3:
        raise ScaleError(f"factors must be three numbers >= 1 in numpy order (z, y, x); got {factors!r}")
    requested = tuple(_check_factor(v, a) for a, v in enumerate(values))
    grid_in = volume if isinstance(volume, Grid) else Grid.of(volume)
    shape_in = grid_in.shape
    shape_out = tuple(max(int(n), int(np.floor(int(n) * f + 0.5))) for n, f in zip(shape_in, requested))
    effective = tuple(float(m) / float(n) if n else f for n, m, f in zip(shape_in, shape_out, requested))
    direction = np.array(grid_in.direction, dtype=np.float64)
    spacing = np.asarray(grid_in.spacing, dtype=np.float64)
    origin = np.asarray(grid_in.origin, dtype=np.float64).copy()
    itk_factors = np.array(effective[::-1], dtype=np.float64)  # ITK order (i, j, k) = numpy (x, y, z)
    origin += direction @ ((1.0 / itk_factors - 1.0) / 2.0 * spacing)
    grid_out = Grid(
        shape=shape_out,  # type: ignore[arg-type]
        spacing=tuple(float(v) for v in spacing / itk_factors),  # type: ignore[arg-type]
        origin=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=direction,
    )
    return GridPlan(input=grid_in, output=grid_out, factors=effective, requested=requested)  # type: ignore[arg-type]


def in_plane_plan(volume: Volume | Grid, *, scale: int, slice_axis: int) -> GridPlan:
    """:func:`plan_output_grid` for in-plane SR: integer ``scale`` on the two numpy axes other than
    ``slice_axis`` (0, 1 or 2), factor 1 on ``slice_axis``."""
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, np.integer)) or int(scale) < 1:
        raise ScaleError(f"scale must be an integer >= 1; got {scale!r}")
    if isinstance(slice_axis, (bool, np.bool_)) or not isinstance(slice_axis, (int, np.integer)) or not 0 <= slice_axis <= 2:
        raise GeometryError(f"slice_axis must be a numpy axis 0, 1 or 2; got {slice_axis!r}")
    return plan_output_grid(volume, [1 if a == int(slice_axis) else int(scale) for a in range(3)])


#: ``plane='auto'`` super-resolves the slice axis when its spacing is at least this times the in-plane spacing.
THICK_SLICE_RATIO = 2.0
#: Fewest slices along the thick axis a through-plane run accepts.
MIN_THICK_SLICES = 4
#: A slice thickness outside [1/4, 4] x the slice spacing contradicts it (a reading or header error).
THICKNESS_RATIO_LIMITS = (0.25, 4.0)
#: DICOM SpacingBetweenSlices may differ from the spacing of the slice positions by this fraction.
SPACING_TAG_RTOL = 0.1


@dataclass(frozen=True)
class ThickSlices:
    """The slice facts of a volume for through-plane super-resolution (mm).

    Attributes:
        axis: the thick numpy axis (0 = z, 1 = y, 2 = x).
        spacing: distance between slice centres along it (the grid spacing), mm.
        in_plane: the finest spacing of the two other axes, mm.
        thickness: the slice profile's FWHM, mm (DICOM SliceThickness, given, or = spacing).
        thickness_source: ``'DICOM SliceThickness'``, ``'given'`` or ``'assumed = slice spacing'``.
        n_slices: samples along ``axis``.
    """

    axis: int
    spacing: float
    in_plane: float
    thickness: float
    thickness_source: str
    n_slices: int

    @property
    def thickness_assumed(self) -> bool:
        """True when no thickness was known (DICOM tag or given) and ``thickness = spacing`` was assumed."""
        return self.thickness_source.startswith("assumed")

    @property
    def gap(self) -> float:
        """Gap between slices, mm: ``spacing - thickness`` when positive (overlap otherwise: 0)."""
        return max(0.0, self.spacing - self.thickness)

    @property
    def is_thick(self) -> bool:
        """Slice spacing >= :data:`THICK_SLICE_RATIO` x the in-plane spacing (``plane='auto'`` goes through-plane)."""
        return self.spacing >= THICK_SLICE_RATIO * self.in_plane * (1.0 - SPACING_TIE_RTOL)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (mm)."""
        return {"axis": self.axis, "spacing_mm": self.spacing, "in_plane_mm": self.in_plane,
                "thickness_mm": self.thickness, "thickness_source": self.thickness_source,
                "thickness_assumed": self.thickness_assumed, "gap_mm": self.gap, "n_slices": self.n_slices}


def thick_slices(volume: Volume, *, axis: AxisLike = None, thickness: float | None = None) -> ThickSlices:
    """The :class:`ThickSlices` of ``volume`` along ``axis`` (:func:`resolve_slice_axis`; default the
    largest spacing), checked for a through-plane run.

    The thickness is ``thickness`` (mm) when given, else the DICOM SliceThickness the reader recorded
    (``metadata["slice_thickness_mm"]``), else the slice spacing (stated as assumed).

    Raises:
        UnsupportedImageError: a 2D image (one slice, or read from a 2D file).
        InputSizeError: fewer than :data:`MIN_THICK_SLICES` slices.
        GeometryError: a thickness outside :data:`THICKNESS_RATIO_LIMITS` x the spacing, or a DICOM
            SpacingBetweenSlices that contradicts the slice positions.
    """
    from .errors import InputSizeError, UnsupportedImageError

    meta = volume.metadata or {}
    if meta.get("image_2d") or 1 in tuple(volume.shape):
        raise UnsupportedImageError(
            f"through-plane super-resolution needs a 3D volume; this is a 2D image (shape {tuple(volume.shape)}): "
            "use --plane in")
    a = resolve_slice_axis(volume, axis)
    spacing_np = [float(v) for v in volume.spacing[::-1]]
    spacing = spacing_np[a]
    in_plane = min(spacing_np[b] for b in range(3) if b != a)
    n = int(volume.shape[a])
    if n < MIN_THICK_SLICES:
        raise InputSizeError(f"through-plane super-resolution needs at least {MIN_THICK_SLICES} slices along the slice "
                             f"axis {a}; this volume has {n}")
    tag = meta.get("spacing_between_slices_mm")
    if tag is not None and meta.get("format") == "dicom" and abs(float(tag) - spacing) > SPACING_TAG_RTOL * spacing:
        raise GeometryError(f"DICOM SpacingBetweenSlices is {float(tag):g} mm but the slice positions are {spacing:.4g} mm "
                            "apart; the header contradicts the geometry: check the series")
    if thickness is not None:
        if isinstance(thickness, bool) or not isinstance(thickness, (int, float, np.integer, np.floating)) \
                or not np.isfinite(thickness) or thickness <= 0:
            raise GeometryError(f"slice thickness must be a positive number of mm; got {thickness!r}")
        value, source = float(thickness), "given"
    elif meta.get("slice_thickness_mm") is not None:
        value, source = float(meta["slice_thickness_mm"]), "DICOM SliceThickness"
    else:
        value, source = spacing, "assumed = slice spacing"
    low, high = THICKNESS_RATIO_LIMITS
    if not np.isfinite(value) or not low * spacing <= value <= high * spacing:
        raise GeometryError(f"slice thickness {value:g} mm ({source}) contradicts the slice spacing {spacing:.4g} mm "
                            f"(expected {low:g}-{high:g} x the spacing); pass the right thickness")
    return ThickSlices(axis=a, spacing=spacing, in_plane=in_plane, thickness=value, thickness_source=source, n_slices=n)


def super_resolved_geometry(volume: Volume, *, scale: int, slice_axis: int) -> SuperResolvedGrid:
    """The grid of ``volume`` upsampled ``scale`` times in the two axes other than ``slice_axis``
    (:func:`in_plane_plan`'s output grid with its scale and slice axis).

    In-plane spacing is divided by ``scale``; the slice spacing and the direction are unchanged; the
    origin moves by ``(1/scale - 1)/2 * spacing_a * direction[:, a]`` for each upsampled ITK axis
    ``a``, so the field of view (outer voxel edges) is exactly the input's.

    Args:
        volume: the input volume (its array is not read).
        scale: integer factor >= 1.
        slice_axis: numpy axis 0, 1 or 2 left unchanged (see :func:`resolve_slice_axis`).
    """
    plan = in_plane_plan(volume, scale=scale, slice_axis=slice_axis)
    out = plan.output
    return SuperResolvedGrid(
        shape=out.shape, spacing=out.spacing, origin=out.origin, direction=out.direction,
        scale=int(scale), slice_axis=int(slice_axis),
    )


def field_of_view(grid: Volume | SuperResolvedGrid) -> tuple[np.ndarray, np.ndarray]:
    """LPS bounding box ``(min_corner, max_corner)`` in mm of the outer voxel *edges* of a grid.

    The 8 corners at continuous indices ``-0.5`` and ``n - 0.5`` are mapped to LPS.
    """
    size = np.asarray(grid.shape[::-1], dtype=np.float64)  # ITK order
    corners = np.array([[-0.5 + c[a] * size[a] for a in range(3)] for c in np.ndindex(2, 2, 2)])
    points = np.asarray(grid.origin) + (corners * np.asarray(grid.spacing)) @ np.asarray(grid.direction).T
    return points.min(axis=0), points.max(axis=0)


# --------------------------------------------------------------------------------------------------
# Slicer (RAS) conversions


def lps_to_ras(points: Any) -> np.ndarray:
    """Points ``(..., 3)`` in LPS mm -> RAS mm (negate x and y). Its own inverse (see :func:`ras_to_lps`)."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-1:] != (3,):
        raise GeometryError(f"points must have shape (..., 3); got {points.shape}")
    return points @ LPS_TO_RAS.T


def ras_to_lps(points: Any) -> np.ndarray:
    """Points ``(..., 3)`` in RAS mm -> LPS mm (the same sign flip as :func:`lps_to_ras`)."""
    return lps_to_ras(points)


def ijk_to_ras_matrix(volume: Volume | SuperResolvedGrid) -> np.ndarray:
    """Slicer's 4x4 IJK-to-RAS matrix of a volume (IJK = ITK index order i, j, k = numpy 2, 1, 0).

    ``M[:3, :3] = LPS_TO_RAS @ direction @ diag(spacing)``, ``M[:3, 3] = LPS_TO_RAS @ origin``.
    """
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_TO_RAS @ np.asarray(volume.direction, dtype=np.float64) @ np.diag(volume.spacing)
    matrix[:3, 3] = LPS_TO_RAS @ np.asarray(volume.origin, dtype=np.float64)
    return matrix


def geometry_from_ijk_to_ras(
    matrix: Any,
) -> tuple[tuple[float, float, float], tuple[float, float, float], np.ndarray]:
    """Exact inverse of :func:`ijk_to_ras_matrix`: ``(spacing, origin_lps, direction_lps)``.

    Spacing is the column norms (always positive; flips stay in the direction), as Slicer's
    ``SetIJKToRASMatrix`` decomposes it.

    Raises:
        GeometryError: not a finite affine 4x4 matrix, a zero column, or sheared (non-orthogonal) axes.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)) or not np.allclose(m[3], [0, 0, 0, 1]):
        raise GeometryError("IJK-to-RAS must be a finite 4x4 affine matrix with last row (0, 0, 0, 1)")
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise GeometryError(f"IJK-to-RAS has a zero-length axis (spacing {tuple(spacing)}); the volume geometry is invalid")
    direction_ras = m[:3, :3] / spacing
    if not np.allclose(direction_ras.T @ direction_ras, np.eye(3), atol=ORTHONORMAL_ATOL):
        raise GeometryError(
            "IJK-to-RAS has sheared (non-orthogonal) axes; harden or resample the volume onto an orthogonal grid first"
        )
    direction_lps = LPS_TO_RAS @ direction_ras
    origin_lps = LPS_TO_RAS @ m[:3, 3]
    return (
        tuple(float(v) for v in spacing),  # type: ignore[return-value]
        tuple(float(v) for v in origin_lps),  # type: ignore[return-value]
        direction_lps,
    )


def volume_from_slicer_arrays(
    array_kji: np.ndarray,
    ijk_to_ras: Any,
    *,
    modality: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Volume:
    """A :class:`Volume` from Slicer's ``arrayFromVolume`` array ``(k, j, i)`` and IJK-to-RAS 4x4.

    The array is used as is (no copy, no flip): Slicer's ``(k, j, i)`` is MedSRLib's ``(z, y, x)``.
    """
    spacing, origin, direction = geometry_from_ijk_to_ras(ijk_to_ras)
    return Volume(
        array=array_kji,
        spacing=spacing,
        origin=origin,
        direction=direction,
        modality=modality,
        metadata=dict(metadata or {}),
    )


# --------------------------------------------------------------------------------------------------
# SimpleITK bridge (geometry copied field by field, no maths)


def volume_to_sitk(volume: Volume | SuperResolvedGrid, array: np.ndarray | None = None) -> "sitk.Image":
    """A SimpleITK image with the volume's voxels (or ``array``) and geometry (LPS, ITK order).

    Booleans are stored as uint8 and float16 as float32 (ITK has neither).
    """
    import SimpleITK as sitk

    data = np.asarray(volume.array if array is None else array)
    if data.dtype == np.bool_:
        data = data.astype(np.uint8)
    elif data.dtype == np.float16:
        data = data.astype(np.float32)
    image = sitk.GetImageFromArray(data, isVector=False)
    image.SetSpacing(tuple(float(s) for s in volume.spacing))
    image.SetOrigin(tuple(float(o) for o in volume.origin))
    image.SetDirection(tuple(float(v) for v in np.asarray(volume.direction, dtype=np.float64).ravel()))
    return image


def volume_from_sitk(image: "sitk.Image", **fields: Any) -> Volume:
    """A :class:`Volume` from a 3D scalar SimpleITK image (array copied, geometry as stored)."""
    import SimpleITK as sitk

    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise GeometryError(
            f"expected a 3D scalar image; got {image.GetDimension()}D with {image.GetNumberOfComponentsPerPixel()} components"
        )
    return Volume(
        array=sitk.GetArrayFromImage(image),
        spacing=image.GetSpacing(),
        origin=image.GetOrigin(),
        direction=np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3),
        **fields,
    )


# --------------------------------------------------------------------------------------------------
# 2D planes of a volume: DICOM image geometry and radiological display


@dataclass(frozen=True)
class PlaneGeometry:
    """The 2D images ``np.take(volume.array, n, axis=slice_axis)`` of a volume (LPS, mm).

    Attributes:
        slice_axis: numpy axis (0 = z, 1 = y, 2 = x) the images are orthogonal to.
        row_axis, col_axis: numpy axes of the image's rows and columns (the remaining two, in order).
        along_row: LPS unit vector of one step along a row (increasing column index) -- DICOM
            ImageOrientationPatient values 1-3.
        down_column: LPS unit vector of one step down a column (increasing row index) -- values 4-6.
        pixel_spacing: ``(row spacing, column spacing)`` mm = (between rows, between columns), DICOM order.
        slice_spacing: mm between consecutive images.
    """

    slice_axis: int
    row_axis: int
    col_axis: int
    along_row: np.ndarray
    down_column: np.ndarray
    pixel_spacing: tuple[float, float]
    slice_spacing: float

    @property
    def normal(self) -> np.ndarray:
        """LPS unit normal ``along_row x down_column`` (DICOM's slice normal)."""
        return np.cross(self.along_row, self.down_column)


def plane_geometry(volume: Volume | SuperResolvedGrid, slice_axis: int) -> PlaneGeometry:
    """:class:`PlaneGeometry` of the images of ``volume`` orthogonal to numpy axis ``slice_axis``."""
    if slice_axis not in (0, 1, 2):
        raise GeometryError(f"slice axis must be a numpy axis 0, 1 or 2 (z, y, x); got {slice_axis!r}")
    row_axis, col_axis = (a for a in range(3) if a != slice_axis)
    direction = np.asarray(volume.direction, dtype=np.float64).reshape(3, 3)
    return PlaneGeometry(
        slice_axis=slice_axis,
        row_axis=row_axis,
        col_axis=col_axis,
        along_row=direction[:, 2 - col_axis].copy(),
        down_column=direction[:, 2 - row_axis].copy(),
        pixel_spacing=(float(volume.spacing[2 - row_axis]), float(volume.spacing[2 - col_axis])),
        slice_spacing=float(volume.spacing[2 - slice_axis]),
    )


#: Radiological display, LPS unit vectors of (screen right, screen down) per plane: axial and coronal
#: show the patient's left on the right; axial has anterior up, coronal and sagittal superior up,
#: sagittal anterior on the left.
RADIOLOGICAL_SCREEN: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}


@dataclass(frozen=True)
class DisplayView:
    """How to turn a 2D image of :class:`PlaneGeometry` into its radiological display.

    Apply in this order: transpose (rows <-> columns) when ``transpose``, then reverse the rows when
    ``flip_rows`` and the columns when ``flip_cols``. ``plane`` is the nearest anatomical plane;
    ``spacing`` the displayed ``(row, column)`` spacing in mm (for the physical aspect ratio).
    """

    plane: str
    transpose: bool
    flip_rows: bool
    flip_cols: bool
    spacing: tuple[float, float]


def radiological_view(plane: PlaneGeometry) -> DisplayView:
    """The :class:`DisplayView` that shows ``plane`` in radiological convention (nearest plane wins
    for oblique images: the image is only transposed/flipped, never resampled)."""
    normal = np.abs(plane.normal)
    name = {0: "sagittal", 1: "coronal", 2: "axial"}[int(np.argmax(normal))]
    right, down = (np.asarray(v) for v in RADIOLOGICAL_SCREEN[name])
    cols_vec, rows_vec, spacing = plane.along_row, plane.down_column, plane.pixel_spacing
    transpose = abs(float(np.dot(rows_vec, right))) > abs(float(np.dot(cols_vec, right)))
    if transpose:
        cols_vec, rows_vec, spacing = rows_vec, cols_vec, (spacing[1], spacing[0])
    return DisplayView(
        plane=name,
        transpose=transpose,
        flip_rows=float(np.dot(rows_vec, down)) < 0,
        flip_cols=float(np.dot(cols_vec, right)) < 0,
        spacing=spacing,
    )
